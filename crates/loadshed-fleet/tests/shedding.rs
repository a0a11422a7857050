//! Deterministic tests of reserved capacity, escalation, recovery and stability.

use loadshed_fleet::ManualClock;
use loadshed_fleet::{shed_probability, Step};
use loadshed_fleet::{
    Class, Classify, ConfigError, Controller, ControllerConfig, DefaultClassifier, Shares,
    ShedReason, Shedder,
};
use std::time::Duration;

#[test]
fn with_capacity_10_and_a_20_percent_reserve_the_9th_non_critical_request_is_shed() {
    let shedder: Shedder<ManualClock> =
        Shedder::with_shares(10, Shares([80, 80, 80, 100])).unwrap();
    let held: Vec<_> = [Class::Write, Class::Read, Class::TestMode, Class::Write]
        .iter()
        .cycle()
        .take(8)
        .map(|&c| shedder.admit(c).unwrap())
        .collect();
    for class in [Class::TestMode, Class::Read, Class::Write] {
        let shed = shedder.admit(class).unwrap_err();
        assert_eq!((shed.class, shed.reason), (class, ShedReason::Capacity));
    }
    let c1 = shedder.admit(Class::Critical).unwrap();
    let c2 = shedder.admit(Class::Critical).unwrap();
    assert!(
        shedder.admit(Class::Critical).is_err(),
        "10 of 10 slots taken"
    );
    drop(held);
    let s = shedder.snapshot();
    assert_eq!(s.in_flight, 2);
    assert_eq!(s.admitted, [2, 2, 4, 2]);
    assert_eq!(s.shed_capacity, [1, 1, 1, 1]);
    drop((c1, c2));
}

#[test]
fn default_shares_step_the_reserve_by_class() {
    let shedder = Shedder::new(10).unwrap();
    let limits = Class::ALL.map(|c| shedder.limit(c));
    assert_eq!(limits, [5, 7, 8, 10]);
    assert_eq!(Shedder::new(0).unwrap_err(), ConfigError::ZeroCapacity);
    assert_eq!(
        Shedder::<ManualClock>::with_shares(10, Shares([80, 70, 80, 100])).unwrap_err(),
        ConfigError::InvalidShares
    );
    assert_eq!(
        Shedder::<ManualClock>::with_shares(10, Shares([50, 70, 80, 90])).unwrap_err(),
        ConfigError::InvalidShares
    );
}

/// One window of requests of `latency` through the shedder (one admitted critical request).
fn window(shedder: &Shedder<ManualClock>, clock: &ManualClock, latency: Duration) {
    let guard = shedder.admit(Class::Critical).unwrap();
    clock.advance(latency);
    drop(guard);
    clock.advance(Duration::from_millis(100) - latency);
    shedder.tick();
}

/// The share of 2000 probe requests of `class` that are shed. Admitted probes stay in flight
/// (forgotten, in a shedder of a million slots) so they add no latency samples to the window.
fn shed_share(shedder: &Shedder<ManualClock>, class: Class) -> f64 {
    let n = 2000;
    let shed = (0..n)
        .filter(|_| match shedder.admit(class) {
            Ok(guard) => {
                std::mem::forget(guard);
                false
            }
            Err(_) => true,
        })
        .count();
    shed as f64 / n as f64
}

#[test]
fn sustained_overload_sheds_test_mode_then_reads_then_writes_and_never_critical() {
    let clock = ManualClock::new();
    let shedder = Shedder::with_shares(1_000_000, Shares::default())
        .unwrap()
        .controller(ControllerConfig::default(), clock.clone())
        .seed(7);
    let mut fully_shed_at = Vec::new();
    for w in 1..=40 {
        window(&shedder, &clock, Duration::from_millis(90)); // over the 50 ms target
        let shares: Vec<f64> = Class::ALL
            .iter()
            .map(|&c| shed_share(&shedder, c))
            .collect();
        assert_eq!(shares[3], 0.0, "critical is never shed by the controller");
        // Never a higher class shed while a lower one still passes.
        for i in 1..3 {
            assert!(shares[i] <= shares[i - 1], "window {w}: {shares:?}");
        }
        for (i, s) in shares.iter().enumerate().take(3) {
            if *s == 1.0 && fully_shed_at.len() == i {
                fully_shed_at.push(w);
            }
        }
        if w == 5 {
            // Half-way through the first class: about half of the test-mode traffic goes.
            assert!((0.4..0.6).contains(&shares[0]), "{shares:?}");
            assert_eq!(shares[1], 0.0);
        }
    }
    assert_eq!(
        fully_shed_at,
        [10, 20, 30],
        "one class every second of overload"
    );
    let s = shedder.snapshot();
    assert!(s.shed_overload[0] > s.shed_overload[1] && s.shed_overload[1] > s.shed_overload[2]);
}

#[test]
fn recovery_takes_the_slow_path_class_by_class() {
    let mut c = Controller::new(ControllerConfig::default());
    for _ in 0..30 {
        assert_eq!(c.end_window(10, Duration::from_millis(90)), Step::Up);
    }
    assert_eq!(c.pressure(), 3.0);
    let healthy = Duration::from_millis(20);
    let mut back = [0usize; 3]; // windows until each class is fully admitted again
    for w in 1..=200 {
        let step = c.end_window(10, healthy);
        for (i, slot) in back.iter_mut().enumerate() {
            if *slot == 0 && shed_probability(c.pressure(), i) == 0.0 {
                *slot = w;
            }
        }
        if c.pressure() == 0.0 {
            assert_eq!(step, Step::Down);
            assert_eq!(w, 150, "3.0 / 0.02 per window = 150 windows = 15 s");
            break;
        }
    }
    assert_eq!(
        back,
        [150, 100, 50],
        "writes come back first, test-mode last"
    );
    assert_eq!(
        c.end_window(10, healthy),
        Step::Hold,
        "nothing left to recover"
    );
}

#[test]
fn latency_in_the_band_or_no_traffic_holds_the_pressure() {
    let mut c = Controller::new(ControllerConfig::default());
    c.end_window(1, Duration::from_millis(60));
    assert_eq!(c.end_window(5, Duration::from_millis(45)), Step::Hold); // 0.8 × 50 ≤ 45 ≤ 50
    assert_eq!(c.end_window(0, Duration::ZERO), Step::Hold);
    assert_eq!(c.pressure(), 0.1);
}

#[test]
fn a_constant_overload_settles_without_oscillating() {
    // A service whose mean latency is proportional to the traffic it admits: 2.5× the target
    // with everything admitted (classes equally frequent).
    let mut c = Controller::new(ControllerConfig::default());
    let latency = |p: f64| {
        let admitted: f64 = (0..4).map(|i| 1.0 - shed_probability(p, i)).sum::<f64>() / 4.0;
        Duration::from_secs_f64(0.050 * 2.5 * admitted)
    };
    let steps: Vec<Step> = (0..2000)
        .map(|_| c.end_window(100, latency(c.pressure())))
        .collect();
    let settled = c.pressure();
    assert!(settled > 1.0 && settled < 3.0, "settled at {settled}");
    let tail = &steps[1000..];
    assert!(
        tail.iter().all(|&s| s == Step::Hold),
        "the pressure still moves after 100 s: {:?}",
        &tail[..20]
    );
    let l = latency(settled).as_secs_f64();
    assert!(
        (0.040..=0.050).contains(&l),
        "latency held in the band: {l}"
    );
}

#[test]
fn the_default_classifier() {
    let c = DefaultClassifier::new()
        .critical(http::Method::POST, "/v1/payments/")
        .critical_path("/healthz");
    let parts = |m: &str, path: &str, headers: &[(&str, &str)]| {
        let mut b = http::Request::builder().method(m).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    };
    assert_eq!(c.classify(&parts("GET", "/v1/orders", &[])), Class::Read);
    assert_eq!(c.classify(&parts("HEAD", "/v1/orders", &[])), Class::Read);
    assert_eq!(
        c.classify(&parts("DELETE", "/v1/orders/1", &[])),
        Class::Write
    );
    assert_eq!(
        c.classify(&parts("POST", "/v1/payments/pi_1/capture", &[])),
        Class::Critical
    );
    assert_eq!(
        c.classify(&parts("GET", "/v1/payments/pi_1", &[])),
        Class::Read
    );
    assert_eq!(c.classify(&parts("GET", "/healthz", &[])), Class::Critical);
    assert_eq!(
        c.classify(&parts("POST", "/v1/orders", &[("x-test-mode", "true")])),
        Class::TestMode
    );
    assert_eq!(
        c.classify(&parts(
            "POST",
            "/v1/orders",
            &[("authorization", "Bearer sk_test_123")]
        )),
        Class::TestMode
    );
    assert_eq!(
        c.classify(&parts(
            "POST",
            "/v1/orders",
            &[("authorization", "Bearer sk_live_123")]
        )),
        Class::Write
    );
    // A closure is a classifier too.
    let all_critical = |_: &http::request::Parts| Class::Critical;
    assert_eq!(
        all_critical.classify(&parts("GET", "/", &[])),
        Class::Critical
    );
}
