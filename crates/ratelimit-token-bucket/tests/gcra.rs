//! The GCRA decisions on a hand-driven clock: every figure is exact.

use ratelimit_token_bucket::{
    CostExceedsBurst, Decision, DirectLimiter, KeyedLimiter, ManualClock, Quota, QuotaError,
    Quotas, MAX_WINDOW,
};
use std::sync::Arc;
use std::time::Duration;

const NS: Duration = Duration::from_nanos(1);

fn limited(d: Decision) -> ratelimit_token_bucket::Limited {
    match d {
        Decision::Limited(l) => l,
        Decision::Allowed(a) => panic!("expected a limited decision, got {a:?}"),
    }
}

fn allowed(d: Decision) -> ratelimit_token_bucket::Allowed {
    match d {
        Decision::Allowed(a) => a,
        Decision::Limited(l) => panic!("expected an allowed decision, got {l:?}"),
    }
}

#[test]
fn a_full_burst_passes_then_requests_pass_at_the_steady_rate() {
    let clock = ManualClock::at(Duration::from_secs(100));
    let limiter = KeyedLimiter::with_clock(
        Quotas::new([Quota::per_second(10).burst(5)]).unwrap(),
        clock.clone(),
    );
    for expected_remaining in (0..5).rev() {
        let a = allowed(limiter.check(&1u32, 1).unwrap());
        assert_eq!(a.remaining(), expected_remaining);
    }
    let l = limited(limiter.check(&1u32, 1).unwrap());
    assert_eq!(l.retry_after(), Duration::from_millis(100));
    assert_eq!(l.reset_after(), Duration::from_millis(500));

    // Then exactly one request per 100 ms, for ten seconds.
    let mut passed = 0;
    for _ in 0..100 {
        clock.advance(Duration::from_millis(100) - NS);
        assert_eq!(limited(limiter.check(&1u32, 1).unwrap()).retry_after(), NS);
        clock.advance(NS);
        let a = allowed(limiter.check(&1u32, 1).unwrap());
        assert_eq!(a.remaining(), 0);
        assert_eq!(a.reset_after(), Duration::from_millis(500));
        passed += 1;
        assert!(!limiter.check(&1u32, 1).unwrap().is_allowed());
    }
    assert_eq!(passed, 100);

    // Idle for the whole window: the bucket is full again, not fuller.
    clock.advance(Duration::from_secs(60));
    for _ in 0..5 {
        assert!(limiter.check(&1u32, 1).unwrap().is_allowed());
    }
    assert!(!limiter.check(&1u32, 1).unwrap().is_allowed());
}

#[test]
fn retry_after_is_exact_to_the_nanosecond_with_a_rounded_interval() {
    // 3 per second: the interval is 333 333 334 ns (rounded up: never more than 3 per second).
    let q = Quota::per_second(3);
    assert_eq!(q.interval(), Duration::from_nanos(333_333_334));
    let clock = ManualClock::at(Duration::from_secs(1));
    let limiter = DirectLimiter::with_clock(Quotas::new([q]).unwrap(), clock.clone());
    for _ in 0..3 {
        assert!(limiter.check(1).unwrap().is_allowed());
    }
    let l = limited(limiter.check(1).unwrap());
    assert_eq!(l.retry_after(), Duration::from_nanos(333_333_334));
    clock.advance(l.retry_after() - NS);
    assert_eq!(limited(limiter.check(1).unwrap()).retry_after(), NS);
    clock.advance(NS);
    assert!(limiter.check(1).unwrap().is_allowed());
}

#[test]
fn weighted_requests_take_their_cost_and_wait_for_it() {
    let clock = ManualClock::new();
    let limiter = KeyedLimiter::with_clock(
        Quotas::new([Quota::per_second(10)]).unwrap(), // burst 10, 100 ms per unit
        clock.clone(),
    );
    assert_eq!(allowed(limiter.check(&"k", 4).unwrap()).remaining(), 6);
    assert_eq!(allowed(limiter.check(&"k", 4).unwrap()).remaining(), 2);
    // 4 units with 2 left: 2 more units must drip in first.
    let l = limited(limiter.check(&"k", 4).unwrap());
    assert_eq!(l.retry_after(), Duration::from_millis(200));
    // The denied request took nothing: the 2 units left still pass.
    assert_eq!(allowed(limiter.check(&"k", 2).unwrap()).remaining(), 0);
    // A zero-cost request observes without counting.
    assert_eq!(limiter.check(&"k", 0).unwrap().remaining(), 0);
    clock.advance(Duration::from_millis(400));
    assert_eq!(allowed(limiter.check(&"k", 4).unwrap()).remaining(), 0);
}

#[test]
fn a_cost_above_the_burst_is_an_error_not_an_eternal_limit() {
    let limiter = KeyedLimiter::with_clock(
        Quotas::new([
            Quota::per_second(100).burst(50),
            Quota::per_minute(1000).burst(20),
        ])
        .unwrap(),
        ManualClock::new(),
    );
    let e = limiter.check(&"k", 21).unwrap_err();
    assert_eq!(
        e,
        CostExceedsBurst {
            cost: 21,
            burst: 20,
            quota: 1
        }
    );
    assert!(e.to_string().contains("never pass"), "{e}");
    // A cost equal to the smallest burst passes on a full bucket.
    assert_eq!(allowed(limiter.check(&"k", 20).unwrap()).remaining(), 0);
}

#[test]
fn several_quotas_are_all_or_nothing() {
    let quotas = Quotas::new([
        Quota::per_second(1).burst(3).named("per-second"), // T = 1 s, τ = 3 s
        Quota::per_minute(2).named("per-minute"),          // T = 30 s, τ = 60 s
    ])
    .unwrap();
    let now = 1_000_000_000_000;
    let mut tats = [0u64; 2];
    let a = allowed(quotas.decide(&mut tats, now, 1).unwrap());
    // The per-minute quota is the tighter one: 1 left there, 2 per second.
    assert_eq!((a.quota(), a.remaining()), (1, 1));
    allowed(quotas.decide(&mut tats, now, 1).unwrap());
    let before = tats;
    let l = limited(quotas.decide(&mut tats, now, 1).unwrap());
    assert_eq!(l.quota(), 1, "the per-minute quota denies");
    assert_eq!(l.retry_after(), Duration::from_secs(30));
    assert_eq!(
        tats, before,
        "a denied request moves no quota, not even those that allowed it"
    );

    // Both quotas deny: the answer is the longer wait, so a retry then passes both.
    let quotas = Quotas::new([Quota::per_second(1), Quota::per_minute(1)]).unwrap();
    let mut tats = [0u64; 2];
    allowed(quotas.decide(&mut tats, now, 1).unwrap());
    let l = limited(quotas.decide(&mut tats, now, 1).unwrap());
    assert_eq!((l.quota(), l.retry_after()), (1, Duration::from_secs(60)));
    assert!(quotas
        .decide(&mut tats, now + 60_000_000_000, 1)
        .unwrap()
        .is_allowed());
}

#[test]
fn a_clock_stepping_backwards_limits_instead_of_failing() {
    let clock = ManualClock::at(Duration::from_secs(10));
    let limiter =
        DirectLimiter::with_clock(Quotas::new([Quota::per_second(1)]).unwrap(), clock.clone());
    assert!(limiter.check(1).unwrap().is_allowed());
    clock.set(Duration::from_secs(5));
    // The TAT (11 s) is 6 s ahead of the clock: the bucket counts as empty until 11 s.
    let l = limited(limiter.check(1).unwrap());
    assert_eq!(l.retry_after(), Duration::from_secs(6));
}

#[test]
fn invalid_quotas_are_typed_errors() {
    assert_eq!(
        Quotas::new([Quota::per_second(0)]),
        Err(QuotaError::ZeroRate)
    );
    assert_eq!(
        Quotas::new([Quota::new(1, Duration::ZERO)]),
        Err(QuotaError::ZeroPeriod)
    );
    assert_eq!(
        Quotas::new([Quota::per_second(1).burst(0)]),
        Err(QuotaError::ZeroBurst)
    );
    assert!(matches!(
        Quotas::new([Quota::per_day(1).burst(60)]),
        Err(QuotaError::WindowTooLong { .. })
    ));
    assert!(Quotas::new([Quota::new(1, MAX_WINDOW)]).is_ok());
    assert_eq!(Quotas::new([]), Err(QuotaError::Empty));
    assert_eq!(
        Quotas::new([Quota::per_second(1); 5]),
        Err(QuotaError::TooMany(5))
    );
    assert_eq!(
        Quotas::new([
            Quota::per_second(1).named("a"),
            Quota::per_hour(9).named("a")
        ]),
        Err(QuotaError::DuplicateName("a".into()))
    );
    assert_eq!(
        Quotas::new([Quota::per_second(1).named("a b")]),
        Err(QuotaError::InvalidName("a b"))
    );
}

#[test]
fn the_policy_header_describes_each_bucket() {
    let quotas = Quotas::new([Quota::per_second(10).burst(20), Quota::per_hour(1000)]).unwrap();
    assert_eq!(
        quotas.policy_header(),
        "\"q1\";q=20;w=2, \"q2\";q=1000;w=3600"
    );
    assert_eq!(quotas.name(0), "q1");
    let one = Quotas::new([Quota::per_minute(100).burst(10)]).unwrap();
    assert_eq!(one.policy_header(), "\"default\";q=10;w=6");
}

#[test]
fn a_direct_limiter_counts_each_unit_once_under_contention() {
    for quotas in [
        Quotas::new([Quota::per_hour(1000)]).unwrap(),
        Quotas::new([Quota::per_hour(1000), Quota::per_day(5000)]).unwrap(),
    ] {
        let limiter = Arc::new(DirectLimiter::with_clock(quotas, ManualClock::new()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let limiter = limiter.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| limiter.check(1).unwrap().is_allowed())
                        .count()
                })
            })
            .collect();
        let passed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(passed, 1000, "exactly the burst passes, never more");
    }
}

#[test]
fn a_keyed_limiter_counts_each_unit_once_under_contention() {
    let limiter = Arc::new(KeyedLimiter::with_clock(
        Quotas::new([Quota::per_hour(500)]).unwrap(),
        ManualClock::new(),
    ));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let limiter = limiter.clone();
            std::thread::spawn(move || {
                (0..4000u32)
                    .filter(|i| limiter.check(&(i % 4), 1).unwrap().is_allowed())
                    .count()
            })
        })
        .collect();
    let passed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(
        passed,
        4 * 500,
        "each of the 4 keys passes exactly its burst"
    );
}

#[test]
fn idle_keys_are_dropped_and_active_ones_kept() {
    let clock = ManualClock::new();
    let limiter =
        KeyedLimiter::with_clock(Quotas::new([Quota::per_second(1)]).unwrap(), clock.clone());
    for k in 0..10_000u32 {
        limiter.check(&k, 1).unwrap();
    }
    assert_eq!(limiter.len(), 10_000);
    clock.advance(Duration::from_millis(500));
    assert!(!limiter.check(&7, 1).unwrap().is_allowed());
    limiter.retain_recent();
    assert_eq!(
        limiter.len(),
        10_000,
        "no key is idle before its bucket is full"
    );
    clock.advance(Duration::from_millis(500));
    assert!(limiter.check(&7, 1).unwrap().is_allowed()); // 7 is now busy until t = 2 s
    limiter.retain_recent();
    assert_eq!(limiter.len(), 1, "only the key still refilling is kept");
    // A dropped key starts full, exactly as if it had been kept.
    assert!(limiter.check(&8, 1).unwrap().is_allowed());
    assert!(!limiter.check(&8, 1).unwrap().is_allowed());
}

#[test]
fn shards_sweep_idle_keys_as_they_grow() {
    let clock = ManualClock::new();
    let limiter = KeyedLimiter::with_shards(
        Quotas::new([Quota::per_second(1)]).unwrap(),
        clock.clone(),
        1,
    );
    // A stream of new keys, each idle after one second: the map never holds much more than the
    // keys of the last second (twice that, at the sweep threshold).
    for second in 0..20u32 {
        for k in 0..1000u32 {
            limiter.check(&(second * 1000 + k), 1).unwrap();
        }
        clock.advance(Duration::from_secs(1));
        assert!(
            limiter.len() <= 2048,
            "second {second}: {} keys",
            limiter.len()
        );
    }
}
