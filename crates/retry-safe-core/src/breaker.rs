//! A circuit breaker for a backend (Redis, PostgreSQL): while the backend is known down, calls
use crate::Clock;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

/// The breaker's state, as [`Breaker::state`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// The cool-down is over: the next call is a probe.
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    failures: u32,
    open_until: Option<u64>,
    probing: bool,
}

/// A circuit breaker; clones share one state.
///
/// ```
/// use retry_safe_core::{Breaker, BreakerState, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let breaker = Breaker::new(3, Duration::from_secs(1), clock.clone());
/// for _ in 0..3 {
///     let permit = breaker.try_acquire().unwrap();
///     breaker.record(permit, false); // the backend failed
/// }
/// assert_eq!(breaker.state(), BreakerState::Open);
/// assert!(breaker.try_acquire().is_none()); // refused at once
/// clock.advance(Duration::from_secs(1));
/// let probe = breaker.try_acquire().unwrap(); // one probe
/// assert!(breaker.try_acquire().is_none()); // and only one
/// breaker.record(probe, true);
/// assert_eq!(breaker.state(), BreakerState::Closed);
/// ```
///
/// A circuit breaker for a backend (Redis, PostgreSQL): while the backend is known down, calls
/// fail at once instead of each waiting out connection and reply timeouts.
///
/// - **Closed**: calls go through; `threshold` consecutive failures open the breaker.
/// - **Open**: calls are refused at once for `cool_down`.
/// - **Half-open**: after the cool-down one call at a time goes through as a probe: a success
///   closes the breaker, a failure opens it for another cool-down.
///
/// A probe whose call is dropped before it records an outcome (a client disconnect, a tower
/// timeout, a `select!`) counts as a failed probe: the breaker opens for another cool-down and
/// then lets the next probe through, so a lost probe can never wedge it open.
///
/// Pure logic over an injected [`Clock`]; the backend crates wrap each operation in
/// [`Breaker::try_acquire`] and [`Breaker::record`].
#[derive(Clone)]
pub struct Breaker {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    threshold: u32,
    cool_down: Duration,
    clock: Arc<dyn Clock>,
}

impl Shared {
    /// Settles one call: `probe` tells whether it was the half-open probe.
    fn settle(&self, probe: bool, ok: bool) {
        let mut inner = self.inner.lock();
        if probe {
            inner.probing = false;
        }
        if ok {
            inner.failures = 0;
            inner.open_until = None;
            return;
        }
        inner.failures = inner.failures.saturating_add(1);
        if probe || inner.failures >= self.threshold {
            let cool = crate::duration_to_nanos(self.cool_down);
            inner.open_until = Some(self.clock.now_nanos().saturating_add(cool));
        }
    }
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("state", &self.state())
            .field("threshold", &self.shared.threshold)
            .field("cool_down", &self.shared.cool_down)
            .finish()
    }
}

/// Leave to make one call, from [`Breaker::try_acquire`]; hand it back with the call's outcome.
///
/// Dropping the probe's permit without [`Breaker::record`] counts as a failed probe (the call's
/// fate is unknown): the breaker opens for one more cool-down instead of waiting forever for an
/// outcome that will not come. Dropping any other permit records nothing.
#[must_use = "record the outcome of the call with Breaker::record"]
pub struct BreakerPermit {
    /// The breaker, when this permit is its half-open probe.
    probe: Option<Arc<Shared>>,
}

impl std::fmt::Debug for BreakerPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerPermit")
            .field("probe", &self.probe.is_some())
            .finish()
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if let Some(shared) = self.probe.take() {
            shared.settle(true, false);
        }
    }
}

impl Breaker {
    /// A closed breaker that opens after `threshold` (at least 1) consecutive failures, for
    /// `cool_down`.
    pub fn new(threshold: u32, cool_down: Duration, clock: impl Clock) -> Self {
        Self::with_clock(threshold, cool_down, Arc::new(clock))
    }

    fn with_clock(threshold: u32, cool_down: Duration, clock: Arc<dyn Clock>) -> Self {
        let inner = Mutex::new(Inner {
            failures: 0,
            open_until: None,
            probing: false,
        });
        Self {
            shared: Arc::new(Shared {
                inner,
                threshold: threshold.max(1),
                cool_down,
                clock,
            }),
        }
    }

    /// The defaults of the backend crates: 3 consecutive failures open it for 1 s.
    pub fn for_backend() -> Self {
        Self::new(3, Duration::from_secs(1), crate::SystemClock::new())
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        let inner = self.shared.inner.lock();
        match inner.open_until {
            None => BreakerState::Closed,
            Some(until) if self.shared.clock.now_nanos() < until && !inner.probing => {
                BreakerState::Open
            }
            Some(_) if inner.probing => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Leave to call the backend, or `None` when the breaker is open (or a probe is already
    /// under way).
    pub fn try_acquire(&self) -> Option<BreakerPermit> {
        let mut inner = self.shared.inner.lock();
        match inner.open_until {
            None => Some(BreakerPermit { probe: None }),
            Some(until) if self.shared.clock.now_nanos() >= until && !inner.probing => {
                inner.probing = true;
                Some(BreakerPermit {
                    probe: Some(Arc::clone(&self.shared)),
                })
            }
            Some(_) => None,
        }
    }

    /// Records how the call of `permit` went: `ok` when the backend answered (whatever it
    /// answered), `false` when it could not be reached.
    pub fn record(&self, mut permit: BreakerPermit, ok: bool) {
        let probe = permit.probe.take().is_some();
        self.shared.settle(probe, ok);
    }

    /// Whether `self` and `other` are clones sharing one state.
    pub fn same_as(&self, other: &Breaker) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// A new, closed breaker with this one's threshold, cool-down and clock, and a state of its
    /// own: how the Redis runner gives each cluster node its breaker.
    pub fn fresh(&self) -> Breaker {
        let s = &self.shared;
        Self::with_clock(s.threshold, s.cool_down, Arc::clone(&s.clock))
    }
}

/// The error a guarded call reports while the breaker is open: the backend was not even asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BreakerOpen;

impl std::fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the backend is known to be down (circuit breaker open); not asked")
    }
}

impl std::error::Error for BreakerOpen {}
