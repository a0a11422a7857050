//! The `outbox` command against the real PostgreSQL and NATS JetStream: a relay process
//! SIGKILLed with a claimed batch in hand and two more relays started on the same outbox — every event stored in the stream once,
//! each aggregate's events in order, nothing dead; SIGTERM stops a relay cleanly; dead letters
//! listed and replayed from the command line; a bad command line refused with exit code 2.

mod common;
#[path = "common/jetstream.rs"]
mod js;
#[path = "common/pg.rs"]
mod pg;

use js::{ids_of, TestStream};
use outbox::{Outbox, Outcome, Settlement};
use pg::TestDb;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EVENTS: usize = 2_000;

fn relay(db: &TestDb, stream: &TestStream) -> Child {
    Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args([
            "relay",
            "--database-url",
            &db.url,
            "--nats",
            &js::nats_url(),
        ])
        .args(["--subject-prefix", &stream.prefix])
        .args(["--batch", "50", "--lease-ms", "2000", "--poll-ms", "10"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits (at most `limit`) until `done` holds of the outbox's stats.
async fn wait_for(db: &TestDb, limit: Duration, done: impl Fn(&outbox::OutboxStats) -> bool) {
    let start = Instant::now();
    loop {
        let stats = db.outbox.stats().await.unwrap();
        if done(&stats) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "not reached in {limit:?}: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Events claimed and not settled: their lease is running.
async fn leased(db: &TestDb) -> i64 {
    outbox::sqlx::query_scalar(
        "SELECT count(*) FROM outbox_events WHERE state = 1 AND due_at > clock_timestamp()",
    )
    .fetch_one(db.outbox.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_batch_loses_and_repeats_nothing_and_keeps_each_aggregates_order() {
    let db = TestDb::new("crash").await;
    let stream = TestStream::new(&js::nats_url(), "crash").await;
    for i in 0..EVENTS {
        let e = common::event(&format!("e{i:05}"), Some(&format!("agg{}", i % 100)));
        db.outbox.enqueue(&e).await.unwrap();
    }
    // Relay A alone until it has published some and, frozen by SIGSTOP, holds a claimed batch.
    let mut a = relay(&db, &stream);
    wait_for(&db, Duration::from_secs(60), |s| s.published >= 100).await;
    let mut held = 0;
    for _ in 0..50 {
        assert!(testkit::signal(a.id(), "STOP"));
        held = leased(&db).await;
        if held > 0 {
            break;
        }
        assert!(testkit::signal(a.id(), "CONT"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(held > 0, "relay A never held a batch");
    a.kill().unwrap(); // SIGKILL, by the PID this test started, with the batch in hand
    a.wait().unwrap();
    let b = relay(&db, &stream);
    let c = relay(&db, &stream);
    wait_for(&db, Duration::from_secs(120), |s| s.pending == 0).await;
    for mut relay in [b, c] {
        assert!(testkit::signal(relay.id(), "TERM"));
        let status = relay.wait().unwrap();
        assert!(
            status.success(),
            "a relay stops cleanly on SIGTERM: {status}"
        );
    }
    let stats = db.outbox.stats().await.unwrap();
    assert_eq!(
        (stats.published, stats.dead),
        (EVENTS as u64, 0),
        "{stats:?}"
    );
    assert_eq!(
        stream.messages().await,
        EVENTS as u64,
        "each event stored once"
    );

    let consumer = stream.consumer("check", Duration::from_secs(60)).await;
    let mut by_agg: HashMap<String, Vec<String>> = HashMap::new();
    let mut seen = 0;
    while seen < EVENTS {
        let batch = TestStream::fetch(&consumer, 500, Duration::from_secs(2)).await;
        assert!(!batch.is_empty(), "the stream ran dry at {seen}");
        for m in &batch {
            let (id, agg) = ids_of(m);
            by_agg.entry(agg.unwrap()).or_default().push(id);
            m.ack().await.unwrap();
        }
        seen += batch.len();
    }
    for (agg, ids) in by_agg {
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "{agg}: published in enqueue order");
    }
    stream.delete().await;
    db.drop().await;
}

fn outbox_cmd(db: &TestDb, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_outbox"))
        .args(args)
        .args(["--database-url", &db.url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_from_the_command_line() {
    let db = TestDb::new("cli").await;
    for id in ["d1", "d2", "ok"] {
        db.outbox.enqueue(&common::event(id, None)).await.unwrap();
    }
    let claimed = db.outbox.claim(10, Duration::from_secs(30)).await.unwrap();
    let settlements: Vec<_> = claimed
        .iter()
        .map(|c| {
            let outcome = if c.event.id == "ok" {
                Outcome::Published
            } else {
                Outcome::Dead("max payload exceeded".into())
            };
            Settlement::new(c, outcome)
        })
        .collect();
    db.outbox.settle(&settlements).await.unwrap();

    let (code, stats) = outbox_cmd(&db, &["stats"]);
    assert_eq!(code, 0);
    assert!(stats.contains("\"published\":1,\"dead\":2"), "{stats}");
    let (code, dead) = outbox_cmd(&db, &["dead"]);
    assert_eq!(code, 0);
    assert_eq!(dead.lines().count(), 2, "{dead}");
    assert!(
        dead.contains("orders\td1\t1\tmax payload exceeded"),
        "{dead}"
    );
    let (code, one) = outbox_cmd(&db, &["replay", "--topic", "orders", "--id", "d1"]);
    assert_eq!((code, one.trim()), (0, "{\"replayed\":1}"));
    let (code, rest) = outbox_cmd(&db, &["replay", "--all"]);
    assert_eq!((code, rest.trim()), (0, "{\"replayed\":1}"));
    let stats = db.outbox.stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead), (2, 0));

    let (code, _) = outbox_cmd(&db, &["replay"]);
    assert_eq!(code, 2, "replay without --all or --topic is a usage error");
    let (code, _) = outbox_cmd(&db, &["relay", "--batch", "many", "--nats", "x"]);
    assert_eq!(code, 2, "a bad number is a usage error");
    let (code, _) = outbox_cmd(&db, &["launch"]);
    assert_eq!(code, 2);
    db.drop().await;
}
