//! The pure GCRA core: a set of quotas deciding one request at a given time.
//!
//! Each quota keeps one number per key, its *theoretical arrival time* (TAT): the time at which the
//! key's bucket would be full again. With emission interval `T` and tolerance `τ = burst × T`, a
//! request of cost `n` at time `now` is decided from the offset `d = max(TAT − now, 0)`:
//!
//! - it passes when `d + n·T ≤ τ`, and the TAT becomes `now + d + n·T`;
//! - otherwise it is limited, the TAT is unchanged, and it would pass `d + n·T − τ` from now.
//!
//! `τ − d` is the bucket's content in nanoseconds, so `(τ − d − n·T) / T` whole requests remain after
//! a passing one, and `d + n·T` is the time until the bucket is full again. Several quotas are
//! all-or-nothing: the request passes only if every quota lets it pass, and only then is any TAT
//! moved. Everything is integer nanoseconds: no floating point, no drift.

use crate::quota::{Quota, QuotaError, MAX_QUOTAS};
use std::fmt::Write as _;
use std::time::Duration;

/// A validated set of 1 to [`MAX_QUOTAS`] quotas, checked together for every request.
///
/// ```
/// use ratelimit_token_bucket::{Decision, Quota, Quotas};
/// use std::time::Duration;
///
/// let quotas = Quotas::new([Quota::per_second(2)]).unwrap();
/// let mut tat = [0u64];
/// let now = 1_000_000_000; // nanoseconds on the limiter's clock
/// assert!(quotas.decide(&mut tat, now, 1).unwrap().is_allowed());
/// assert!(quotas.decide(&mut tat, now, 1).unwrap().is_allowed());
/// let Decision::Limited(l) = quotas.decide(&mut tat, now, 1).unwrap() else { panic!() };
/// assert_eq!(l.retry_after(), Duration::from_millis(500));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quotas {
    quotas: Vec<Quota>,
    names: Vec<Box<str>>,
    interval: [u64; MAX_QUOTAS],
    tolerance: [u64; MAX_QUOTAS],
    /// The smallest burst of the set: the largest cost that can ever pass.
    max_cost: u64,
    max_cost_quota: usize,
    policy_header: String,
}

impl Quotas {
    /// Validates a set of quotas. Unnamed quotas are called `default` when alone, else `q1`, `q2`…
    /// by position.
    pub fn new(quotas: impl IntoIterator<Item = Quota>) -> Result<Self, QuotaError> {
        let quotas: Vec<Quota> = quotas.into_iter().collect();
        if quotas.is_empty() {
            return Err(QuotaError::Empty);
        }
        if quotas.len() > MAX_QUOTAS {
            return Err(QuotaError::TooMany(quotas.len()));
        }
        let mut names: Vec<Box<str>> = Vec::with_capacity(quotas.len());
        let mut interval = [0; MAX_QUOTAS];
        let mut tolerance = [0; MAX_QUOTAS];
        for (i, q) in quotas.iter().enumerate() {
            q.validate()?;
            let name: Box<str> = match q.name() {
                Some(n) => n.into(),
                None if quotas.len() == 1 => "default".into(),
                None => format!("q{}", i + 1).into(),
            };
            if names.contains(&name) {
                return Err(QuotaError::DuplicateName(name.into()));
            }
            names.push(name);
            interval[i] = u64::try_from(q.interval().as_nanos()).unwrap_or(u64::MAX);
            tolerance[i] = interval[i] * q.burst_size();
        }
        let (max_cost_quota, max_cost) = quotas
            .iter()
            .map(Quota::burst_size)
            .enumerate()
            .min_by_key(|&(_, b)| b)
            .unwrap_or((0, 0));
        let mut policy_header = String::new();
        for (i, q) in quotas.iter().enumerate() {
            if i > 0 {
                policy_header.push_str(", ");
            }
            // A bucket of `burst` units that refills in `window` seconds (rounded up).
            let window = q.window();
            let secs = retry_safe_core::ceil_secs(window);
            let _ = write!(
                policy_header,
                "\"{}\";q={};w={}",
                names[i],
                q.burst_size(),
                secs
            );
        }
        Ok(Self {
            quotas,
            names,
            interval,
            tolerance,
            max_cost,
            max_cost_quota,
            policy_header,
        })
    }

    /// The quotas, in the order given.
    pub fn quotas(&self) -> &[Quota] {
        &self.quotas
    }

    /// How many quotas the set holds.
    pub fn len(&self) -> usize {
        self.quotas.len()
    }

    /// Always false: a set holds at least one quota.
    pub fn is_empty(&self) -> bool {
        self.quotas.is_empty()
    }

    /// The name of quota `i` as the headers give it.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// The largest cost that can ever pass: the smallest burst of the set.
    pub fn max_cost(&self) -> u64 {
        self.max_cost
    }

    /// The value of the `RateLimit-Policy` header for this set, e.g.
    /// `"default";q=20;w=2` for 10/s with burst 20.
    pub fn policy_header(&self) -> &str {
        &self.policy_header
    }

    /// The emission interval and tolerance of quota `i`, in nanoseconds.
    #[cfg(feature = "redis")]
    pub(crate) fn params(&self, i: usize) -> (u64, u64) {
        (self.interval[i], self.tolerance[i])
    }

    /// Checks that a cost can ever pass.
    #[inline(always)]
    pub fn check_cost(&self, cost: u32) -> Result<(), CostExceedsBurst> {
        if u64::from(cost) > self.max_cost {
            return Err(CostExceedsBurst {
                cost,
                burst: self.max_cost,
                quota: self.max_cost_quota,
            });
        }
        Ok(())
    }

    /// Decides a request of `cost` at `now` (nanoseconds on the limiter's clock) against the
    /// state `tats` (one TAT per quota, 0 for a fresh key), moving the TATs only if it passes.
    ///
    /// # Panics
    /// If `tats` is shorter than the set.
    #[inline(always)]
    pub fn decide(
        &self,
        tats: &mut [u64],
        now: u64,
        cost: u32,
    ) -> Result<Decision, CostExceedsBurst> {
        let n = self.quotas.len();
        if n == 1 {
            return self.decide_one(&mut tats[0], now, cost);
        }
        let mut offsets = [0u64; MAX_QUOTAS];
        for i in 0..n {
            offsets[i] = tats[i].saturating_sub(now);
        }
        let decision = self.decide_offsets(&offsets[..n], cost)?;
        if decision.is_allowed() {
            let cost = u64::from(cost);
            for i in 0..n {
                tats[i] = now + offsets[i] + cost * self.interval[i];
            }
        }
        Ok(decision)
    }

    /// [`decide`](Self::decide) for a set of one quota, the common case, without the loops.
    #[inline(always)]
    fn decide_one(&self, tat: &mut u64, now: u64, cost: u32) -> Result<Decision, CostExceedsBurst> {
        self.check_cost(cost)?;
        let (t, tau) = (self.interval[0], self.tolerance[0]);
        let d = tat.saturating_sub(now);
        let next = d + u64::from(cost) * t;
        if next > tau {
            return Ok(Decision::Limited(Limited {
                retry: next - tau,
                reset: d,
                quota: 0,
            }));
        }
        *tat = now + next;
        Ok(Decision::Allowed(Allowed {
            credit: tau - next,
            interval: t,
            reset: next,
            quota: 0,
        }))
    }

    /// Decides from the offsets `max(TAT − now, 0)` of each quota; the Redis limiter uses it on
    /// the offsets its script read, so both limiters share this arithmetic.
    #[inline]
    pub(crate) fn decide_offsets(
        &self,
        offsets: &[u64],
        cost: u32,
    ) -> Result<Decision, CostExceedsBurst> {
        self.check_cost(cost)?;
        let cost = u64::from(cost);
        // (retry, quota, offset) of the quota that denies longest;
        // (remaining, quota, next offset) of the tightest passing quota.
        let mut denied: Option<(u64, usize, u64)> = None;
        let mut tightest: Option<(u64, usize, u64)> = None;
        for (i, &d) in offsets.iter().enumerate() {
            let (t, tau) = (self.interval[i], self.tolerance[i]);
            let next = d + cost * t;
            if next > tau {
                let retry = next - tau;
                if denied.is_none_or(|(r, _, _)| retry > r) {
                    denied = Some((retry, i, d));
                }
            } else {
                let remaining = (tau - next) / t;
                if tightest.is_none_or(|(r, _, _)| remaining < r) {
                    tightest = Some((remaining, i, next));
                }
            }
        }
        Ok(match (denied, tightest) {
            (Some((retry, quota, d)), _) => Decision::Limited(Limited {
                retry,
                reset: d,
                quota: quota as u32,
            }),
            (None, Some((_, quota, next))) => {
                let (t, tau) = (self.interval[quota], self.tolerance[quota]);
                Decision::Allowed(Allowed {
                    credit: tau - next,
                    interval: t,
                    reset: next,
                    quota: quota as u32,
                })
            }
            (None, None) => unreachable!("a set holds at least one quota"),
        })
    }
}

/// The outcome of one request against a set of quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The request passes and has been counted.
    Allowed(Allowed),
    /// The request must wait; nothing was counted.
    Limited(Limited),
}

impl Decision {
    /// Whether the request passes.
    #[inline]
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed(_))
    }

    /// The quota the numbers describe: the tightest one.
    pub fn quota(&self) -> usize {
        match self {
            Decision::Allowed(a) => a.quota(),
            Decision::Limited(l) => l.quota(),
        }
    }

    /// Requests of cost 1 that would still pass now (0 when limited).
    pub fn remaining(&self) -> u64 {
        match self {
            Decision::Allowed(a) => a.remaining(),
            Decision::Limited(_) => 0,
        }
    }

    /// Time until the tightest quota's bucket is full again.
    pub fn reset_after(&self) -> Duration {
        match self {
            Decision::Allowed(a) => a.reset_after(),
            Decision::Limited(l) => l.reset_after(),
        }
    }
}

/// A request that passed. The figures are computed when asked for, so a caller that only needs
/// the verdict pays nothing for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    /// Nanoseconds of credit left in the tightest quota's bucket.
    credit: u64,
    /// That quota's emission interval, nanoseconds.
    interval: u64,
    /// Nanoseconds until that bucket is full.
    reset: u64,
    quota: u32,
}

impl Allowed {
    /// A pass decided elsewhere (a leased limiter's local decision).
    #[cfg(feature = "redis")]
    pub(crate) fn new(credit: u64, interval: u64, reset: u64, quota: u32) -> Self {
        Self {
            credit,
            interval,
            reset,
            quota,
        }
    }

    /// The tightest quota's emission interval, nanoseconds.
    #[cfg(feature = "redis")]
    pub(crate) fn interval(&self) -> u64 {
        self.interval
    }

    /// Requests of cost 1 that would still pass now, under the tightest quota.
    pub fn remaining(&self) -> u64 {
        self.credit / self.interval
    }

    /// Time until that quota's bucket is full again.
    pub fn reset_after(&self) -> Duration {
        Duration::from_nanos(self.reset)
    }

    /// Index of that quota in its [`Quotas`].
    pub fn quota(&self) -> usize {
        self.quota as usize
    }
}

/// A request that must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    retry: u64,
    reset: u64,
    quota: u32,
}

impl Limited {
    /// A refusal decided elsewhere (a leased limiter remembering Redis's).
    #[cfg(feature = "redis")]
    pub(crate) fn new(retry: u64, reset: u64, quota: u32) -> Self {
        Self {
            retry,
            reset,
            quota,
        }
    }

    /// The earliest time from now at which the same request would pass (if nothing else is
    /// counted meanwhile): exact to the nanosecond.
    pub fn retry_after(&self) -> Duration {
        Duration::from_nanos(self.retry)
    }

    /// Time until the denying quota's bucket is full again.
    pub fn reset_after(&self) -> Duration {
        Duration::from_nanos(self.reset)
    }

    /// Index of the quota that denies longest.
    pub fn quota(&self) -> usize {
        self.quota as usize
    }
}

/// A request whose cost is larger than a quota's burst: it can never pass, however long it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a request of cost {cost} can never pass: quota #{quota} holds at most {burst}")]
pub struct CostExceedsBurst {
    /// The cost asked for.
    pub cost: u32,
    /// The burst of the smallest quota.
    pub burst: u64,
    /// Index of that quota.
    pub quota: usize,
}
