//! [`stable_hash`]: the one key hash limiters share across a fleet.

/// FNV-1a over `parts` as if concatenated: a 64-bit hash that is the same on every server and
/// every release (unlike `std`'s seeded hasher), so a fleet sharing Redis shares the keys it makes,
/// and that costs no allocation.
///
/// ```
/// use retry_safe_core::stable_hash;
///
/// assert_eq!(stable_hash(&[b"bearer:", b"tok"]), stable_hash(&[b"bearer:tok"]));
/// assert_ne!(stable_hash(&[b"a"]), stable_hash(&[b"b"]));
/// assert_eq!(stable_hash(&[]), 0xcbf2_9ce4_8422_2325); // FNV-1a's offset basis
/// ```
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    parts
        .iter()
        .flat_map(|p| p.iter())
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}
