//! Retries that cannot amplify an outage: a retry budget shared by every clone of a client, and
//! Google SRE's adaptive client-side throttling.

use parking_lot::Mutex;
use retry_safe_core::Clock;
use std::sync::Arc;
use std::time::Duration;

/// Two counters per one-second slot over a sliding window.
#[derive(Debug)]
struct Window {
    slots: Vec<(u64, u64, u64)>, // (second, a, b)
}

impl Window {
    fn new(secs: usize) -> Self {
        Self {
            slots: vec![(u64::MAX, 0, 0); secs.max(1)],
        }
    }

    fn slot(&mut self, second: u64) -> &mut (u64, u64, u64) {
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(second % len) as usize];
        if slot.0 != second {
            *slot = (second, 0, 0);
        }
        slot
    }

    fn sums(&self, second: u64) -> (u64, u64) {
        let len = self.slots.len() as u64;
        self.slots
            .iter()
            .filter(|(s, _, _)| *s != u64::MAX && second.saturating_sub(*s) < len && *s <= second)
            .fold((0, 0), |(a, b), (_, x, y)| (a + x, b + y))
    }
}

/// A retry budget (as Finagle's and tower's): over the last `ttl`, retries may be at most
/// `min_per_sec × ttl + ratio × requests`. When the service fails, most retries are refused, so
/// the offered load stays near the logical load instead of multiplying it.
///
/// Clones share one budget: give every clone of a client the same.
///
/// ```
/// use retry_client::RetryBudget;
/// use retry_safe_core::ManualClock;
/// use std::time::Duration;
///
/// let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.1).with_clock(ManualClock::new());
/// for _ in 0..20 {
///     budget.deposit(); // 20 requests
/// }
/// assert!(budget.withdraw() && budget.withdraw()); // 10 % of 20 = 2 retries
/// assert!(!budget.withdraw());
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Mutex<Window>>,
    clock: Arc<dyn Clock>,
    min_per_sec: u32,
    ratio: f64,
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget")
            .field("min_per_sec", &self.min_per_sec)
            .field("ratio", &self.ratio)
            .finish_non_exhaustive()
    }
}

impl Default for RetryBudget {
    /// 10 s window, 1 retry per second of floor, retries up to 20 % of requests (Finagle's
    /// default): enough to ride out a 10 % failure rate, while a failing service sees at most
    /// about 1.2× its logical load.
    fn default() -> Self {
        Self::new(Duration::from_secs(10), 1, 0.2)
    }
}

impl RetryBudget {
    /// A budget over `ttl` (whole seconds, at least 1): `min_per_sec` retries per second always
    /// allowed, plus `ratio` retries per request.
    pub fn new(ttl: Duration, min_per_sec: u32, ratio: f64) -> Self {
        let secs = ttl.as_secs().clamp(1, 3600) as usize;
        Self {
            inner: Arc::new(Mutex::new(Window::new(secs))),
            clock: Arc::new(retry_safe_core::TokioClock::new()),
            min_per_sec,
            ratio: ratio.max(0.0),
        }
    }

    /// The same budget on another clock (tests: a manual clock).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    fn second(&self) -> u64 {
        self.clock.now().as_secs()
    }

    /// Counts one logical request.
    pub fn deposit(&self) {
        let now = self.second();
        self.inner.lock().slot(now).1 += 1;
    }

    /// Takes one retry from the budget; `false` (nothing taken) when it is spent.
    pub fn withdraw(&self) -> bool {
        let now = self.second();
        let mut w = self.inner.lock();
        let (requests, retries) = w.sums(now);
        let allowed = self.min_per_sec as f64 * w.slots.len() as f64 + self.ratio * requests as f64;
        if (retries + 1) as f64 > allowed {
            return false;
        }
        w.slot(now).2 += 1;
        true
    }
}

/// Adaptive client-side throttling (Google SRE book, "Handling Overload"): over a window the
/// client counts its requests and the backend's accepts, and rejects a new request locally with
/// probability `max(0, (requests − k × accepts) / (requests + 1))`. With `k = 2` the client keeps
/// sending about twice what the backend accepts, no more.
#[derive(Clone)]
pub struct AdaptiveThrottle {
    inner: Arc<Mutex<(Window, fastrand::Rng)>>,
    clock: Arc<dyn Clock>,
    k: f64,
}

impl std::fmt::Debug for AdaptiveThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveThrottle")
            .field("k", &self.k)
            .finish_non_exhaustive()
    }
}

impl Default for AdaptiveThrottle {
    /// `k = 2` over a 2-minute window.
    fn default() -> Self {
        Self::new(2.0, Duration::from_secs(120))
    }
}

impl AdaptiveThrottle {
    /// A throttle with multiplier `k` (at least 1) over `window`.
    pub fn new(k: f64, window: Duration) -> Self {
        let secs = window.as_secs().clamp(1, 3600) as usize;
        Self {
            inner: Arc::new(Mutex::new((Window::new(secs), fastrand::Rng::new()))),
            clock: Arc::new(retry_safe_core::TokioClock::new()),
            k: k.max(1.0),
        }
    }

    /// The same throttle on another clock, with a seeded random source (for reproducible runs).
    pub fn with_clock(mut self, clock: impl Clock, seed: u64) -> Self {
        self.clock = Arc::new(clock);
        self.inner.lock().1 = fastrand::Rng::with_seed(seed);
        self
    }

    /// The current rejection probability.
    pub fn rejection_probability(&self) -> f64 {
        let now = self.clock.now().as_secs();
        let (requests, accepts) = self.inner.lock().0.sums(now);
        ((requests as f64 - self.k * accepts as f64) / (requests as f64 + 1.0)).max(0.0)
    }

    /// Counts one attempt about to be sent; `false` means reject it locally.
    pub fn admit(&self) -> bool {
        let p = self.rejection_probability();
        let now = self.clock.now().as_secs();
        let mut inner = self.inner.lock();
        inner.0.slot(now).1 += 1;
        p <= 0.0 || inner.1.f64() >= p
    }

    /// Counts an attempt the backend accepted (answered with anything but an overload refusal).
    pub fn accepted(&self) {
        let now = self.clock.now().as_secs();
        self.inner.lock().0.slot(now).2 += 1;
    }
}
