//! The in-memory limiter: the cap under load, permits freed by cancellation and panics, bounded
//! waiting on tokio's paused clock, state that disappears with the last permit.

use ratelimit_concurrent::{ConcurrencyLimiter, ConfigError, Reason};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn a_zero_cap_is_a_typed_error() {
    assert_eq!(
        ConcurrencyLimiter::<u32>::new(0).unwrap_err(),
        ConfigError::ZeroCap
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_holds_under_a_thousand_concurrent_tasks() {
    let limiter = ConcurrencyLimiter::new(20)
        .unwrap()
        .queue(1000, Duration::from_secs(30));
    let now = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (limiter, now, peak) = (limiter.clone(), now.clone(), peak.clone());
            tokio::spawn(async move {
                let _permit = limiter.acquire(&"tenant").await.unwrap();
                // The "handler": count who is inside, hold the slot across a few yields.
                let inside = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(inside, Ordering::SeqCst);
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                now.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 20, "{peak} requests were in flight at once");
    assert!(peak >= 2, "the tasks did run concurrently (peak {peak})");
    assert_eq!(limiter.active_keys(), 0);
}

#[tokio::test]
async fn cancelled_and_panicking_requests_free_their_permit() {
    let limiter = ConcurrencyLimiter::new(1).unwrap();

    // Cancelled: the request future is dropped while it holds the permit.
    let held = {
        let limiter = limiter.clone();
        async move {
            let _permit = limiter.try_acquire(&7u64).unwrap();
            std::future::pending::<()>().await;
        }
    };
    let mut held = Box::pin(held);
    assert!(futures_poll_once(held.as_mut()).await);
    assert_eq!(limiter.in_flight(&7), 1);
    drop(held);
    assert_eq!(limiter.in_flight(&7), 0);

    // Panicking: the task unwinds with the permit.
    let task = {
        let limiter = limiter.clone();
        tokio::spawn(async move {
            let _permit = limiter.try_acquire(&7u64).unwrap();
            panic!("handler bug");
        })
    };
    assert!(task.await.unwrap_err().is_panic());
    assert_eq!(limiter.in_flight(&7), 0);
    assert!(limiter.try_acquire(&7).is_ok());
    assert_eq!(
        limiter.active_keys(),
        0,
        "the dropped permit took the key's state with it"
    );
}

/// Polls a future once; true if it is still pending.
async fn futures_poll_once<F: std::future::Future + Unpin>(mut f: F) -> bool {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::pin::Pin::new(&mut f).poll(cx).is_pending())
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_times_out_exactly_at_its_bound() {
    let limiter = ConcurrencyLimiter::new(1)
        .unwrap()
        .queue(4, Duration::from_millis(250))
        .retry_hint(Duration::from_secs(2));
    let _held = limiter.try_acquire(&"k").unwrap();
    let start = tokio::time::Instant::now();
    let refused = limiter.acquire(&"k").await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(refused.reason, Reason::TimedOut);
    assert_eq!((refused.in_flight, refused.max), (1, 1));
    assert_eq!(refused.retry_after, Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_gets_the_slot_as_soon_as_it_is_freed() {
    let limiter = ConcurrencyLimiter::new(1)
        .unwrap()
        .queue(4, Duration::from_secs(1));
    let held = limiter.try_acquire_owned(&"k").unwrap();
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
    });
    let start = tokio::time::Instant::now();
    let _permit = limiter.acquire(&"k").await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    releaser.await.unwrap();
    assert_eq!(limiter.in_flight(&"k"), 1);
}

#[tokio::test(start_paused = true)]
async fn the_queue_is_bounded_and_waiters_are_served_in_turn() {
    let limiter = ConcurrencyLimiter::new(1)
        .unwrap()
        .queue(2, Duration::from_secs(10));
    let held = limiter.try_acquire(&"k").unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let permit = limiter.acquire(&"k").await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(permit);
                tokio::time::Instant::now()
            })
        })
        .collect();
    tokio::task::yield_now().await; // both are queued now
                                    // A third would-be waiter is refused at once; so is a request that does not queue.
    let start = tokio::time::Instant::now();
    assert_eq!(
        limiter.acquire(&"k").await.unwrap_err().reason,
        Reason::QueueFull
    );
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(limiter.try_acquire(&"k").unwrap_err().reason, Reason::Full);
    drop(held);
    let mut done = Vec::new();
    for w in waiters {
        done.push(w.await.unwrap() - start);
    }
    done.sort();
    assert_eq!(
        done,
        [Duration::from_millis(10), Duration::from_millis(20)],
        "one after the other, each as soon as the slot was free"
    );
    assert_eq!(limiter.active_keys(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_gives_up_leaves_the_queue() {
    let limiter = ConcurrencyLimiter::new(1)
        .unwrap()
        .queue(1, Duration::from_secs(10));
    let held = limiter.try_acquire(&"k").unwrap();
    let quitter = {
        let limiter = limiter.clone();
        tokio::spawn(async move { limiter.acquire(&"k").await.map(|_| ()) })
    };
    tokio::task::yield_now().await;
    quitter.abort();
    assert!(quitter.await.unwrap_err().is_cancelled());
    // Its place in the queue is free again: a new waiter is accepted and served.
    let next = {
        let limiter = limiter.clone();
        tokio::spawn(async move { limiter.acquire(&"k").await.is_ok() })
    };
    tokio::task::yield_now().await;
    drop(held);
    assert!(next.await.unwrap());
    assert_eq!(limiter.active_keys(), 0);
}

#[test]
fn state_exists_only_for_keys_in_flight() {
    let limiter = ConcurrencyLimiter::new(3).unwrap();
    let permits: Vec<_> = (0..10_000u32)
        .map(|k| limiter.try_acquire(&k).unwrap())
        .collect();
    assert_eq!(limiter.active_keys(), 10_000);
    drop(permits);
    assert_eq!(limiter.active_keys(), 0);
}
