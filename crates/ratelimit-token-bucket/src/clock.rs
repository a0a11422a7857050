//! Time for the limiter, as whole nanoseconds since the clock's origin.
//!
//! The GCRA arithmetic is integer nanoseconds throughout, so the clock hands out a `u64` of
//! nanoseconds. Production uses [`MonotonicClock`]; tests use [`FakeClock`] and move it by hand, so
//! every `retry_after` is exact and no test sleeps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A monotonic source of time for the limiters.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since this clock's origin; never decreases.
    fn now_nanos(&self) -> u64;
}

/// The machine's fastest monotonic counter (the TSC where it is reliable, else the OS monotonic
/// clock, as calibrated by the `quanta` crate), read as nanoseconds since the clock was made.
///
/// A limiter reads the clock on every decision; this one costs a few nanoseconds where
/// [`std::time::Instant::now`] costs tens.
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    clock: quanta::Clock,
    origin: u64,
}

impl MonotonicClock {
    /// A clock whose origin is this instant.
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        Self { clock, origin }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        self.clock.delta_as_nanos(self.origin, self.clock.raw())
    }
}

/// A hand-driven clock for tests and simulations; clones share the same time.
///
/// ```
/// use ratelimit_token_bucket::{Clock, FakeClock};
/// use std::time::Duration;
///
/// let clock = FakeClock::at(Duration::from_secs(10));
/// let same = clock.clone();
/// clock.advance(Duration::from_nanos(1));
/// assert_eq!(same.now_nanos(), 10_000_000_001);
/// ```
#[derive(Debug, Clone, Default)]
pub struct FakeClock {
    now: Arc<AtomicU64>,
}

impl FakeClock {
    /// A clock standing at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock standing at `t` after its origin.
    pub fn at(t: Duration) -> Self {
        let clock = Self::new();
        clock.set(t);
        clock
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.now.fetch_add(to_nanos(d), Ordering::SeqCst);
    }

    /// Puts the clock at `t` after its origin. Tests may move it backwards on purpose, to see how a
    /// limiter copes with a clock step; [`Clock`] users must then expect the non-monotonic reading.
    pub fn set(&self, t: Duration) {
        self.now.store(to_nanos(t), Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now_nanos(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_nanos(&self) -> u64 {
        (**self).now_nanos()
    }
}

/// A duration as whole nanoseconds, saturating at `u64::MAX`.
pub(crate) fn to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
