//! A breaker per master, on a Redis Cluster this test owns (3 masters + 3 replicas): one master
//! is SIGKILLed by its PID while two tasks keep calling `begin` — one on keys of the dead
//! master's slots, one on keys of the surviving masters — and a third samples `CLUSTER INFO` on
//! the survivors. The survivors' keys may fail only while Redis itself reports
//! `cluster_state:fail`; the dead master's keys are refused at once (not one timeout each) once
//! its breaker has opened, until its replica takes over.

use idem_core::{Fingerprint, IdempotencyKey, IdempotencyStore};
use idem_store_redis::RedisStore;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::cluster;

/// One `begin`: when it started and ended (since the kill), and whether Redis answered it.
#[derive(Debug, Clone, Copy)]
struct Op {
    start: Duration,
    end: Duration,
    ok: bool,
}

async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The port of the master owning `key`'s slot, asked of the cluster itself.
async fn owner(admin: &mut redis::aio::MultiplexedConnection, key: &str) -> u16 {
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(admin)
        .await
        .unwrap();
    let slots: Vec<(i64, i64, (String, i64))> = {
        let raw: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(admin)
            .await
            .unwrap();
        raw.iter()
            .map(|entry| {
                let redis::Value::Array(f) = entry else {
                    panic!("{entry:?}")
                };
                let (s, e): (i64, i64) = (
                    redis::from_redis_value(f[0].clone()).unwrap(),
                    redis::from_redis_value(f[1].clone()).unwrap(),
                );
                let node: (String, i64) = match &f[2] {
                    redis::Value::Array(n) => (
                        redis::from_redis_value(n[0].clone()).unwrap(),
                        redis::from_redis_value(n[1].clone()).unwrap(),
                    ),
                    other => panic!("{other:?}"),
                };
                (s, e, node)
            })
            .collect()
    };
    let (_, _, (_, port)) = slots
        .iter()
        .find(|(s, e, _)| (*s..=*e).contains(&slot))
        .expect("every slot is served");
    u16::try_from(*port).unwrap()
}

/// Calls `begin` on `keys` round-robin until `stop`, recording each call.
fn caller(
    store: Arc<RedisStore>,
    keys: Vec<IdempotencyKey>,
    killed: Instant,
    stop: Arc<Mutex<bool>>,
) -> tokio::task::JoinHandle<Vec<Op>> {
    tokio::spawn(async move {
        let fp = Fingerprint::of_request("POST", "/orders", b"{}");
        let mut ops = Vec::new();
        for key in keys.iter().cycle() {
            if *stop.lock() || ops.len() >= 200_000 {
                break;
            }
            let start = killed.elapsed();
            let ok = store
                .begin("fleet", key, &fp, Duration::from_secs(60))
                .await
                .is_ok();
            ops.push(Op {
                start,
                end: killed.elapsed(),
                ok,
            });
            if !ok {
                // A failing client backs off a little, as a retrying one would.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        ops
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_master_is_refused_fast_and_the_others_fail_only_while_the_cluster_does() {
    let mut cluster = cluster::start_private().expect("a private Redis Cluster");
    let urls: Vec<String> = cluster.urls.split(',').map(String::from).collect();
    let masters = retry_safe_core::redis::cluster_masters(&urls[0])
        .await
        .unwrap();
    let port = |url: &str| -> u16 { url.rsplit(':').next().unwrap().parse().unwrap() };
    let victim = port(&masters[0]);
    let survivors: Vec<String> = masters[1..].to_vec();
    let store = RedisStore::connect_cluster(urls.clone())
        .await
        .unwrap()
        .prefix("breakers");
    let mut admin = connection(&survivors[0]).await;
    let (mut dead_keys, mut live_keys) = (Vec::new(), Vec::new());
    for n in 0.. {
        if dead_keys.len() >= 4 && live_keys.len() >= 8 {
            break;
        }
        let key = IdempotencyKey::parse(format!("k-{n}").as_bytes()).unwrap();
        if owner(&mut admin, &store.record_key("fleet", &key)).await == victim {
            dead_keys.push(key);
        } else {
            live_keys.push(key);
        }
    }
    // Until the runner has read the slot map: the two groups then have breakers of their own.
    let fp = Fingerprint::of_request("POST", "/orders", b"{}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for key in dead_keys.iter().chain(&live_keys) {
            store
                .begin("fleet", key, &fp, Duration::from_secs(60))
                .await
                .unwrap();
        }
        let (a, b) = (
            store
                .runner()
                .breaker_for(&store.record_key("fleet", &dead_keys[0])),
            store
                .runner()
                .breaker_for(&store.record_key("fleet", &live_keys[0])),
        );
        if !a.same_as(&b) {
            break;
        }
        assert!(Instant::now() < deadline, "the slot map was never read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let store = Arc::new(store);
    let stop = Arc::new(Mutex::new(false));
    assert!(cluster.kill(victim), "SIGKILL the master by its PID");
    let killed = Instant::now();
    let dead = caller(store.clone(), dead_keys, killed, stop.clone());
    let live = caller(store.clone(), live_keys, killed, stop.clone());
    // `cluster_state` as the survivors report it, every 20 ms.
    let mut states: Vec<(Duration, bool)> = Vec::new();
    let mut conns = Vec::new();
    for url in &survivors {
        conns.push(connection(url).await);
    }
    let mut whole_since: Option<Duration> = None;
    while killed.elapsed() < Duration::from_secs(40) {
        for conn in &mut conns {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(conn)
                .await
                .unwrap();
            let ok = info.contains("cluster_state:ok");
            states.push((killed.elapsed(), ok));
        }
        let all_ok = states.iter().rev().take(conns.len()).all(|s| s.1);
        let failed_once = states.iter().any(|s| !s.1);
        match (all_ok && failed_once, whole_since) {
            (true, None) => whole_since = Some(killed.elapsed()),
            (false, _) => whole_since = None,
            (true, Some(since)) if killed.elapsed() - since > Duration::from_secs(3) => break,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    *stop.lock() = true;
    let (dead, live) = (dead.await.unwrap(), live.await.unwrap());
    let whole = whole_since.expect("the replica took over and the cluster became whole again");

    // Survivors: a failure is explained by a `fail` sample within 250 ms of the call.
    let margin = Duration::from_millis(250);
    let explained = |op: &Op| {
        states
            .iter()
            .any(|(t, ok)| !ok && *t + margin >= op.start && *t <= op.end + margin)
    };
    let live_failed: Vec<&Op> = live.iter().filter(|op| !op.ok).collect();
    let unexplained: Vec<&&Op> = live_failed.iter().filter(|op| !explained(op)).collect();
    let fail_time = states.iter().filter(|s| !s.1).count() as f64 * 0.02 / conns.len() as f64;
    eprintln!(
        "survivors: {} calls, {} failed ({} outside cluster_state:fail); about {fail_time:.1} s of fail; whole again {whole:?} after the kill",
        live.len(),
        live_failed.len(),
        unexplained.len()
    );
    assert!(
        unexplained.is_empty(),
        "keys of surviving masters failed while the cluster said ok: {unexplained:?}"
    );

    // The dead master: slow failures (a timeout each) only until its breaker opens and for one
    // probe per cool-down; the rest are refused at once.
    let outage: Vec<&Op> = dead.iter().filter(|op| op.end <= whole).collect();
    let slow = outage
        .iter()
        .filter(|op| !op.ok && op.end - op.start >= Duration::from_millis(500))
        .count();
    let fast = outage
        .iter()
        .filter(|op| !op.ok && op.end - op.start < Duration::from_millis(50))
        .count();
    let cool_downs = whole.as_secs() as usize + 1;
    eprintln!(
        "dead master: {} calls until whole, {slow} slow failures, {fast} refused at once",
        outage.len()
    );
    assert!(
        slow <= 3 + cool_downs + 2,
        "{slow} calls waited out a timeout; the breaker should refuse them"
    );
    assert!(
        fast > slow,
        "most calls for the dead master are refused at once"
    );
    // After the failover, the promoted replica answers for the dead master's slots.
    let after: Vec<&Op> = dead
        .iter()
        .filter(|op| op.start > whole + Duration::from_secs(2))
        .collect();
    assert!(
        !after.is_empty() && after.iter().all(|op| op.ok),
        "{after:?}"
    );
}
