//! The adaptive limit converges near a simulated service's concurrency knee (deterministic clock).

use ratelimit_concurrent::ManualClock;
use ratelimit_concurrent::{ConcurrencyLimiter, Vegas};
use std::time::Duration;

/// A service that answers in 20 ms with up to `knee` requests at once; past the knee, requests
/// queue and latency grows in proportion.
fn latency(in_flight: u32, knee: u32) -> Duration {
    Duration::from_millis(20) * in_flight.max(knee) / knee
}

/// Runs `vegas` in a closed loop against the service for `n` samples; returns the limits.
fn run(vegas: &mut Vegas, knee: u32, n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| {
            let c = vegas.limit();
            vegas.sample(latency(c, knee), c)
        })
        .collect()
}

/// Asserts that 95 % of `limits` lie in `[knee, 1.5 × knee]`.
fn assert_settled(limits: &[u32], knee: u32, what: &str) {
    let inside = limits
        .iter()
        .filter(|&&l| (knee..=knee + knee / 2).contains(&l))
        .count();
    assert!(
        inside * 100 >= limits.len() * 95,
        "{what}: only {inside} of {} samples near the knee {knee}: {:?}",
        limits.len(),
        &limits[limits.len() - 20..]
    );
}

#[test]
fn vegas_climbs_to_just_above_the_knee_and_stays() {
    for (start, knee) in [(5, 40), (10, 150), (1, 20)] {
        let mut vegas = Vegas::new(start, 1, 2000);
        let limits = run(&mut vegas, knee, 20_000);
        assert_settled(&limits[10_000..], knee, &format!("from {start}"));
        let tail = &limits[15_000..];
        let spread = tail.iter().max().unwrap() - tail.iter().min().unwrap();
        assert!(spread <= knee / 4, "from {start}: oscillates by {spread}");
    }
}

#[test]
fn from_above_the_knee_probing_finds_the_unloaded_latency() {
    // Started far above the knee, the first latency seen is already a loaded one; probes (halving
    // the limit to measure again) find the real baseline, after which the limit comes down.
    let knee = 40;
    let mut vegas = Vegas::new(400, 1, 2000).probe_every(5000);
    let limits = run(&mut vegas, knee, 60_001);
    assert_settled(&limits[30_000..], knee, "from 400 with probes");
    assert_eq!(vegas.rtt_noload(), Some(Duration::from_millis(20)));

    // Without probes it never learns better: the documented cost of turning them off.
    let mut blind = Vegas::new(400, 1, 2000);
    let limits = run(&mut blind, knee, 30_000);
    assert!(*limits.last().unwrap() > 2 * knee);
}

#[test]
fn samples_of_an_idle_service_do_not_move_the_limit() {
    let mut vegas = Vegas::new(100, 1, 1000);
    for _ in 0..100 {
        vegas.sample(Duration::from_millis(20), 10); // 10 in flight of a limit of 100
    }
    assert_eq!(vegas.limit(), 100);
}

#[test]
fn the_limiter_adapts_its_cap_from_the_latency_of_its_permits() {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    let clock = ManualClock::new();
    let knee = 30;
    let limiter = ConcurrencyLimiter::new(1)
        .unwrap()
        .adaptive(Vegas::new(4, 1, 500), clock.clone());
    assert_eq!(limiter.max_in_flight(), 4);
    // A closed loop with always more work than the cap: every time a request completes, the
    // client starts as many as the cap allows; each takes the service's latency for the number in
    // flight when it started. Events run in completion order on the fake clock.
    let mut permits = Vec::new();
    let mut done = BinaryHeap::new();
    let mut caps = Vec::new();
    for _ in 0..40_000 {
        while let Ok(p) = limiter.try_acquire(&"svc") {
            permits.push(Some(p));
            let in_flight = limiter.in_flight(&"svc");
            let at = clock_nanos(&clock) + latency(in_flight, knee).as_nanos() as u64;
            done.push(Reverse((at, permits.len() - 1)));
        }
        let Reverse((at, i)) = done.pop().unwrap();
        clock.set(Duration::from_nanos(at));
        permits[i] = None; // completes: the permit reports its latency
        caps.push(limiter.max_in_flight());
    }
    assert_settled(&caps[20_000..], knee, "the limiter's cap");
}

fn clock_nanos(clock: &ManualClock) -> u64 {
    ratelimit_concurrent::Clock::now_nanos(clock)
}
