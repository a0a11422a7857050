//! `cargo xtask bench events`: the relay against a raw publish loop on the same client, for
//! NATS JetStream and RabbitMQ, batches of 1 and 100; commit-to-consumer latency through
//! PostgreSQL, a relay and JetStream; the inbox's cost per message against the handler alone.
//!
//! Each comparison runs in interleaved rounds (A, B, A, B, …) in one process against the real
//! services (`DATABASE_URL`, `NATS_URL`, `AMQP_URL`); the figure is the median of the per-round
//! ratios, with their range. Streams, queues and schemas are the bench's own, deleted at the end.

use async_nats::jetstream;
use outbox::lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use outbox::lapin::types::FieldTable;
use outbox::sqlx::{self, PgPool};
use outbox::{
    async_nats, lapin, Event, NatsSink, Outbox, PgInbox, PostgresOutbox, RabbitSink, Relay, Sink,
};
use std::time::{Duration, Instant};

/// Rounds, messages per round and latency samples: the bench's under `cargo bench`, a smoke
/// run's under `cargo test --all-targets` (which runs this binary without `--bench`).
fn sizes() -> (usize, usize, usize) {
    if std::env::args().any(|a| a == "--bench") {
        (5, 2_000, 1_000)
    } else {
        (1, 40, 20)
    }
}

fn env(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.into())
}

struct Schema {
    admin: PgPool,
    name: String,
    outbox: PostgresOutbox,
}

impl Schema {
    async fn new(tag: &str) -> Self {
        let url = env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test");
        let admin = PgPool::connect(&url).await.expect("PostgreSQL");
        let name = format!("bench_outbox_{tag}_{}", std::process::id());
        let q = |s: String| sqlx::query(sqlx::AssertSqlSafe(s));
        q(format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
            .execute(&admin)
            .await
            .unwrap();
        q(format!("CREATE SCHEMA {name}"))
            .execute(&admin)
            .await
            .unwrap();
        let sep = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{sep}options=-csearch_path%3D{name}");
        let outbox = PostgresOutbox::connect(&url).await.unwrap();
        outbox.migrate().await.unwrap();
        Self {
            admin,
            name,
            outbox,
        }
    }

    async fn drop(self) {
        self.outbox.pool().close().await;
        let sql = format!("DROP SCHEMA {} CASCADE", self.name);
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&self.admin)
            .await
            .unwrap();
    }
}

fn events(topic: &str, round: usize, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event::new(topic, format!("r{round}_{i}"), vec![b'x'; 200]).unwrap())
        .collect()
}

/// Messages per second through the relay with `in_flight` rounds at a time (as `Relay::run`
/// keeps them): the events are enqueued first (not timed).
async fn relay_rate<S: Sink>(
    o: &PostgresOutbox,
    sink: S,
    evs: &[Event],
    batch: usize,
    in_flight: usize,
) -> f64 {
    for e in evs {
        o.enqueue(e).await.unwrap();
    }
    let relay = Relay::new(o.clone(), sink).batch(batch);
    let start = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let one = async || {
        while done.load(std::sync::atomic::Ordering::Relaxed) < evs.len() {
            let n = relay.run_once().await.unwrap().published;
            done.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    };
    futures_util::future::join_all((0..in_flight).map(|_| one())).await;
    evs.len() as f64 / start.elapsed().as_secs_f64()
}

/// Messages per second through the smallest outbox loop one could write by hand on the same
/// table: in one transaction, `SELECT … FOR UPDATE SKIP LOCKED` a batch, publish it, `DELETE` it,
/// commit (one write per event, no order per aggregate, no retry schedule, no dead letters).
async fn hand_rolled_rate<S: Sink>(
    o: &PostgresOutbox,
    sink: &S,
    evs: &[Event],
    batch: usize,
) -> f64 {
    for e in evs {
        o.enqueue(e).await.unwrap();
    }
    let start = Instant::now();
    let mut done = 0;
    while done < evs.len() {
        let mut tx = o.pool().begin().await.unwrap();
        let rows: Vec<(i64, String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT id, topic, event_id, payload FROM outbox_events WHERE state = 1
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(batch as i64)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        let batch_events: Vec<Event> = rows
            .iter()
            .map(|(_, topic, id, payload)| Event::new(topic, id, payload.clone()).unwrap())
            .collect();
        let refs: Vec<&Event> = batch_events.iter().collect();
        assert!(sink.publish(&refs).await.iter().all(Result::is_ok));
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        sqlx::query("DELETE FROM outbox_events WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        done += ids.len();
    }
    evs.len() as f64 / start.elapsed().as_secs_f64()
}

/// Messages per second through the sink alone, `batch` at a time: the raw publish loop.
async fn raw_rate<S: Sink>(sink: &S, evs: &[Event], batch: usize) -> f64 {
    let start = Instant::now();
    for chunk in evs.chunks(batch) {
        let refs: Vec<&Event> = chunk.iter().collect();
        assert!(sink.publish(&refs).await.iter().all(Result::is_ok));
    }
    evs.len() as f64 / start.elapsed().as_secs_f64()
}

fn median_range(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

async fn compare<S: Sink + Clone>(name: &str, sink: S, topic: &str, tag: &str) {
    for batch in [1usize, 100] {
        let (rounds, messages, _) = sizes();
        let n = if batch == 1 { messages / 4 } else { messages };
        let schema = Schema::new(&format!("{tag}{batch}")).await;
        let o = &schema.outbox;
        let (mut ratios, mut by_hand) = (vec![], vec![]);
        let (mut raws, mut hands, mut ones, mut fours) = (vec![], vec![], vec![], vec![]);
        for round in 0..rounds {
            let evs = |k: usize| events(topic, 4 * round + k, n);
            let raw = raw_rate(&sink, &evs(0), batch).await;
            let hand = hand_rolled_rate(o, &sink, &evs(1), batch).await;
            let one = relay_rate(o, sink.clone(), &evs(2), batch, 1).await;
            let four = relay_rate(o, sink.clone(), &evs(3), batch, 4).await;
            ratios.push(four / raw);
            by_hand.push(one / hand);
            raws.push(raw);
            hands.push(hand);
            ones.push(one);
            fours.push(four);
        }
        let (r, lo, hi) = median_range(ratios);
        let (h, hlo, hhi) = median_range(by_hand);
        let m = |v: Vec<f64>| median_range(v).0;
        println!(
            "| {name} | {batch} | {:.0} | {:.0} | {:.0} | {:.0} | **{r:.2}×** ({lo:.2}–{hi:.2}) | {h:.2}× ({hlo:.2}–{hhi:.2}) |",
            m(raws), m(hands), m(ones), m(fours)
        );
        schema.drop().await;
    }
}

async fn nats() -> (jetstream::Context, String) {
    let client = async_nats::connect(env("NATS_URL", "nats://127.0.0.1:4222"))
        .await
        .unwrap();
    let js = jetstream::new(client);
    let name = format!("BENCH_OUTBOX_{}", std::process::id());
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{}.>", name.to_lowercase())],
        ..Default::default()
    })
    .await
    .unwrap();
    (js, name)
}

async fn rabbit() -> (lapin::Connection, String) {
    let url = env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
    let conn = lapin::Connection::connect(&url, Default::default())
        .await
        .unwrap();
    let queue = format!("bench_outbox_{}", std::process::id());
    let ch = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.as_str().into(), durable, FieldTable::default())
        .await
        .unwrap();
    (conn, queue)
}

/// Commit (an event carrying its commit time) to the consumer's receipt, through a relay
/// polling every 10 ms and JetStream; one event every 5 ms.
async fn latency(js: &jetstream::Context, stream: &str) {
    use futures_util::StreamExt;
    let (_, _, samples) = sizes();
    let schema = Schema::new("latency").await;
    let sink = NatsSink::new(js.clone()).subject_prefix(format!("{}.", stream.to_lowercase()));
    let relay = Relay::new(schema.outbox.clone(), sink).poll_interval(Duration::from_millis(10));
    let js_stream = js.get_stream(stream).await.unwrap();
    let consumer = js_stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("latency".into()),
            deliver_policy: jetstream::consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let relay_task = tokio::spawn(async move {
        relay.run(async { drop(stop_rx.await) }).await;
    });
    let origin = Instant::now();
    let producer = {
        let outbox = schema.outbox.clone();
        tokio::spawn(async move {
            for i in 0..samples {
                let mut tx = outbox.pool().begin().await.unwrap();
                let at = origin.elapsed().as_micros().to_string();
                let e = Event::new("lat", format!("l{i}"), at).unwrap();
                outbox.enqueue_in(&mut *tx, &e).await.unwrap();
                tx.commit().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut messages = consumer.messages().await.unwrap();
    let mut lat = Vec::new();
    while lat.len() < samples {
        let m = messages.next().await.unwrap().unwrap();
        let sent: u128 = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
        lat.push((origin.elapsed().as_micros() - sent) as f64 / 1000.0);
        m.ack().await.unwrap();
    }
    producer.await.unwrap();
    let _ = stop_tx.send(());
    relay_task.await.unwrap();
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "\ncommit → consumer ({samples} events, one per 5 ms, relay poll 10 ms): p50 **{:.1} ms**, p99 **{:.1} ms**, max {:.1} ms",
        p(0.5),
        p(0.99),
        lat[lat.len() - 1]
    );
    schema.drop().await;
}

/// Per message: the handler alone (a transaction with one UPDATE) against the same through
/// `PgInbox::handle` (the inbox row in the same transaction).
async fn inbox_cost() {
    let schema = Schema::new("inbox").await;
    let pool = schema.outbox.pool().clone();
    sqlx::raw_sql("CREATE TABLE counts (n bigint NOT NULL); INSERT INTO counts VALUES (0)")
        .execute(&pool)
        .await
        .unwrap();
    let inbox = PgInbox::new(pool.clone(), "bench");
    let bump = async |tx: &mut sqlx::PgConnection| {
        sqlx::query("UPDATE counts SET n = n + 1")
            .execute(&mut *tx)
            .await
            .map(drop)
    };
    let (mut ratios, mut alone_us, mut with_us) = (Vec::new(), Vec::new(), Vec::new());
    let (rounds, _, n) = sizes();
    for round in 0..rounds {
        let start = Instant::now();
        for _ in 0..n {
            let mut tx = pool.begin().await.unwrap();
            bump(&mut tx).await.unwrap();
            tx.commit().await.unwrap();
        }
        let alone = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        let start = Instant::now();
        for i in 0..n {
            let id = format!("m{round}_{i}");
            let done = inbox.handle(&id, async |tx| bump(tx).await).await.unwrap();
            assert!(matches!(done, outbox::Handled::Applied(())));
        }
        let with = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        ratios.push(with / alone);
        alone_us.push(alone);
        with_us.push(with);
    }
    let (r, lo, hi) = median_range(ratios);
    println!(
        "\ninbox: handler alone {:.0} µs/message, through PgInbox {:.0} µs/message: **{r:.2}×** ({lo:.2}–{hi:.2})",
        median_range(alone_us).0,
        median_range(with_us).0
    );
    schema.drop().await;
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks for the benches' names
    }
    println!("| broker | batch | raw publish loop, msg/s | hand-rolled outbox loop | relay, 1 round in flight | relay, 4 in flight (default) | default ÷ raw, median (min–max) | 1 in flight ÷ hand-rolled |");
    println!("|---|---:|---:|---:|---:|---:|---|---|");
    let (js, stream) = nats().await;
    let nats_sink = NatsSink::new(js.clone());
    compare(
        "NATS JetStream",
        nats_sink,
        &format!("{}.t", stream.to_lowercase()),
        "n",
    )
    .await;
    let (conn, queue) = rabbit().await;
    let ch = conn.create_channel().await.unwrap();
    let rabbit_sink = RabbitSink::new(ch, "").await.unwrap();
    compare("RabbitMQ", rabbit_sink, &queue, "r").await;
    latency(&js, &stream).await;
    inbox_cost().await;
    js.delete_stream(&stream).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
}
