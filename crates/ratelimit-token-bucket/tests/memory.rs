//! Memory of the keyed limiter under a million distinct keys, measured by a counting allocator.

use ratelimit_token_bucket::{KeyedLimiter, ManualClock, Quota, Quotas};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

#[test]
fn a_million_idle_keys_give_their_memory_back() {
    let clock = ManualClock::new();
    let limiter = KeyedLimiter::with_clock(
        Quotas::new([Quota::per_second(10).burst(20)]).unwrap(),
        clock.clone(),
    );
    let empty = live();
    for ip in 0..1_000_000u64 {
        assert!(limiter.check(&ip, 1).unwrap().is_allowed());
    }
    let full = live() - empty;
    assert_eq!(limiter.len(), 1_000_000);
    // Each key holds its u64 plus four TATs: 40 bytes and the table's overhead.
    assert!(full >= 40_000_000, "1M keys take {full} bytes?");
    assert!(full <= 120_000_000, "1M keys take {full} bytes");

    // 2 s later every bucket (100 ms per unit) is full again: the keys are idle.
    clock.advance(Duration::from_secs(2));
    let busy = [7u64, 700_000];
    for key in busy {
        assert!(limiter.check(&key, 1).unwrap().is_allowed());
    }
    limiter.retain_recent();
    assert_eq!(limiter.len(), 2);
    let after = live() - empty;
    eprintln!("1M keys: {full} bytes; after retain_recent: {after} bytes");
    assert!(
        after < full / 100,
        "memory came back down from {full} to {after} bytes only"
    );
    // The two busy keys kept their state: 19 units left each.
    assert_eq!(limiter.check(&7, 1).unwrap().remaining(), 18);
}
