//! RedisLimiter on the Redis Cluster of `REDIS_CLUSTER_URLS` (`cargo xtask test` starts one):
//! the reference model on the cluster, one fleet limit across two limiters with keys on every
//! master, and a single-node client on a cluster node refused as misconfigured — under fail-open,
//! with no decision taken locally.

mod common;
mod fleet;

use common::{quota_sets, quotas_of, streams, Model, Outcome};
use proptest::prelude::*;
use ratelimit_token_bucket::{
    BackendError, Clock, Error, FailMode, Lease, LeasedLimiter, ManualClock, Quota, Quotas,
    RedisLimiter,
};
use std::time::Duration;
use testkit::{cluster_urls, keys_per_master};

fn unique(name: &str) -> String {
    testkit::unique("ctest:rl", name)
}

async fn cluster_limiter(prefix: &str, quotas: Quotas) -> RedisLimiter {
    RedisLimiter::connect_cluster(cluster_urls(), quotas)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the Redis Cluster at {:?} is not reachable: {e}",
                cluster_urls()
            )
        })
        .prefix(prefix)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(24)
    ))]

    /// The same stream at the same pinned times: the cluster and the reference bucket agree on
    /// every decision.
    #[test]
    fn the_cluster_agrees_with_the_reference_model(set in quota_sets(), stream in streams(), start in 0u64..1_000_000_000) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let clock = ManualClock::at(Duration::from_secs(1_764_000_000) + Duration::from_nanos(start));
        let limiter = rt.block_on(cluster_limiter(&unique("model"), quotas_of(&set))).pin_time(clock.clone());
        let mut model = Model::new(&set);
        for (i, &(key, gap, cost)) in stream.iter().enumerate() {
            clock.advance(Duration::from_nanos(gap));
            let got: Outcome = rt.block_on(limiter.check(&key, cost)).into();
            prop_assert_eq!(got, model.check(key, clock.now_nanos(), cost), "request {} of {:?}", i, stream);
        }
    }
}

/// Two limiters (two servers) on one cluster share one limit per key: of 10 requests per key
/// spread over both, exactly the burst of 5 passes — for 200 keys, whose state lands on all
/// three masters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_fleet_limit_with_keys_on_every_master() {
    let prefix = unique("fleet");
    let quotas = || Quotas::new([Quota::per_hour(5).burst(5)]).unwrap();
    let a = cluster_limiter(&prefix, quotas())
        .await
        .fail_mode(FailMode::Open);
    let b = cluster_limiter(&prefix, quotas())
        .await
        .fail_mode(FailMode::Open);
    let mut allowed = 0;
    for key in 0..200 {
        for i in 0..10 {
            let limiter = if i % 2 == 0 { &a } else { &b };
            allowed += usize::from(limiter.check(&key, 1).await.unwrap().is_allowed());
        }
    }
    assert_eq!(allowed, 200 * 5, "exactly the fleet burst per key");
    assert_eq!(a.fallback_decisions() + b.fallback_decisions(), 0);
    let per_master = keys_per_master(&format!("{prefix}:")).await;
    assert_eq!(per_master.len(), 3, "{per_master:?}");
    assert!(
        per_master.iter().all(|n| *n > 0),
        "state on every master: {per_master:?}"
    );
    assert_eq!(per_master.iter().sum::<usize>(), 200);
}

/// A single-node client on one cluster node: the keys of other masters' slots are
/// `BackendError::Misconfigured`, even with `FailMode::Open` — no local decision is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_client_on_a_cluster_node_never_decides_locally() {
    let node = retry_safe_core::redis::cluster_masters(&cluster_urls()[0])
        .await
        .unwrap()[0]
        .clone();
    let limiter = RedisLimiter::connect(&node, Quotas::new([Quota::per_second(5)]).unwrap())
        .await
        .unwrap()
        .prefix(&unique("misrouted"))
        .fail_mode(FailMode::Open);
    let (mut decided, mut misconfigured) = (0, 0);
    for key in 0..60 {
        match limiter.check(&key, 1).await {
            Ok(_) => decided += 1,
            Err(Error::Backend(BackendError::Misconfigured(e))) => {
                misconfigured += 1;
                assert!(e.to_string().contains("MOVED"), "{e}");
            }
            Err(other) => panic!("expected Misconfigured, got {other:?}"),
        }
    }
    assert!(
        decided > 0 && misconfigured > 0,
        "{decided} decided on this node, {misconfigured} misrouted"
    );
    assert_eq!(
        limiter.fallback_decisions(),
        0,
        "no decision was taken locally"
    );
}

/// Three servers in leased mode on one cluster, 2,000 requests at 2.5× the limit for one key:
/// over every window the fleet admits at most `burst + w / interval + 3 × max_held`.
#[tokio::test]
async fn three_leased_servers_stay_within_the_overshoot_bound_on_a_cluster() {
    let clock = ManualClock::at(Duration::from_secs(1_764_000_000));
    let prefix = unique("leased");
    let quotas = Quotas::new([Quota::per_second(50).burst(20)]).unwrap();
    let lease = Lease::new(6).ttl(Duration::from_millis(200));
    let mut servers = Vec::new();
    for _ in 0..3 {
        let fleet = cluster_limiter(&prefix, quotas.clone())
            .await
            .pin_time(clock.clone());
        servers.push(LeasedLimiter::with_clock(fleet, lease, clock.clone()));
    }
    let report = fleet::run(&servers, &clock, 2_000, Duration::from_millis(8), 11).await;
    println!("{report:?}");
    assert!(report.worst_excess <= report.bound as i64, "{report:?}");
    assert!(
        report.local > 0 && report.local + report.calls >= report.requests as u64,
        "every request is decided locally or by a call, and some locally: {report:?}"
    );
    assert!(
        report.admitted as f64 >= 0.8 * (20.0 + 50.0 * 8.0),
        "{report:?}"
    );
}
