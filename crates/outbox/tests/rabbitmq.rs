//! The relay to the real RabbitMQ of `AMQP_URL` (default amqp://guest:guest@127.0.0.1:5672/%2f)
//! and the consumer half: publisher confirms into a quorum queue, an unroutable message retried
//! until its queue exists, a consumer that dies after its effect and before its ack (and a
//! relay's re-publish, which RabbitMQ does not deduplicate) applying each effect once, and a
//! poison message dead-lettered by the broker after its last delivery.
//!
//! Every test declares queues of its own and deletes them at the end.

mod common;
#[path = "common/pg.rs"]
mod pg;

use outbox::lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use outbox::lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use outbox::lapin::{Channel, Connection, ConnectionProperties};
use outbox::sqlx::{self, PgConnection};
use outbox::{Consumed, Event, Outbox, PgInbox, RabbitConsumer, RabbitSink, Relay, Schedule, Sink};
use pg::TestDb;
use std::time::Duration;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn connect() -> Connection {
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RabbitMQ is not reachable at {} ({e}); run `cargo xtask test`, which starts it",
                amqp_url()
            )
        })
}

fn queue_name(name: &str) -> String {
    testkit::unique("t_outbox", name).replace(':', "_")
}

/// A durable quorum queue, dead-lettering to `dlq` when given.
async fn quorum_queue(channel: &Channel, name: &str, dlq: Option<&str>) {
    let mut args = FieldTable::default();
    let s = |v: &str| AMQPValue::LongString(LongString::from(v));
    args.insert(ShortString::from("x-queue-type"), s("quorum"));
    if let Some(dlq) = dlq {
        args.insert(ShortString::from("x-dead-letter-exchange"), s(""));
        args.insert(ShortString::from("x-dead-letter-routing-key"), s(dlq));
    }
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(ShortString::from(name), durable, args)
        .await
        .unwrap();
}

async fn delete(channel: &Channel, queue: &str) {
    let _ = channel
        .queue_delete(ShortString::from(queue), QueueDeleteOptions::default())
        .await;
}

/// The next message of `queue`, waiting up to 3 s for one (a requeued message may take a moment
/// on a loaded machine); `None` once the queue stays empty that long.
async fn get(channel: &Channel, queue: &str) -> Option<outbox::lapin::message::Delivery> {
    for _ in 0..150 {
        let got = channel
            .basic_get(ShortString::from(queue), BasicGetOptions::default())
            .await
            .unwrap();
        if let Some(m) = got {
            return Some(m.delivery);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn enqueue(db: &TestDb, queue: &str, n: usize) {
    for i in 0..n {
        let e = Event::new(queue, format!("e{i:03}"), format!("{i}"))
            .unwrap()
            .aggregate(format!("agg{}", i % 5))
            .unwrap();
        db.outbox.enqueue(&e).await.unwrap();
    }
}

async fn sink(conn: &Connection) -> RabbitSink {
    RabbitSink::new(conn.create_channel().await.unwrap(), "")
        .await
        .unwrap()
}

async fn drain<S: Sink>(relay: &Relay<outbox::PostgresOutbox, S>) {
    for _ in 0..50 {
        relay.run_once().await.unwrap();
        if relay.outbox().stats().await.unwrap().pending == 0 {
            return;
        }
    }
    panic!("still pending: {:?}", relay.outbox().stats().await);
}

#[tokio::test]
async fn confirmed_publishes_reach_the_queue_with_their_message_id_in_aggregate_order() {
    let db = TestDb::new("amqp_publish").await;
    let conn = connect().await;
    let ch = conn.create_channel().await.unwrap();
    let queue = queue_name("publish");
    quorum_queue(&ch, &queue, None).await;
    enqueue(&db, &queue, 40).await;
    drain(&Relay::new(db.outbox.clone(), sink(&conn).await).batch(16)).await;
    let mut per_agg: std::collections::HashMap<String, Vec<String>> = Default::default();
    for _ in 0..40 {
        let d = get(&ch, &queue).await.expect("a message");
        let id = d.properties.message_id().as_ref().unwrap().to_string();
        let headers = d.properties.headers().as_ref().unwrap();
        let agg = match headers.inner().get(outbox::AGGREGATE_HEADER) {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            other => panic!("no aggregate header: {other:?}"),
        };
        assert_eq!(d.properties.delivery_mode(), &Some(2), "persistent");
        per_agg.entry(agg).or_default().push(id);
        d.ack(Default::default()).await.unwrap();
    }
    assert!(get(&ch, &queue).await.is_none(), "40 messages, no more");
    for (agg, ids) in per_agg {
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "{agg}");
    }
    delete(&ch, &queue).await;
    db.drop().await;
}

#[tokio::test]
async fn an_unroutable_event_is_returned_retried_and_delivered_once_its_queue_exists() {
    let db = TestDb::new("amqp_unroutable").await;
    let conn = connect().await;
    let ch = conn.create_channel().await.unwrap();
    let queue = queue_name("unroutable");
    enqueue(&db, &queue, 3).await;
    let schedule = Schedule::new([Duration::from_secs(10)]).jitter(0.0);
    let relay = Relay::new(db.outbox.clone(), sink(&conn).await).schedule(schedule);
    let round = relay.run_once().await.unwrap();
    assert_eq!(
        (round.claimed, round.retried, round.published),
        (3, 3, 0),
        "{round:?}"
    );
    let status = db.outbox.status(&queue, "e000").await.unwrap().unwrap();
    assert!(status.last_error.unwrap().contains("NO_ROUTE"));
    quorum_queue(&ch, &queue, None).await;
    db.offset.advance(Duration::from_secs(11));
    assert_eq!(relay.run_once().await.unwrap().published, 3);
    for _ in 0..3 {
        get(&ch, &queue)
            .await
            .unwrap()
            .ack(Default::default())
            .await
            .unwrap();
    }
    delete(&ch, &queue).await;
    db.drop().await;
}

async fn count(tx: &mut PgConnection, id: String) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO effects (id, n) VALUES ($1, 1)
         ON CONFLICT (id) DO UPDATE SET n = effects.n + 1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .map(drop)
}

#[tokio::test]
async fn a_consumer_killed_before_its_ack_and_a_republish_apply_each_effect_once() {
    let db = TestDb::new("amqp_consumer").await;
    sqlx::query("CREATE TABLE effects (id text PRIMARY KEY, n integer NOT NULL)")
        .execute(db.outbox.pool())
        .await
        .unwrap();
    let conn = connect().await;
    let ch = conn.create_channel().await.unwrap();
    let queue = queue_name("consumer");
    quorum_queue(&ch, &queue, None).await;
    enqueue(&db, &queue, 10).await;
    // A relay publishes a batch (the five aggregates' first events) and dies before settling:
    // the next relay publishes it again.
    let claimed = db.outbox.claim(100, Duration::from_secs(30)).await.unwrap();
    assert_eq!(claimed.len(), 5);
    let events: Vec<_> = claimed.iter().map(|c| &c.event).collect();
    assert!(sink(&conn)
        .await
        .publish(&events)
        .await
        .iter()
        .all(Result::is_ok));
    db.offset.advance(Duration::from_secs(31));
    drain(&Relay::new(db.outbox.clone(), sink(&conn).await)).await;

    let inbox = PgInbox::new(db.outbox.pool().clone(), "read-model");
    // The first consumer applies five effects and dies (its channel closes) before acking.
    let doomed = conn.create_channel().await.unwrap();
    for _ in 0..5 {
        let d = get(&doomed, &queue).await.unwrap();
        let id = d.properties.message_id().as_ref().unwrap().to_string();
        let done = inbox
            .handle(&id, async |tx| count(tx, id.clone()).await)
            .await;
        assert!(done.is_ok());
    }
    doomed
        .close(200, ShortString::from("killed"))
        .await
        .unwrap();

    let consumer = RabbitConsumer::new(inbox);
    let (mut applied, mut duplicates) = (0, 0);
    while let Some(d) = get(&ch, &queue).await {
        let id = d.properties.message_id().as_ref().unwrap().to_string();
        match consumer
            .handle(&d, async |tx| count(tx, id).await)
            .await
            .unwrap()
        {
            Consumed::Applied(()) => applied += 1,
            Consumed::Duplicate => duplicates += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        applied + duplicates,
        15,
        "ten events, five of them published twice"
    );
    assert_eq!(
        applied, 5,
        "the dead consumer applied five; the rest are duplicates"
    );
    let ns: Vec<i32> = sqlx::query_scalar("SELECT n FROM effects")
        .fetch_all(db.outbox.pool())
        .await
        .unwrap();
    assert_eq!(ns.len(), 10);
    assert!(ns.iter().all(|&n| n == 1), "each effect once: {ns:?}");
    delete(&ch, &queue).await;
    db.drop().await;
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_by_the_broker_after_its_last_delivery() {
    let db = TestDb::new("amqp_poison").await;
    let conn = connect().await;
    let ch = conn.create_channel().await.unwrap();
    let queue = queue_name("poison");
    let dlq = format!("{queue}_dlq");
    quorum_queue(&ch, &dlq, None).await;
    quorum_queue(&ch, &queue, Some(&dlq)).await;
    enqueue(&db, &queue, 1).await;
    drain(&Relay::new(db.outbox.clone(), sink(&conn).await)).await;
    let inbox = PgInbox::new(db.outbox.pool().clone(), "poisoned");
    let consumer = RabbitConsumer::new(inbox.clone()).max_deliveries(3);
    let mut outcomes = Vec::new();
    while let Some(d) = get(&ch, &queue).await {
        let done = consumer
            .handle(&d, async |_tx| Err::<(), _>("cannot parse"))
            .await;
        outcomes.push(done.unwrap());
        assert!(outcomes.len() <= 3, "{outcomes:?}");
    }
    let retries = outcomes
        .iter()
        .filter(|o| matches!(o, Consumed::Retry(_)))
        .count();
    assert_eq!(retries, 2, "{outcomes:?}");
    assert!(
        matches!(outcomes.last(), Some(Consumed::DeadLettered(_))),
        "{outcomes:?}"
    );
    let letter = get(&ch, &dlq).await.expect("the dead letter");
    assert_eq!(
        letter.properties.message_id().as_ref().unwrap().as_str(),
        "e000"
    );
    letter.ack(Default::default()).await.unwrap();
    assert!(!inbox.seen("e000").await.unwrap());
    delete(&ch, &queue).await;
    delete(&ch, &dlq).await;
    db.drop().await;
}

/// The broker closes the sink's connection mid-relay (`rabbitmqctl close_connection`, on this
/// test's connection alone): the next batch reconnects, and every event arrives.
#[tokio::test]
async fn a_connection_closed_by_the_broker_is_reopened_and_every_event_arrives() {
    let db = TestDb::new("amqp_reconnect").await;
    let conn = connect().await;
    let ch = conn.create_channel().await.unwrap();
    let queue = queue_name("reconnect");
    quorum_queue(&ch, &queue, None).await;
    enqueue(&db, &queue, 30).await;
    let name = queue_name("sink");
    let props = ConnectionProperties::default().with_connection_name(name.as_str().into());
    let sink = RabbitSink::connect(&amqp_url(), props, "").await.unwrap();
    let schedule = Schedule::new([Duration::from_secs(1); 10]).jitter(0.0);
    let relay = Relay::new(db.outbox.clone(), sink)
        .batch(4)
        .schedule(schedule);
    assert!(relay.run_once().await.unwrap().published > 0);
    close_connection_named(&name);
    let mut failed = 0;
    for _ in 0..100 {
        db.offset.advance(Duration::from_secs(2));
        failed += relay.run_once().await.unwrap().retried;
        if db.outbox.stats().await.unwrap().pending == 0 {
            break;
        }
    }
    let stats = db.outbox.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.published, stats.dead),
        (0, 30, 0),
        "{stats:?}"
    );
    let mut ids = std::collections::BTreeSet::new();
    while let Some(d) = get(&ch, &queue).await {
        ids.insert(d.properties.message_id().as_ref().unwrap().to_string());
        d.ack(Default::default()).await.unwrap();
    }
    assert_eq!(
        ids.len(),
        30,
        "every event arrived ({failed} attempts failed on the way)"
    );
    delete(&ch, &queue).await;
    db.drop().await;
}

/// Closes the broker's connection whose client named itself `name`, by its pid.
fn close_connection_named(name: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = std::process::Command::new("rabbitmqctl")
            .args([
                "list_connections",
                "-q",
                "--no-table-headers",
                "pid",
                "client_properties",
            ])
            .output()
            .expect("rabbitmqctl runs");
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(line) = text.lines().find(|l| l.contains(name)) {
            let pid = line.split_whitespace().next().unwrap();
            let closed = std::process::Command::new("rabbitmqctl")
                .args([
                    "close_connection",
                    pid,
                    "closed by the outbox reconnect test",
                ])
                .status()
                .unwrap();
            assert!(closed.success());
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no connection named {name}: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
