//! Wall-clock time, injected.
//!
//! Webhook timestamps are Unix seconds, so verification needs the wall clock rather than a
//! monotonic one. It reads it through [`WallClock`]: production uses [`SystemWallClock`], tests
//! use [`ManualWallClock`] and set the time they want.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current Unix time in whole seconds.
pub trait WallClock: Send + Sync + 'static {
    /// Seconds since 1970-01-01T00:00:00Z.
    fn unix_now(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn unix_now(&self) -> u64 {
        // A clock set before 1970 reads as the epoch: every timestamp is then "in the future"
        // and refused, which is the safe direction.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A wall clock that reads what it was last set to; clones share one time.
///
/// ```
/// use webhook_sig::{ManualWallClock, WallClock};
///
/// let clock = ManualWallClock::at(1_614_265_330);
/// clock.advance(30);
/// assert_eq!(clock.clone().unix_now(), 1_614_265_360);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualWallClock {
    secs: Arc<AtomicU64>,
}

impl ManualWallClock {
    /// A clock showing `unix_secs`.
    pub fn at(unix_secs: u64) -> Self {
        Self {
            secs: Arc::new(AtomicU64::new(unix_secs)),
        }
    }

    /// Sets the time.
    pub fn set(&self, unix_secs: u64) {
        self.secs.store(unix_secs, Ordering::SeqCst);
    }

    /// Moves the time forward by `secs`.
    pub fn advance(&self, secs: u64) {
        self.secs.fetch_add(secs, Ordering::SeqCst);
    }
}

impl WallClock for ManualWallClock {
    fn unix_now(&self) -> u64 {
        self.secs.load(Ordering::SeqCst)
    }
}

impl<C: WallClock + ?Sized> WallClock for Arc<C> {
    fn unix_now(&self) -> u64 {
        (**self).unix_now()
    }
}
