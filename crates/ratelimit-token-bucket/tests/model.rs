//! The in-memory limiters against a reference token bucket, for random quotas and streams.

mod common;

use common::{quota_sets, quotas_of, streams, Model, Outcome};
use proptest::prelude::*;
use ratelimit_token_bucket::{Clock, DirectLimiter, KeyedLimiter, ManualClock};
use std::time::Duration;

proptest! {
    #[test]
    fn the_keyed_limiter_decides_as_a_token_bucket(set in quota_sets(), stream in streams()) {
        let clock = ManualClock::at(Duration::from_secs(3600));
        let limiter = KeyedLimiter::with_shards(quotas_of(&set), clock.clone(), 2);
        let mut model = Model::new(&set);
        for (i, &(key, gap, cost)) in stream.iter().enumerate() {
            clock.advance(Duration::from_nanos(gap));
            let got: Outcome = limiter.check(&key, cost).map_err(Into::into).into();
            let want = model.check(key, clock.now_nanos(), cost);
            prop_assert_eq!(got, want, "request {} of {:?}", i, stream);
            if i % 17 == 0 {
                limiter.retain_recent(); // sweeping never changes a decision
            }
        }
    }

    #[test]
    fn the_direct_limiter_decides_as_a_token_bucket(set in quota_sets(), stream in streams()) {
        let clock = ManualClock::at(Duration::from_secs(1));
        let limiter = DirectLimiter::with_clock(quotas_of(&set), clock.clone());
        let mut model = Model::new(&set);
        for &(_, gap, cost) in &stream {
            clock.advance(Duration::from_nanos(gap));
            let got: Outcome = limiter.check(cost).map_err(Into::into).into();
            prop_assert_eq!(got, model.check(0, clock.now_nanos(), cost));
        }
    }
}
