//! One limit shared by every request: no key, no map.

use crate::gcra::{CostExceedsBurst, Decision, Quotas};
use crate::quota::MAX_QUOTAS;
use crate::{Clock, SystemClock};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A limiter for one global limit (a whole service, one upstream, one tenant).
///
/// With a single quota its state is one atomic word updated by compare-and-swap; with several,
/// a short mutex makes the check all-or-nothing.
///
/// ```
/// use ratelimit_token_bucket::{DirectLimiter, ManualClock, Quota, Quotas};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = DirectLimiter::with_clock(Quotas::new([Quota::per_second(1)]).unwrap(), clock.clone());
/// assert!(limiter.check(1).unwrap().is_allowed());
/// assert!(!limiter.check(1).unwrap().is_allowed());
/// clock.advance(Duration::from_secs(1));
/// assert!(limiter.check(1).unwrap().is_allowed());
/// ```
pub struct DirectLimiter<C = SystemClock> {
    quotas: Quotas,
    clock: C,
    state: State,
}

enum State {
    One(AtomicU64),
    Many(Mutex<[u64; MAX_QUOTAS]>),
}

impl DirectLimiter<SystemClock> {
    /// A limiter on the monotonic clock.
    pub fn new(quotas: Quotas) -> Self {
        Self::with_clock(quotas, SystemClock::new())
    }
}

impl<C: Clock> DirectLimiter<C> {
    /// A limiter on `clock`.
    pub fn with_clock(quotas: Quotas, clock: C) -> Self {
        let state = if quotas.len() == 1 {
            State::One(AtomicU64::new(0))
        } else {
            State::Many(Mutex::new([0; MAX_QUOTAS]))
        };
        Self {
            quotas,
            clock,
            state,
        }
    }

    /// The quotas enforced.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Decides one request of `cost` now, counting it if it passes.
    #[inline]
    pub fn check(&self, cost: u32) -> Result<Decision, CostExceedsBurst> {
        let now = self.clock.now_nanos();
        match &self.state {
            State::One(tat) => {
                let mut current = tat.load(Ordering::Acquire);
                loop {
                    let mut next = [current];
                    let decision = self.quotas.decide(&mut next, now, cost)?;
                    if !decision.is_allowed() || next[0] == current {
                        return Ok(decision);
                    }
                    match tat.compare_exchange_weak(
                        current,
                        next[0],
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return Ok(decision),
                        Err(seen) => current = seen,
                    }
                }
            }
            State::Many(tats) => self.quotas.decide(&mut tats.lock()[..], now, cost),
        }
    }
}

impl<C> std::fmt::Debug for DirectLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectLimiter")
            .field("quotas", &self.quotas)
            .finish_non_exhaustive()
    }
}
