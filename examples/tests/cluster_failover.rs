//! Failover on a Redis Cluster this test owns (3 masters + 3 replicas of `redis-server`, started
//! and stopped here): 8 clients run 5,000 keyed begin → "execute" → complete operations on
//! `RedisStore`; when 1,500 are done one master is SIGKILLed by its PID. Clients retry an
//! operation that failed (as an HTTP client would retry its request with the same key). Reported:
//! failed operations, the time until the dead master's slots answer again (its replica promoted),
//! keys executed twice, and keys executed again *after their completion was acknowledged*. Run
//! twice — with durable completion (`WAIT` 1 replica) that last count must be 0; without it, it is
//! measured (Redis replication is asynchronous: a record acknowledged by the master alone can die
//! with it).

use idem_core::{
    BeginOutcome, Fingerprint, IdempotencyKey, IdempotencyStore, StoreError, StoredResponse,
};
use idem_store_redis::{redis, RedisStore};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::cluster;

const OPS: usize = 5_000;
const WORKERS: usize = 8;
const KILL_AFTER: usize = 1_500;
const LEASE: Duration = Duration::from_secs(2);

/// What one run found (printed whole; the assertions read some).
#[derive(Debug)]
#[allow(dead_code)]
struct Report {
    failed_ops: u64,
    unreplicated: u64,
    /// From the kill to `cluster_state:ok` again (the replica promoted).
    recovery: Duration,
    /// From the kill to the last failed operation.
    last_failure: Duration,
    /// Keys that ran more than once in all.
    executed_twice: usize,
    /// Keys that ran again after `complete` had returned Ok for them.
    rerun_after_ack: usize,
    elapsed: Duration,
}

async fn run(durable: bool) -> Report {
    let mut cluster = cluster::start_private().expect("a private Redis Cluster");
    let urls: Vec<String> = cluster.urls.split(',').map(String::from).collect();
    let masters = retry_safe_core::redis::cluster_masters(&urls[0])
        .await
        .unwrap();
    let mut store = RedisStore::connect_cluster(urls.clone())
        .await
        .unwrap()
        .prefix("failover");
    if durable {
        // After the failover the promoted replica has no replica of its own: its completions wait
        // out this timeout and report Unreplicated.
        store = store.durable_completion(1, Duration::from_millis(10));
    }
    let store = Arc::new(store);
    // Per key: executions, and whether a `complete` of it returned Ok (the store acknowledged it).
    let executions = Arc::new(Mutex::new(HashMap::<usize, (u32, bool)>::new()));
    let rerun_after_ack = Arc::new(AtomicUsize::new(0));
    let (done, failed, unreplicated) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let last_failure = Arc::new(Mutex::new(None::<Instant>));
    // The master to kill, by PID, from the worker whose operation is the 1,500th to finish (so
    // that the kill lands mid-run however the tasks are scheduled).
    let victim_port: u16 = masters[0].rsplit(':').next().unwrap().parse().unwrap();
    let victim = cluster
        .pid(victim_port)
        .expect("the master is this test's process");
    let killed_at = Arc::new(Mutex::new(None::<Instant>));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let rerun_after_ack = rerun_after_ack.clone();
            let (store, executions, done, failed, unreplicated, last_failure, killed_at) = (
                store.clone(),
                executions.clone(),
                done.clone(),
                failed.clone(),
                unreplicated.clone(),
                last_failure.clone(),
                killed_at.clone(),
            );
            tokio::spawn(async move {
                let fp = Fingerprint::of_request("POST", "/orders", b"{}");
                let response = StoredResponse {
                    status: 201,
                    headers: vec![],
                    body: "created".into(),
                    trailers: Vec::new(),
                };
                for i in (w..OPS).step_by(WORKERS) {
                    let key = IdempotencyKey::parse(format!("op-{i}").as_bytes()).unwrap();
                    loop {
                        assert!(Instant::now() < deadline, "key op-{i} never completed");
                        let outcome = store.begin("fleet", &key, &fp, LEASE).await;
                        let fence = match outcome {
                            Ok(BeginOutcome::Acquired { fence }) => fence,
                            Ok(BeginOutcome::Completed(_)) => break,
                            Ok(BeginOutcome::InFlight { retry_after }) => {
                                tokio::time::sleep(retry_after.max(Duration::from_millis(20)))
                                    .await;
                                continue;
                            }
                            Ok(other) => panic!("op-{i}: {other:?}"),
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                *last_failure.lock() = Some(Instant::now());
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        };
                        {
                            let mut executions = executions.lock();
                            let entry = executions.entry(i).or_default();
                            entry.0 += 1;
                            if entry.1 {
                                // Its completion was acknowledged, and yet it runs again: the
                                // record was lost with the master.
                                rerun_after_ack.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        match store
                            .complete("fleet", &key, fence, &response, Duration::from_secs(600))
                            .await
                        {
                            Ok(()) => {
                                executions.lock().entry(i).or_default().1 = true;
                                break;
                            }
                            Err(StoreError::Unreplicated { .. }) => {
                                // Stored on the master, not on a replica in time (the promoted
                                // one has none until the dead node is back): a retry finds it
                                // replayed — or, had this master died too, would run it again.
                                unreplicated.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                *last_failure.lock() = Some(Instant::now());
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                    if done.fetch_add(1, Ordering::Relaxed) + 1 == KILL_AFTER {
                        let status = std::process::Command::new("kill")
                            .args(["-KILL", &victim.to_string()])
                            .status()
                            .unwrap();
                        assert!(status.success(), "kill -KILL {victim}");
                        *killed_at.lock() = Some(Instant::now());
                    }
                }
            })
        })
        .collect();
    // The operator's part: once the cluster is whole again (the replica promoted), the dead node
    // is restarted and rejoins as a replica of its successor.
    let kill_seen = loop {
        if let Some(at) = *killed_at.lock() {
            break at;
        }
        assert!(Instant::now() < deadline, "the kill never came");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let survivor = masters
        .iter()
        .find(|m| !m.ends_with(&format!(":{victim_port}")))
        .unwrap()
        .clone();
    let recovery = loop {
        let mut conn = redis::Client::open(survivor.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut conn)
            .await
            .unwrap();
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut conn)
            .await
            .unwrap();
        // The dead master is marked failed (not just suspected) and every slot is served again.
        let failed_over = nodes.lines().any(|l| {
            l.contains(&format!(":{victim_port}@"))
                && l.split(' ')
                    .nth(2)
                    .is_some_and(|f| f.split(',').any(|x| x == "fail"))
        });
        if failed_over && info.contains("cluster_state:ok") {
            break kill_seen.elapsed();
        }
        assert!(Instant::now() < deadline, "the cluster never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cluster.restart(victim_port).unwrap();
    for w in workers {
        w.await.unwrap();
    }
    let executions = executions.lock();
    assert_eq!(executions.len(), OPS, "every key executed at least once");
    let last_failure = last_failure
        .lock()
        .map_or(Duration::ZERO, |t| t.saturating_duration_since(kill_seen));
    drop(cluster);
    Report {
        failed_ops: failed.load(Ordering::Relaxed),
        unreplicated: unreplicated.load(Ordering::Relaxed),
        recovery,
        last_failure,
        executed_twice: executions.values().filter(|(n, _)| *n > 1).count(),
        rerun_after_ack: rerun_after_ack.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_master_mid_run_loses_no_completed_key_with_durable_completion() {
    let fast = run(false).await;
    eprintln!("failover, asynchronous replication: {fast:?}");
    let durable = run(true).await;
    eprintln!("failover, durable completion (WAIT 1): {durable:?}");
    assert_eq!(
        durable.rerun_after_ack, 0,
        "a key whose completion was acknowledged ran again despite WAIT: {durable:?}"
    );
    assert!(
        durable.failed_ops > 0 && fast.failed_ops > 0,
        "the kill was felt: {fast:?} {durable:?}"
    );
    assert!(durable.recovery < Duration::from_secs(30), "{durable:?}");
}
