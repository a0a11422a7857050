//! Time as an injected dependency: the one [`Clock`] seam of the workspace.
#![cfg_attr(feature = "tokio", doc = "[`TokioClock`]: crate::TokioClock")]
#![cfg_attr(not(feature = "tokio"), doc = "[`TokioClock`]: crate#features")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of monotonic and wall time.
///
/// Implementors provide [`now_nanos`](Clock::now_nanos) and [`unix_time`](Clock::unix_time); the
/// other methods derive from them.
///
/// ```
/// use retry_safe_core::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::at_unix_secs(1_700_000_000);
/// let seen_by_a_limiter = clock.clone();
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(seen_by_a_limiter.now(), Duration::from_millis(1500));
/// assert_eq!(seen_by_a_limiter.unix_secs(), 1_700_000_001);
/// ```
///
/// Time as an injected dependency: the one [`Clock`] seam of the workspace.
///
/// Every decision that depends on time (a GCRA arrival time, a lease expiry, a webhook timestamp,
/// a retry backoff) reads it through a [`Clock`], so tests move time by hand and never sleep.
/// A clock answers two questions:
///
/// - [`Clock::now_nanos`]: **monotonic** time, whole nanoseconds since the clock's own origin.
///   Only differences between two readings of the same clock carry meaning. Limiters, leases and
///   timeouts use it.
/// - [`Clock::unix_time`]: **wall** time since the Unix epoch. Webhook timestamps and HTTP dates
///   use it.
///
/// | clock | monotonic time | wall time | for |
/// |---|---|---|---|
/// | [`SystemClock`] | the TSC where reliable, else the OS monotonic clock (`quanta`) | [`SystemTime`] | production |
/// | [`ManualClock`] | moved by hand; clones share it | moved by hand | unit tests, simulations |
/// | `TokioClock` (feature `tokio`) | `tokio::time::Instant` | wall time at construction + tokio's elapsed time | tests under `tokio::time::pause` |
///
pub trait Clock: Send + Sync + 'static {
    /// Monotonic time: nanoseconds since this clock's origin. Never decreases (but for a
    /// [`ManualClock`] a test sets back on purpose).
    fn now_nanos(&self) -> u64;

    /// Wall time: the time elapsed since 1970-01-01T00:00:00Z. May step in either direction when
    /// the system clock is adjusted; a clock set before the epoch reads as zero.
    fn unix_time(&self) -> Duration;

    /// Monotonic time as a [`Duration`] since this clock's origin.
    #[inline]
    fn now(&self) -> Duration {
        Duration::from_nanos(self.now_nanos())
    }

    /// Wall time in whole seconds since the Unix epoch.
    #[inline]
    fn unix_secs(&self) -> u64 {
        self.unix_time().as_secs()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    #[inline]
    fn now_nanos(&self) -> u64 {
        (**self).now_nanos()
    }
    #[inline]
    fn unix_time(&self) -> Duration {
        (**self).unix_time()
    }
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    #[inline]
    fn now_nanos(&self) -> u64 {
        (**self).now_nanos()
    }
    #[inline]
    fn unix_time(&self) -> Duration {
        (**self).unix_time()
    }
}

/// A duration as whole nanoseconds, saturating at `u64::MAX` (about 584 years).
#[inline]
pub fn duration_to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A duration as whole microseconds, saturating at `u64::MAX`: what the Redis scripts take.
#[inline]
pub fn duration_to_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A duration as whole microseconds for a PostgreSQL `bigint`, saturating at `i64::MAX`.
#[inline]
pub fn duration_to_micros_i64(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The system's wall time since the Unix epoch (zero for a clock set before it).
fn system_unix_time() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// The production clock: the machine's fastest monotonic counter (the TSC where it is reliable,
/// else the OS monotonic clock, calibrated by the `quanta` crate) and the system wall clock.
///
/// A rate limiter reads the clock on every decision; this one costs a few nanoseconds where
/// [`std::time::Instant::now`] costs tens. Clones share the origin.
#[derive(Debug, Clone)]
pub struct SystemClock {
    clock: quanta::Clock,
    origin: u64,
}

impl SystemClock {
    /// A clock whose monotonic origin is now.
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        Self { clock, origin }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        self.clock.delta_as_nanos(self.origin, self.clock.raw())
    }

    fn unix_time(&self) -> Duration {
        system_unix_time()
    }
}

/// A clock that moves only when told to; clones share one time.
///
/// Monotonic and wall time are kept apart: [`advance`](ManualClock::advance) moves both,
/// [`set`](ManualClock::set) only the monotonic reading and
/// [`set_unix_secs`](ManualClock::set_unix_secs) only the wall reading, so a test can step the
/// wall clock (an NTP correction) while monotonic time stands still, or the reverse.
///
/// ```
/// use retry_safe_core::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::at(Duration::from_secs(10));
/// clock.advance(Duration::from_nanos(1));
/// assert_eq!(clock.now_nanos(), 10_000_000_001);
/// clock.set_unix_secs(1_614_265_330);
/// assert_eq!(clock.unix_secs(), 1_614_265_330);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    inner: Arc<ManualTime>,
}

#[derive(Debug, Default)]
struct ManualTime {
    mono_nanos: AtomicU64,
    unix_nanos: AtomicU64,
}

impl ManualClock {
    /// A clock at its monotonic origin (zero) whose wall time is the Unix epoch.
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock whose monotonic reading is `t` (wall time: the Unix epoch).
    pub fn at(t: Duration) -> Self {
        let clock = Self::new();
        clock.set(t);
        clock
    }

    /// A clock at its monotonic origin whose wall time is `secs` after the Unix epoch.
    pub fn at_unix_secs(secs: u64) -> Self {
        let clock = Self::new();
        clock.set_unix_secs(secs);
        clock
    }

    /// Moves monotonic and wall time forward by `by` (each saturating at `u64::MAX` nanoseconds).
    pub fn advance(&self, by: Duration) {
        let add = duration_to_nanos(by);
        for cell in [&self.inner.mono_nanos, &self.inner.unix_nanos] {
            // `fetch_update` with a closure that always returns `Some` cannot fail.
            let _ = cell.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_add(add))
            });
        }
    }

    /// Puts the monotonic reading at `t` after the origin. Tests may move it backwards on purpose,
    /// to see how a component copes with a clock that steps back.
    pub fn set(&self, t: Duration) {
        self.inner
            .mono_nanos
            .store(duration_to_nanos(t), Ordering::SeqCst);
    }

    /// Puts the wall clock at `t` after the Unix epoch (saturating at `u64::MAX` nanoseconds,
    /// the year 2554).
    pub fn set_unix_time(&self, t: Duration) {
        self.inner
            .unix_nanos
            .store(duration_to_nanos(t), Ordering::SeqCst);
    }

    /// Puts the wall clock at `secs` seconds after the Unix epoch (saturating as
    /// [`set_unix_time`](ManualClock::set_unix_time)).
    pub fn set_unix_secs(&self, secs: u64) {
        self.set_unix_time(Duration::from_secs(secs));
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        self.inner.mono_nanos.load(Ordering::SeqCst)
    }

    fn unix_time(&self) -> Duration {
        Duration::from_nanos(self.inner.unix_nanos.load(Ordering::SeqCst))
    }
}

/// tokio's clock (feature `tokio`): monotonic time from `tokio::time::Instant`, wall time as the
/// system wall time at construction plus tokio's elapsed time.
///
/// Under `tokio::time::pause` it stands still and moves with `tokio::time::advance` (and with
/// the auto-advance of a paused runtime), so a store, a limiter and the timers of a layer share
/// one deterministic time in tests.
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    unix_origin: Duration,
}

#[cfg(feature = "tokio")]
impl TokioClock {
    /// A clock whose monotonic origin is tokio's now.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            unix_origin: system_unix_time(),
        }
    }
}

#[cfg(feature = "tokio")]
impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "tokio")]
impl Clock for TokioClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        duration_to_nanos(self.origin.elapsed())
    }

    fn unix_time(&self) -> Duration {
        self.unix_origin.saturating_add(self.origin.elapsed())
    }
}

/// Test control of a server-side store's clock, shared by clones.
///
/// Server stores (Redis, PostgreSQL) read time from the server, so a test cannot move it with a
/// [`ManualClock`]. They consult this instead: by default it adds an offset
/// (zero in production) to the server's time, and tests [`advance`](Self::advance) it to expire
/// leases and retention without waiting. A test that must not see real time pass at all (a model
/// comparison at exact lease boundaries) [`pin`](Self::pin)s it: the store then uses the pinned
/// time, and only `advance` moves it.
///
/// ```
/// use retry_safe_core::TimeOffset;
/// use std::time::Duration;
///
/// let offset = TimeOffset::new();
/// offset.clone().advance(Duration::from_millis(1500));
/// assert_eq!(offset.get(), Duration::from_millis(1500));
/// assert_eq!(offset.pinned(), None);
/// offset.pin(Duration::from_secs(1_700_000_000));
/// offset.advance(Duration::from_secs(2));
/// assert_eq!(offset.pinned(), Some(Duration::from_secs(1_700_000_002)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct TimeOffset {
    offset_us: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pinned_us: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl TimeOffset {
    /// A zero offset, not pinned.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the store's time forward by `by` (microsecond resolution).
    pub fn advance(&self, by: Duration) {
        use std::sync::atomic::Ordering::SeqCst;
        let micros = duration_to_micros(by);
        if self.pinned_us.load(SeqCst) > 0 {
            self.pinned_us.fetch_add(micros, SeqCst);
        } else {
            self.offset_us.fetch_add(micros, SeqCst);
        }
    }

    /// Pins the store's time at `since_epoch` (time since 1970-01-01 UTC, nonzero).
    pub fn pin(&self, since_epoch: Duration) {
        let micros = duration_to_micros(since_epoch);
        self.pinned_us
            .store(micros.max(1), std::sync::atomic::Ordering::SeqCst);
    }

    /// The offset added to the server's time (when not pinned).
    pub fn get(&self) -> Duration {
        Duration::from_micros(self.offset_us.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// The pinned time, if pinned.
    pub fn pinned(&self) -> Option<Duration> {
        match self.pinned_us.load(std::sync::atomic::Ordering::SeqCst) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}
