use retry_safe_core::{Clock, ManualClock, SystemClock, TokioClock};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn manual_clock_clones_share_time_and_wall_moves_separately() {
    let clock = ManualClock::at_unix_secs(1_700_000_000);
    let other = clock.clone();
    clock.advance(Duration::from_nanos(1_500_000_001));
    assert_eq!(other.now_nanos(), 1_500_000_001);
    assert_eq!(other.unix_time(), Duration::new(1_700_000_001, 500_000_001));

    // Setting monotonic time leaves wall time alone, and may go back.
    clock.set(Duration::from_secs(1));
    assert_eq!(other.now(), Duration::from_secs(1));
    assert_eq!(other.unix_secs(), 1_700_000_001);

    // Stepping the wall clock leaves monotonic time alone.
    clock.set_unix_secs(1_600_000_000);
    assert_eq!(other.unix_secs(), 1_600_000_000);
    assert_eq!(other.now(), Duration::from_secs(1));
}

#[test]
fn manual_clock_saturates_instead_of_wrapping() {
    let clock = ManualClock::at(Duration::from_nanos(u64::MAX - 1));
    clock.advance(Duration::from_secs(10));
    assert_eq!(clock.now_nanos(), u64::MAX);
    clock.set_unix_secs(u64::MAX);
    assert_eq!(clock.unix_time(), Duration::from_nanos(u64::MAX));
}

#[test]
fn clocks_work_behind_arc_and_box() {
    let clock = ManualClock::at(Duration::from_secs(7));
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let boxed: Box<dyn Clock> = Box::new(clock);
    assert_eq!(shared.now(), Duration::from_secs(7));
    assert_eq!(boxed.now(), Duration::from_secs(7));
}

#[test]
fn system_clock_is_monotonic_and_near_system_time() {
    let clock = SystemClock::new();
    let mut last = clock.now_nanos();
    for _ in 0..10_000 {
        let now = clock.now_nanos();
        assert!(now >= last, "monotonic time went back: {last} -> {now}");
        last = now;
    }
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let diff = wall.abs_diff(clock.unix_time());
    assert!(diff < Duration::from_secs(1), "wall time off by {diff:?}");
}

#[tokio::test(start_paused = true)]
async fn tokio_clock_follows_paused_time() {
    let clock = TokioClock::new();
    let wall0 = clock.unix_time();
    assert_eq!(clock.now_nanos(), 0);
    tokio::time::advance(Duration::from_millis(250)).await;
    assert_eq!(clock.now(), Duration::from_millis(250));
    assert_eq!(clock.unix_time() - wall0, Duration::from_millis(250));
    tokio::time::sleep(Duration::from_secs(30)).await; // auto-advanced, no real wait
    assert_eq!(clock.now(), Duration::from_millis(30_250));
}
