//! Trace and span ids, and the fast random source that makes them.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, Hasher};

/// A 16-byte trace id; never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub(crate) [u8; 16]);

/// An 8-byte span (parent) id; never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub(crate) [u8; 8]);

impl TraceId {
    /// A random trace id (its right-most 7 bytes random, as the Level 2 `random` flag promises).
    pub fn random() -> Self {
        let (a, b) = (next_u64(), next_u64());
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&a.to_be_bytes());
        bytes[8..].copy_from_slice(&(b | 1).to_be_bytes()); // never all zeros
        Self(bytes)
    }

    /// The id from its bytes, unless they are all zeros (an invalid id).
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        (bytes != [0; 16]).then_some(Self(bytes))
    }

    /// The id's bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl SpanId {
    /// A random span id.
    pub fn random() -> Self {
        Self((next_u64() | 1).to_be_bytes())
    }

    /// The id from its bytes, unless they are all zeros (an invalid id).
    pub fn from_bytes(bytes: [u8; 8]) -> Option<Self> {
        (bytes != [0; 8]).then_some(Self(bytes))
    }

    /// The id's bytes.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }
}

/// Lowercase hex of `bytes` into `out` (exactly twice as long).
pub(crate) fn write_hex(out: &mut [u8], bytes: &[u8]) {
    if hex::encode_to_slice(bytes, out).is_err() {
        unreachable!("callers size `out` as twice `bytes`");
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0; 32];
        write_hex(&mut out, &self.0);
        f.write_str(std::str::from_utf8(&out).expect("hex is ASCII"))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0; 16];
        write_hex(&mut out, &self.0);
        f.write_str(std::str::from_utf8(&out).expect("hex is ASCII"))
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

/// A per-thread seed from the standard library's randomly keyed hasher.
fn seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}

/// wyrand: a small, fast, statistically good generator (not for secrets: ids only need to be
/// unique and unpredictable enough not to collide).
pub(crate) fn next_u64() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}
