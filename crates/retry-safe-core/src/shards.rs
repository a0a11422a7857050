//! [`Shards`]: the one sharded table of the workspace's in-memory state (rate-limit buckets,
//! concurrency slots, idempotency records).

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

/// A fixed number (a power of two) of independently locked values, each on cache lines of its
/// own, one chosen by a key's hash. Keys of different shards never contend.
///
/// The shard takes the hash's bits 32 and up: hashbrown places an entry by the low bits and tags
/// it with the top seven, so a shard index taken from neither leaves every shard's table the
/// full entropy of both.
///
/// ```
/// use retry_safe_core::Shards;
///
/// let shards: Shards<Vec<u64>> = Shards::new(16, Vec::new);
/// let hash = 0xdead_beef_0000_0001;
/// shards.of(hash).lock().push(hash);
/// assert_eq!(shards.iter().map(|s| s.lock().len()).sum::<usize>(), 1);
/// assert_eq!(shards.len(), 16);
/// ```
pub struct Shards<T> {
    shards: Box<[CachePadded<Mutex<T>>]>,
    mask: usize,
}

impl<T> Shards<T> {
    /// `count` shards (rounded up to a power of two, at least 1), each made by `make`.
    pub fn new(count: usize, mut make: impl FnMut() -> T) -> Self {
        let n = count.max(1).next_power_of_two();
        Self {
            shards: (0..n)
                .map(|_| CachePadded::new(Mutex::new(make())))
                .collect(),
            mask: n - 1,
        }
    }

    /// The shard of `hash`.
    #[inline]
    pub fn of(&self, hash: u64) -> &Mutex<T> {
        &self.shards[self.index_of(hash)]
    }

    /// The index of the shard of `hash`, in `0..len()`.
    #[inline]
    pub fn index_of(&self, hash: u64) -> usize {
        (hash >> 32) as usize & self.mask
    }

    /// Every shard, in index order.
    pub fn iter(&self) -> impl Iterator<Item = &Mutex<T>> {
        self.shards.iter().map(|s| &**s)
    }

    /// How many shards there are.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Always false: there is at least one shard.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl<T> std::fmt::Debug for Shards<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards").field("len", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Shards;
    use std::collections::{HashMap, HashSet};
    use std::hash::BuildHasher;

    /// The shard index must not take the bits hashbrown tags entries with (the top seven): the
    /// keys of one shard keep many distinct tags, so a probe compares few keys in vain.
    #[test]
    fn keys_of_one_shard_keep_distinct_table_tags() {
        let shards: Shards<()> = Shards::new(64, || ());
        let hasher = std::collections::hash_map::RandomState::new();
        let mut tags: HashMap<usize, HashSet<u64>> = HashMap::new();
        for key in 0..20_000u64 {
            let hash = hasher.hash_one(key);
            let shard = shards.of(hash) as *const _;
            let index = shards.index_of(hash);
            assert!(std::ptr::eq(shard, shards.iter().nth(index).unwrap()));
            tags.entry(index).or_default().insert(hash >> 57);
        }
        assert_eq!(tags.len(), shards.len(), "every shard is used");
        for (shard, tags) in tags {
            assert!(
                tags.len() >= 48,
                "shard {shard}: {} distinct tags",
                tags.len()
            );
        }
    }

    #[test]
    fn the_count_is_a_power_of_two_and_never_zero() {
        assert_eq!(Shards::new(0, || ()).len(), 1);
        assert_eq!(Shards::new(5, || ()).len(), 8);
    }
}
