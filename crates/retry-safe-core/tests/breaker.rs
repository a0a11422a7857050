use retry_safe_core::{Breaker, BreakerState, ManualClock};
use std::time::Duration;

fn fail(b: &Breaker) {
    let p = b.try_acquire().expect("allowed");
    b.record(p, false);
}

#[test]
fn opens_after_consecutive_failures_only() {
    let clock = ManualClock::new();
    let b = Breaker::new(3, Duration::from_millis(500), clock.clone());
    fail(&b);
    fail(&b);
    let p = b.try_acquire().unwrap();
    b.record(p, true); // a success resets the count
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
    assert!(b.try_acquire().is_none());
    clock.advance(Duration::from_millis(499));
    assert!(b.try_acquire().is_none());
}

#[test]
fn one_probe_at_a_time_and_a_failed_probe_opens_again() {
    let clock = ManualClock::new();
    let b = Breaker::new(1, Duration::from_secs(1), clock.clone());
    fail(&b);
    clock.advance(Duration::from_secs(1));
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let probe = b.try_acquire().unwrap();
    assert!(
        b.try_acquire().is_none(),
        "a second probe while one is under way"
    );
    b.record(probe, false);
    assert_eq!(b.state(), BreakerState::Open);
    clock.advance(Duration::from_millis(999));
    assert!(b.try_acquire().is_none());
    clock.advance(Duration::from_millis(1));
    let probe = b.try_acquire().unwrap();
    b.record(probe, true);
    assert_eq!(b.state(), BreakerState::Closed);
    // Closed again: calls go through, many at once.
    let (a, c) = (b.try_acquire().unwrap(), b.try_acquire().unwrap());
    b.record(a, true);
    b.record(c, true);
}

#[test]
fn clones_share_the_state() {
    let clock = ManualClock::new();
    let b = Breaker::new(2, Duration::from_secs(1), clock);
    let other = b.clone();
    fail(&b);
    fail(&other);
    assert_eq!(b.state(), BreakerState::Open);
}

/// The probe's call is dropped before it records (a client disconnect, a timeout, a `select!`):
/// the breaker must not stay open for good.
#[test]
fn a_dropped_probe_counts_as_a_failed_probe_and_lets_the_next_one_through() {
    let clock = ManualClock::new();
    let b = Breaker::new(1, Duration::from_secs(1), clock.clone());
    fail(&b);
    clock.advance(Duration::from_secs(1));
    let probe = b.try_acquire().expect("the cool-down is over: a probe");
    drop(probe);
    assert_eq!(
        b.state(),
        BreakerState::Open,
        "a lost probe is a failed one"
    );
    assert!(b.try_acquire().is_none(), "opened for another cool-down");
    clock.advance(Duration::from_secs(1));
    let probe = b.try_acquire().expect("the next probe goes through");
    b.record(probe, true);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn a_dropped_permit_of_a_closed_breaker_records_nothing() {
    let clock = ManualClock::new();
    let b = Breaker::new(1, Duration::from_secs(1), clock);
    for _ in 0..10 {
        drop(b.try_acquire().unwrap());
    }
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn a_fresh_breaker_has_the_settings_and_a_state_of_its_own() {
    let clock = ManualClock::new();
    let b = Breaker::new(2, Duration::from_secs(1), clock.clone());
    let other = b.fresh();
    assert!(!other.same_as(&b) && b.same_as(&b.clone()));
    fail(&other);
    fail(&other);
    assert_eq!(other.state(), BreakerState::Open);
    assert_eq!(b.state(), BreakerState::Closed);
    clock.advance(Duration::from_secs(1));
    assert_eq!(other.state(), BreakerState::HalfOpen, "the same clock");
}
