//! Outbox throughput on the real PostgreSQL of `DATABASE_URL`, against its floor, in one run.
//!
//! - **outbox**: per event one business transaction (`INSERT` of a business row +
//!   `PostgresOutbox::enqueue_in`, `COMMIT`), then a dispatcher (4 workers, batches of 16)
//!   claims, signs and POSTs every event to a receiver on loopback and settles each attempt.
//! - **raw**: per event the same business transaction with a plain `INSERT` into a queue table,
//!   then one `DELETE` of that row — what a queue costs at the very least, with no delivery.
//!
//! Events per second = events / (enqueue time + delivery time). Pairs are interleaved (raw,
//! outbox, raw, outbox…); each pair's ratio outbox/raw is printed, then their median and spread.
//!
//! Run: `cargo xtask bench outbox` (`taskset -c 1 cargo bench -p webhook-delivery --features
//! postgres --bench outbox`). Without `--bench` (under `cargo test --all-targets`) it runs one
//! small pair as a smoke test and prints nothing else.

use axum::routing::post;
use axum::Router;
use std::time::{Duration, Instant};
use webhook_delivery::sqlx::{self, PgPool};
use webhook_delivery::{
    AddressPolicy, Dispatcher, Endpoint, Outbox, PostgresOutbox, Sender, WebhookEvent,
};
use webhook_sig::{Scheme, Secret, Signer};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (pairs, events) = if full { (7, 1_000) } else { (1, 50) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(pairs, events, full));
}

async fn run(pairs: usize, events: usize, report: bool) {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let admin = PgPool::connect(&url)
        .await
        .expect("PostgreSQL reachable (cargo xtask bench starts it)");
    let schema = format!("bench_outbox_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let outbox = PostgresOutbox::connect(&format!("{url}{sep}options=-csearch_path%3D{schema}"))
        .await
        .unwrap();
    outbox.migrate().await.unwrap();
    for ddl in [
        "CREATE TABLE business (id bigserial PRIMARY KEY, body text NOT NULL)",
        "CREATE TABLE raw_queue (id bigserial PRIMARY KEY, payload bytea NOT NULL)",
    ] {
        sqlx::query(ddl).execute(outbox.pool()).await.unwrap();
    }

    let app = Router::new().route("/hook", post(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let secret = Secret::from_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let sender = Sender::builder()
        .address_policy(AddressPolicy::default().allow("127.0.0.0/8".parse().unwrap()))
        .build()
        .unwrap();
    let dispatcher = Dispatcher::new(outbox.clone(), sender)
        .endpoint(
            Endpoint::new(
                "hook",
                &hook,
                Signer::new(Scheme::StandardWebhooks, &secret),
            )
            .unwrap(),
        )
        .workers(4)
        .batch(16);

    let payload = br#"{"type":"order.created","order":{"id":"ord_1","sku":"tea","quantity":2}}"#;
    let mut ratios = Vec::new();
    let mut seq = 0usize;
    for pair in 0..pairs {
        // raw
        let started = Instant::now();
        for _ in 0..events {
            let mut tx = outbox.pool().begin().await.unwrap();
            sqlx::query("INSERT INTO business (body) VALUES ('order')")
                .execute(&mut *tx)
                .await
                .unwrap();
            let id: i64 =
                sqlx::query_scalar("INSERT INTO raw_queue (payload) VALUES ($1) RETURNING id")
                    .bind(&payload[..])
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
            tx.commit().await.unwrap();
            sqlx::query("DELETE FROM raw_queue WHERE id = $1")
                .bind(id)
                .execute(outbox.pool())
                .await
                .unwrap();
        }
        let raw = events as f64 / started.elapsed().as_secs_f64();

        // outbox
        let started = Instant::now();
        for _ in 0..events {
            seq += 1;
            let mut tx = outbox.pool().begin().await.unwrap();
            sqlx::query("INSERT INTO business (body) VALUES ('order')")
                .execute(&mut *tx)
                .await
                .unwrap();
            let event = WebhookEvent::new("hook", format!("evt_{seq}"), &payload[..]).unwrap();
            outbox
                .enqueue_in(&mut *tx, &event.to_event().unwrap())
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let enqueued = started.elapsed();
        let mut delivered = 0;
        while delivered < events {
            let rounds =
                futures_util::future::join_all((0..4).map(|_| dispatcher.run_once())).await;
            for round in rounds {
                delivered += round.unwrap().delivered;
            }
        }
        let total = started.elapsed();
        let eps = events as f64 / total.as_secs_f64();
        let ratio = eps / raw;
        ratios.push(ratio);
        if report {
            println!(
                "pair {}: raw {raw:.0} events/s, outbox {eps:.0} events/s (enqueue {:.0}/s, deliver {:.0}/s), ratio {ratio:.3}",
                pair + 1,
                events as f64 / enqueued.as_secs_f64(),
                events as f64 / (total - enqueued).max(Duration::from_micros(1)).as_secs_f64(),
            );
        }
        outbox.purge_published(Duration::ZERO).await.unwrap();
    }
    if report {
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        println!(
            "outbox / raw over {pairs} pairs of {events} events: median {median:.3}, spread {:.3}–{:.3}",
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
    outbox.pool().close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}
