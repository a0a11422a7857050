//! The relay to the real NATS JetStream of `NATS_URL` and the consumer half: the event id as
//! `Nats-Msg-Id` so the stream stores a re-publish once, a missing stream retried, a consumer
//! that dies after its effect and before its ack applying it once, poison messages dead-lettered,
//! and a broker killed and restarted mid-relay losing nothing.
//!
//! Every test uses a stream and a schema of its own, deleted at the end.

mod common;
#[path = "common/jetstream.rs"]
mod js;
#[path = "common/pg.rs"]
mod pg;

use js::{ids_of, PrivateNats, TestStream};
use outbox::sqlx::{self, PgConnection};
use outbox::{Consumed, NatsConsumer, NatsSink, Outbox, PgInbox, Relay, Schedule};
use pg::TestDb;
use std::collections::HashMap;
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);

async fn enqueue(db: &TestDb, n: usize, aggregates: usize) {
    for i in 0..n {
        let agg = format!("agg{}", i % aggregates);
        let e = common::event(&format!("e{:04}", i), Some(&agg));
        db.outbox.enqueue(&e).await.unwrap();
    }
}

/// Runs `relay` until the outbox has nothing pending (at most `rounds` rounds).
async fn drain<S: outbox::Sink>(relay: &Relay<outbox::PostgresOutbox, S>, rounds: usize) {
    for _ in 0..rounds {
        relay.run_once().await.unwrap();
        if relay.outbox().stats().await.unwrap().pending == 0 {
            return;
        }
    }
    panic!(
        "still pending after {rounds} rounds: {:?}",
        relay.outbox().stats().await
    );
}

fn sink(stream: &TestStream) -> NatsSink {
    NatsSink::new(stream.js.clone()).subject_prefix(&stream.prefix)
}

#[tokio::test]
async fn a_republished_event_is_stored_once_and_each_aggregate_keeps_its_order() {
    let db = TestDb::new("nats_dedupe").await;
    let stream = TestStream::new(&js::nats_url(), "dedupe").await;
    enqueue(&db, 200, 10).await;

    // A relay that published a batch and died before settling it.
    let claimed = db.outbox.claim(50, LEASE).await.unwrap();
    let events: Vec<_> = claimed.iter().map(|c| &c.event).collect();
    use outbox::Sink;
    assert!(sink(&stream)
        .publish(&events)
        .await
        .iter()
        .all(Result::is_ok));
    db.offset.advance(LEASE + Duration::from_secs(1));

    let relay = Relay::new(db.outbox.clone(), sink(&stream)).batch(64);
    drain(&relay, 100).await;
    assert_eq!(
        stream.messages().await,
        200,
        "the re-published batch is stored once"
    );

    let consumer = stream.consumer("check", Duration::from_secs(30)).await;
    let mut by_agg: HashMap<String, Vec<String>> = HashMap::new();
    let mut total = 0;
    while total < 200 {
        let batch = TestStream::fetch(&consumer, 200, Duration::from_secs(2)).await;
        assert!(!batch.is_empty(), "the stream ran dry at {total}");
        for m in &batch {
            let (id, agg) = ids_of(m);
            by_agg.entry(agg.unwrap()).or_default().push(id);
            m.ack().await.unwrap();
        }
        total += batch.len();
    }
    for (agg, ids) in by_agg {
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "{agg}: stream order is enqueue order");
    }
    stream.delete().await;
    db.drop().await;
}

#[tokio::test]
async fn events_for_a_missing_stream_wait_on_the_schedule_and_go_once_it_exists() {
    let db = TestDb::new("nats_missing").await;
    let stream = TestStream::new(&js::nats_url(), "missing").await;
    let js = stream.js.clone();
    js.delete_stream(&stream.name).await.unwrap();
    enqueue(&db, 5, 5).await;
    let schedule = Schedule::new([Duration::from_secs(10)]).jitter(0.0);
    let relay = Relay::new(db.outbox.clone(), sink(&stream)).schedule(schedule);
    let round = relay.run_once().await.unwrap();
    assert_eq!((round.claimed, round.retried), (5, 5), "{round:?}");
    let status = db.outbox.status("orders", "e0000").await.unwrap().unwrap();
    assert!(status.last_error.is_some(), "{status:?}");
    stream.create().await;
    assert_eq!(relay.run_once().await.unwrap().claimed, 0, "backing off");
    db.offset.advance(Duration::from_secs(11));
    assert_eq!(relay.run_once().await.unwrap().published, 5);
    assert_eq!(stream.messages().await, 5);
    stream.delete().await;
    db.drop().await;
}

#[tokio::test]
async fn an_event_for_a_wildcard_subject_is_a_dead_letter_at_once() {
    let db = TestDb::new("nats_wildcard").await;
    let stream = TestStream::new(&js::nats_url(), "wildcard").await;
    let bad = outbox::Event::new("orders.*", "w1", "{}").unwrap();
    db.outbox.enqueue(&bad).await.unwrap();
    enqueue(&db, 1, 1).await;
    let round = Relay::new(db.outbox.clone(), sink(&stream))
        .run_once()
        .await
        .unwrap();
    assert_eq!((round.published, round.dead), (1, 1), "{round:?}");
    let dead = db.outbox.dead_letters(10).await.unwrap();
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("not a subject"),
        "{dead:?}"
    );
    stream.delete().await;
    db.drop().await;
}

async fn count(tx: &mut PgConnection, id: String) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO effects (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = effects.n + 1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map(drop)
}

async fn effects_table(db: &TestDb) {
    sqlx::query("CREATE TABLE effects (id text PRIMARY KEY, n integer NOT NULL)")
        .execute(db.outbox.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_consumer_that_dies_after_its_effect_and_before_its_ack_applies_it_once() {
    let db = TestDb::new("nats_consumer").await;
    effects_table(&db).await;
    let stream = TestStream::new(&js::nats_url(), "consumer").await;
    enqueue(&db, 30, 30).await;
    drain(&Relay::new(db.outbox.clone(), sink(&stream)), 10).await;
    let inbox = PgInbox::new(db.outbox.pool().clone(), "read-model");
    let pull = stream.consumer("read-model", Duration::from_secs(1)).await;

    // The first consumer runs every effect through the inbox, then dies without acking.
    let first = TestStream::fetch(&pull, 30, Duration::from_secs(2)).await;
    assert_eq!(first.len(), 30);
    for m in &first {
        let (id, _) = ids_of(m);
        let done = inbox
            .handle(&id, async |tx| count(tx, id.clone()).await)
            .await;
        assert!(matches!(done, Ok(outbox::Handled::Applied(()))));
    }
    drop(first);

    // The next one gets them again after the ack wait: duplicates, acked, nothing applied.
    let consumer = NatsConsumer::new(inbox, stream.js.clone(), "dead.");
    let mut duplicates = 0;
    for _ in 0..10 {
        for m in TestStream::fetch(&pull, 30, Duration::from_secs(2)).await {
            let id = ids_of(&m).0;
            let done = consumer.handle(&m, async |tx| count(tx, id).await).await;
            assert_eq!(done.unwrap(), Consumed::Duplicate);
            duplicates += 1;
        }
        if duplicates == 30 {
            break;
        }
    }
    assert_eq!(duplicates, 30);
    let applied: Vec<i32> = sqlx::query_scalar("SELECT n FROM effects")
        .fetch_all(db.outbox.pool())
        .await
        .unwrap();
    assert_eq!(applied.len(), 30);
    assert!(
        applied.iter().all(|&n| n == 1),
        "each effect once: {applied:?}"
    );
    stream.delete().await;
    db.drop().await;
}

#[tokio::test]
async fn a_poison_message_goes_to_the_dead_letter_subject_after_its_last_delivery() {
    let db = TestDb::new("nats_poison").await;
    let stream = TestStream::new(&js::nats_url(), "poison").await;
    let dead = TestStream::new(&js::nats_url(), "poison_dlq").await;
    enqueue(&db, 1, 1).await;
    drain(&Relay::new(db.outbox.clone(), sink(&stream)), 10).await;
    let inbox = PgInbox::new(db.outbox.pool().clone(), "poisoned");
    let consumer =
        NatsConsumer::new(inbox.clone(), stream.js.clone(), &dead.prefix).max_deliveries(3);
    let pull = stream.consumer("poisoned", Duration::from_secs(30)).await;
    let mut outcomes = Vec::new();
    for _ in 0..20 {
        for m in TestStream::fetch(&pull, 1, Duration::from_secs(2)).await {
            let done = consumer
                .handle(&m, async |_tx| Err::<(), _>("cannot parse"))
                .await;
            outcomes.push(done.unwrap());
        }
        if matches!(outcomes.last(), Some(Consumed::DeadLettered(_))) {
            break;
        }
    }
    let retries = outcomes
        .iter()
        .filter(|o| matches!(o, Consumed::Retry(_)))
        .count();
    assert_eq!(retries, 2, "{outcomes:?}");
    assert!(matches!(outcomes.last(), Some(Consumed::DeadLettered(e)) if e == "cannot parse"));
    assert_eq!(dead.messages().await, 1);
    let dlq = dead.consumer("inspect", Duration::from_secs(30)).await;
    let letter = TestStream::fetch(&dlq, 1, Duration::from_secs(2)).await;
    let h = letter[0].headers.as_ref().unwrap();
    assert_eq!(h.get("Outbox-Error").unwrap().as_str(), "cannot parse");
    assert_eq!(ids_of(&letter[0]).0, "e0000");
    assert!(
        !inbox.seen("e0000").await.unwrap(),
        "a dead letter was never applied"
    );
    stream.delete().await;
    dead.delete().await;
    db.drop().await;
}

/// The broker SIGKILLed between rounds and mid-round, then restarted on its store: every event
/// stored once.
#[tokio::test]
async fn a_broker_killed_and_restarted_mid_relay_loses_and_repeats_nothing() {
    let db = TestDb::new("nats_restart").await;
    let mut nats = PrivateNats::start();
    let stream = TestStream::new(&nats.url(), "restart").await;
    enqueue(&db, 300, 30).await;
    let schedule = Schedule::new([Duration::from_secs(1); 20]).jitter(0.0);
    let relay = Relay::new(db.outbox.clone(), sink(&stream))
        .batch(20)
        .schedule(schedule);
    relay.run_once().await.unwrap();
    nats.kill();
    let round = relay.run_once().await.unwrap();
    assert_eq!(
        round.published, 0,
        "nothing confirmed while the broker is gone: {round:?}"
    );
    nats.restart();
    for _ in 0..200 {
        db.offset.advance(Duration::from_secs(2));
        relay.run_once().await.unwrap();
        if db.outbox.stats().await.unwrap().pending == 0 {
            break;
        }
    }
    let stats = db.outbox.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.published, stats.dead),
        (0, 300, 0),
        "{stats:?}"
    );
    assert_eq!(stream.messages().await, 300);
    stream.delete().await;
    db.drop().await;
}
