//! The shedder: reserved capacity by class, plus the overload controller.

use crate::class::Class;
use crate::controller::{shed_probability, Controller, ControllerConfig};
use crate::{Clock, SystemClock};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The share of capacity each class may fill, in percent (test-mode, read, write, critical).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares(pub [u8; 4]);

impl Default for Shares {
    /// Test-mode 50 %, read 70 %, write 80 %, critical 100 %: the top 20 % of the slots is kept
    /// for critical requests, the top 30 % for writes and critical ones, and so on.
    fn default() -> Self {
        Self([50, 70, 80, 100])
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Zero slots.
    #[error("capacity must be at least 1 slot")]
    ZeroCapacity,
    /// Shares over 100 %, not rising with the class, or critical below 100 %.
    #[error("shares must rise with the class, stay within 100 %, and give critical 100 %")]
    InvalidShares,
}

/// Why a request was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShedReason {
    /// Its class had used up its share of the slots.
    Capacity,
    /// The overload controller is shedding its class.
    Overload,
    /// Its class had used up its share of the *fleet's* slots (the fleet shedder, feature
    /// `redis`).
    FleetCapacity,
}

impl ShedReason {
    /// A short name: `capacity`, `overload`, `fleet_capacity`.
    pub const fn name(self) -> &'static str {
        match self {
            ShedReason::Capacity => "capacity",
            ShedReason::Overload => "overload",
            ShedReason::FleetCapacity => "fleet_capacity",
        }
    }
}

/// The slots each class may fill: `capacity × share`, at least 1.
pub(crate) fn limits_of(capacity: u32, shares: Shares) -> Result<[u32; 4], ConfigError> {
    if capacity == 0 {
        return Err(ConfigError::ZeroCapacity);
    }
    let s = shares.0;
    if s[3] != 100 || s.windows(2).any(|w| w[0] > w[1]) {
        return Err(ConfigError::InvalidShares);
    }
    Ok(s.map(|pct| (u64::from(capacity) * u64::from(pct) / 100).max(1) as u32))
}

/// A shed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{} request shed ({reason:?})", class.name())]
#[non_exhaustive]
pub struct Shed {
    /// The request's class.
    pub class: Class,
    /// Why.
    pub reason: ShedReason,
    /// When to retry (for `Retry-After`).
    pub retry_after: Duration,
}

/// Per-class counters, read cheaply at any time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Requests admitted, per class (index = [`Class::index`]).
    pub admitted: [u64; 4],
    /// Requests shed because their class's share was full.
    pub shed_capacity: [u64; 4],
    /// Requests shed by the overload controller.
    pub shed_overload: [u64; 4],
    /// Requests in flight now.
    pub in_flight: u32,
    /// The controller's pressure (0 when it is off).
    pub pressure: f64,
}

/// Priority-aware admission for one server.
///
/// ```
/// use loadshed_fleet::{Class, Shedder, ShedReason};
///
/// // 10 slots; by default non-critical work may fill 80 % of them.
/// let shedder = Shedder::new(10).unwrap();
/// let writes: Vec<_> = (0..8).map(|_| shedder.admit(Class::Write).unwrap()).collect();
/// assert_eq!(shedder.admit(Class::Write).unwrap_err().reason, ShedReason::Capacity);
/// let critical = shedder.admit(Class::Critical).unwrap(); // the reserve is still free
/// # drop((writes, critical));
/// ```
pub struct Shedder<C = SystemClock> {
    capacity: u32,
    limits: [u32; 4],
    in_flight: AtomicU32,
    admitted: [AtomicU64; 4],
    shed_capacity: [AtomicU64; 4],
    shed_overload: [AtomicU64; 4],
    retry_after: Duration,
    rng: AtomicU64,
    control: Option<Control<C>>,
}

struct Control<C> {
    clock: C,
    controller: Mutex<Controller>,
    /// The pressure in thousandths, for lock-free reads on the admission path.
    milli: AtomicU32,
    window_end: AtomicU64,
    window_nanos: u64,
    latency_sum: AtomicU64,
    completed: AtomicU64,
}

impl Shedder<SystemClock> {
    /// A shedder with `capacity` slots and the default shares, without controller.
    pub fn new(capacity: u32) -> Result<Self, ConfigError> {
        Self::with_shares(capacity, Shares::default())
    }
}

impl<C: Clock> Shedder<C> {
    /// A shedder with `capacity` slots and `shares`, without controller.
    pub fn with_shares(capacity: u32, shares: Shares) -> Result<Shedder<C>, ConfigError> {
        let limits = limits_of(capacity, shares)?;
        Ok(Shedder {
            capacity,
            limits,
            in_flight: AtomicU32::new(0),
            admitted: Default::default(),
            shed_capacity: Default::default(),
            shed_overload: Default::default(),
            retry_after: Duration::from_secs(1),
            rng: AtomicU64::new(0x853c_49e6_748f_ea9b),
            control: None,
        })
    }

    /// Adds the overload controller, timing requests on `clock`.
    pub fn controller(mut self, config: ControllerConfig, clock: C) -> Self {
        let window_nanos = u64::try_from(config.window.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let now = clock.now_nanos();
        self.control = Some(Control {
            clock,
            controller: Mutex::new(Controller::new(config)),
            milli: AtomicU32::new(0),
            window_end: AtomicU64::new(now + window_nanos),
            window_nanos,
            latency_sum: AtomicU64::new(0),
            completed: AtomicU64::new(0),
        });
        self
    }

    /// Seeds the generator behind probabilistic shedding (simulations replay exactly).
    pub fn seed(self, seed: u64) -> Self {
        self.rng.store(seed, Ordering::Relaxed);
        self
    }

    /// The `Retry-After` hint of shed requests (default 1 s).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// The slots.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The slots `class` may fill.
    pub fn limit(&self, class: Class) -> u32 {
        self.limits[class.index()]
    }

    /// Admits a request of `class` or sheds it. The returned guard holds the slot until dropped
    /// (also on panic and cancellation).
    #[inline]
    pub fn admit(&self, class: Class) -> Result<Guard<'_, C>, Shed> {
        let i = class.index();
        if let Some(control) = &self.control {
            control.tick();
            let milli = control.milli.load(Ordering::Relaxed);
            if milli > 0 && i < 3 {
                let p = shed_probability(f64::from(milli) / 1000.0, i);
                if p >= 1.0 || (p > 0.0 && self.uniform() < p) {
                    self.shed_overload[i].fetch_add(1, Ordering::Relaxed);
                    return Err(self.shed(class, ShedReason::Overload));
                }
            }
        }
        let limit = self.limits[i];
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        if admitted.is_err() {
            self.shed_capacity[i].fetch_add(1, Ordering::Relaxed);
            return Err(self.shed(class, ShedReason::Capacity));
        }
        self.admitted[i].fetch_add(1, Ordering::Relaxed);
        let started = self.control.as_ref().map_or(0, |c| c.clock.now_nanos());
        Ok(Guard {
            shedder: self,
            started,
        })
    }

    fn shed(&self, class: Class, reason: ShedReason) -> Shed {
        Shed {
            class,
            reason,
            retry_after: self.retry_after,
        }
    }

    /// A uniform number in [0, 1) from a shared splitmix64 sequence.
    fn uniform(&self) -> f64 {
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The controller's pressure (0 without controller).
    pub fn pressure(&self) -> f64 {
        self.control
            .as_ref()
            .map_or(0.0, |c| f64::from(c.milli.load(Ordering::Relaxed)) / 1000.0)
    }

    /// Counters and state, read without locking.
    pub fn snapshot(&self) -> Snapshot {
        let load = |a: &[AtomicU64; 4]| a.each_ref().map(|x| x.load(Ordering::Relaxed));
        Snapshot {
            admitted: load(&self.admitted),
            shed_capacity: load(&self.shed_capacity),
            shed_overload: load(&self.shed_overload),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            pressure: self.pressure(),
        }
    }

    /// Ends the controller's window if it is over (also done on every admission).
    pub fn tick(&self) {
        if let Some(control) = &self.control {
            control.tick();
        }
    }
}

impl<C: Clock> Control<C> {
    #[inline]
    fn tick(&self) {
        let now = self.clock.now_nanos();
        if now < self.window_end.load(Ordering::Relaxed) {
            return;
        }
        let mut controller = self.controller.lock();
        // Re-check under the lock: another thread may have closed the window.
        let end = self.window_end.load(Ordering::Relaxed);
        if now < end {
            return;
        }
        // Windows with no traffic at all pass as "no completion" (hold).
        let completed = self.completed.swap(0, Ordering::Relaxed);
        let sum = self.latency_sum.swap(0, Ordering::Relaxed);
        let mean = Duration::from_nanos(sum.checked_div(completed).unwrap_or(0));
        let before = controller.pressure();
        let step = controller.end_window(completed, mean);
        let elapsed_windows = (now - end) / self.window_nanos + 1;
        self.window_end
            .store(end + elapsed_windows * self.window_nanos, Ordering::Relaxed);
        let after = controller.pressure();
        self.milli
            .store((after * 1000.0).round() as u32, Ordering::Relaxed);
        if before.floor() != after.floor() || (before == 0.0) != (after == 0.0) {
            #[cfg(feature = "tower")]
            tracing::warn!(pressure = after, ?step, "load shedding level changed");
            #[cfg(not(feature = "tower"))]
            let _ = step;
        }
    }
}

impl<C: Clock> Shedder<C> {
    /// [`admit`](Self::admit) for a shared shedder: the guard owns a reference to it, so it can
    /// live in a future that does not borrow (the tower layer's response future).
    #[inline]
    pub fn admit_owned(self: &std::sync::Arc<Self>, class: Class) -> Result<OwnedGuard<C>, Shed> {
        let guard = self.admit(class)?;
        let started = guard.started;
        // The slot now belongs to the owned guard, which frees it on drop.
        std::mem::forget(guard);
        Ok(OwnedGuard {
            shedder: self.clone(),
            started,
        })
    }

    #[inline]
    fn release(&self, started: u64) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(control) = &self.control {
            let latency = control.clock.now_nanos().saturating_sub(started);
            control.latency_sum.fetch_add(latency, Ordering::Relaxed);
            control.completed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A request's slot from [`Shedder::admit_owned`]; dropping it frees the slot and reports the
/// request's latency.
pub struct OwnedGuard<C: Clock = SystemClock> {
    shedder: std::sync::Arc<Shedder<C>>,
    started: u64,
}

impl<C: Clock> std::fmt::Debug for OwnedGuard<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedGuard").finish_non_exhaustive()
    }
}

impl<C: Clock> Drop for OwnedGuard<C> {
    #[inline]
    fn drop(&mut self) {
        self.shedder.release(self.started);
    }
}

/// A request's slot; dropping it frees the slot and reports the request's latency.
pub struct Guard<'a, C: Clock = SystemClock> {
    shedder: &'a Shedder<C>,
    started: u64,
}

impl<C: Clock> std::fmt::Debug for Guard<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

impl<C: Clock> Drop for Guard<'_, C> {
    #[inline]
    fn drop(&mut self) {
        self.shedder.release(self.started);
    }
}

impl<C> std::fmt::Debug for Shedder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shedder")
            .field("capacity", &self.capacity)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}
