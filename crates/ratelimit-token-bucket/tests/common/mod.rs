//! A reference token bucket, written as a bucket (not as GCRA), for the model tests.
#![allow(dead_code)]

use proptest::prelude::*;
use ratelimit_token_bucket::{Quota, Quotas};
use std::collections::HashMap;
use std::time::Duration;

/// What any limiter must answer, reduced to comparable numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Passed: (quota, remaining, reset_after).
    Allowed(usize, u64, Duration),
    /// Limited: (quota, retry_after, reset_after).
    Limited(usize, Duration, Duration),
    /// The cost can never pass.
    TooCostly,
}

impl From<Result<ratelimit_token_bucket::Decision, ratelimit_token_bucket::Error>> for Outcome {
    fn from(r: Result<ratelimit_token_bucket::Decision, ratelimit_token_bucket::Error>) -> Self {
        match r {
            Ok(d) => d.into(),
            Err(ratelimit_token_bucket::Error::CostExceedsBurst(_)) => Outcome::TooCostly,
            Err(e) => panic!("unexpected limiter error: {e}"),
        }
    }
}

impl From<ratelimit_token_bucket::Decision> for Outcome {
    fn from(d: ratelimit_token_bucket::Decision) -> Self {
        match d {
            ratelimit_token_bucket::Decision::Allowed(a) => {
                Outcome::Allowed(a.quota(), a.remaining(), a.reset_after())
            }
            ratelimit_token_bucket::Decision::Limited(l) => {
                Outcome::Limited(l.quota(), l.retry_after(), l.reset_after())
            }
        }
    }
}

/// Buckets holding nanoseconds of credit: `capacity = burst × T`, refilled one per nanosecond,
/// a request of cost n takes n × T.
#[derive(Debug)]
pub struct Model {
    params: Vec<(u64, u64)>,
    buckets: HashMap<u32, Vec<(u64, u64)>>, // per key, per quota: (credit, last refill time)
}

impl Model {
    pub fn new(quotas: &[Quota]) -> Self {
        let params = quotas
            .iter()
            .map(|q| {
                let t = q.interval().as_nanos() as u64;
                (t, t * q.burst_size())
            })
            .collect();
        Self {
            params,
            buckets: HashMap::new(),
        }
    }

    pub fn check(&mut self, key: u32, now: u64, cost: u32) -> Outcome {
        let cost = u64::from(cost);
        if self.params.iter().any(|&(t, cap)| cost * t > cap) {
            return Outcome::TooCostly;
        }
        let params = self.params.clone();
        let buckets = self
            .buckets
            .entry(key)
            .or_insert_with(|| params.iter().map(|&(_, cap)| (cap, 0)).collect());
        for (b, &(_, cap)) in buckets.iter_mut().zip(&params) {
            if now > b.1 {
                b.0 = (b.0 + (now - b.1)).min(cap);
                b.1 = now;
            }
        }
        // A bucket that lacks credit denies; the longest wait (first on ties) is reported.
        let mut worst: Option<(u64, usize, u64)> = None;
        for (i, (b, &(t, cap))) in buckets.iter().zip(&params).enumerate() {
            let need = cost * t;
            // A clock that went back leaves `last` ahead: credit accrues only from `last` on.
            let credit = b.0.saturating_sub(b.1.saturating_sub(now));
            if need > credit {
                let wait = need - credit;
                if worst.is_none_or(|(w, _, _)| wait > w) {
                    worst = Some((wait, i, cap - credit));
                }
            }
        }
        if let Some((wait, i, reset)) = worst {
            return Outcome::Limited(i, Duration::from_nanos(wait), Duration::from_nanos(reset));
        }
        let mut tightest: Option<(u64, usize, u64)> = None;
        for (i, (b, &(t, cap))) in buckets.iter_mut().zip(&params).enumerate() {
            b.0 -= cost * t;
            let remaining = b.0 / t;
            if tightest.is_none_or(|(r, _, _)| remaining < r) {
                tightest = Some((remaining, i, cap - b.0));
            }
        }
        let (remaining, i, reset) = tightest.unwrap();
        Outcome::Allowed(i, remaining, Duration::from_nanos(reset))
    }
}

/// One request of a random stream: (key, nanoseconds since the previous request, cost).
pub type Step = (u32, u64, u32);

/// Random quota sets with small bursts, so streams hit the limits often.
pub fn quota_sets() -> impl Strategy<Value = Vec<Quota>> {
    let quota = (1u64..=20, 1u64..=2000, 1u64..=8).prop_map(|(rate, period_ms, burst)| {
        Quota::new(rate, Duration::from_millis(period_ms)).burst(burst)
    });
    proptest::collection::vec(quota, 1..=3)
}

/// Random request streams over 4 keys, with gaps up to 300 ms; costs are mostly 1 or 2, sometimes
/// up to 9 (above some bursts).
pub fn streams() -> impl Strategy<Value = Vec<Step>> {
    let cost = prop_oneof![8 => 0u32..3, 1 => 0u32..10];
    let gap = prop_oneof![3 => Just(0u64), 5 => 0u64..300_000_000];
    proptest::collection::vec((0u32..4, gap, cost), 1..120)
}

pub fn quotas_of(set: &[Quota]) -> Quotas {
    Quotas::new(set.iter().copied()).expect("generated quotas are valid")
}
