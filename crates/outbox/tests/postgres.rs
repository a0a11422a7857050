//! PostgresOutbox and PgInbox against the real PostgreSQL of `DATABASE_URL`: the outbox
//! contract, the relay's schedule, transactional enqueue, two relays on one outbox keeping each
//! aggregate's order, and the inbox applying a message once under concurrent redeliveries.
//!
//! Every test runs in a schema of its own, dropped at the end.

mod common;
#[path = "common/pg.rs"]
mod pg;

use outbox::sqlx::{self, PgConnection};
use outbox::{ChannelSink, Event, Handled, InboxError, Outbox, PgInbox, Relay};
use pg::TestDb;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test]
async fn the_postgres_outbox_passes_the_contract() {
    let db = TestDb::new("contract").await;
    let offset = db.offset.clone();
    common::contract(&db.outbox, &move |d| offset.advance(d)).await;
    db.drop().await;
}

#[tokio::test]
async fn the_relay_retries_on_its_schedule_and_dead_letters_on_postgres() {
    let db = TestDb::new("schedule").await;
    let offset = db.offset.clone();
    common::relay_schedule(db.outbox.clone(), &move |d| offset.advance(d)).await;
    db.drop().await;
}

#[tokio::test]
async fn a_view_of_the_postgres_outbox_claims_only_its_topics() {
    let db = TestDb::new("only_topics").await;
    let hooks = db.outbox.clone().only_topics(["merchant"]);
    common::only_topics(&db.outbox, &hooks).await;
    db.drop().await;
}

#[tokio::test]
async fn an_event_commits_and_rolls_back_with_the_business_transaction() {
    let db = TestDb::new("tx").await;
    let pool = db.outbox.pool().clone();
    sqlx::query("CREATE TABLE orders (id text PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    for (id, commit) in [("ord_1", false), ("ord_2", true)] {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO orders VALUES ($1)")
            .bind(id)
            .execute(&mut *tx)
            .await
            .unwrap();
        let event = Event::new("orders.created", format!("evt_{id}"), id).unwrap();
        assert!(db.outbox.enqueue_in(&mut *tx, &event).await.unwrap());
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
    }
    let claimed = db.outbox.claim(10, Duration::from_secs(30)).await.unwrap();
    let ids: Vec<_> = claimed.iter().map(|c| c.event.id.as_str()).collect();
    assert_eq!(ids, ["evt_ord_2"], "the rolled-back order left no event");
    db.drop().await;
}

#[tokio::test]
async fn headers_and_payload_survive_the_round_trip() {
    let db = TestDb::new("headers").await;
    let event = Event::new("orders.created", "evt_h", vec![0u8, 1, 2, 255])
        .unwrap()
        .aggregate("order:h")
        .unwrap()
        .header("content-type", "application/octet-stream")
        .unwrap()
        .header("x-tenant", "acme")
        .unwrap();
    db.outbox.enqueue(&event).await.unwrap();
    let claimed = db.outbox.claim(1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(claimed[0].event, event.delay(Duration::ZERO));
    db.drop().await;
}

/// Two relays, 40 aggregates of 25 events each: every event published once (no lease runs out
/// here) and each aggregate's events in the order they were enqueued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_publish_every_event_once_in_each_aggregates_order() {
    let db = TestDb::new("two_relays").await;
    for n in 0..25 {
        for a in 0..40 {
            let event = common::event(&format!("e{a}_{n:02}"), Some(&format!("agg{a}")));
            db.outbox.enqueue(&event).await.unwrap();
        }
    }
    let (sink, mut rx) = ChannelSink::new();
    let relays: Vec<_> = (0..2)
        .map(|_| {
            let relay = Relay::new(db.outbox.clone(), sink.clone()).batch(16);
            tokio::spawn(async move {
                let mut published = 0;
                for _ in 0..2_000 {
                    let round = relay.run_once().await.unwrap();
                    assert_eq!(round.lost, 0);
                    published += round.published;
                    if published > 0 && round.claimed == 0 {
                        let stats = relay.outbox().stats().await.unwrap();
                        if stats.pending == 0 {
                            break;
                        }
                    }
                }
                published
            })
        })
        .collect();
    let mut total = 0;
    for r in relays {
        let n = r.await.unwrap();
        assert!(n > 0, "each relay published some: {n}");
        total += n;
    }
    drop(sink);
    assert_eq!(total, 1_000);
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    while let Some(e) = rx.recv().await {
        seen.entry(e.aggregate.clone().unwrap())
            .or_default()
            .push(e.id);
    }
    assert_eq!(seen.len(), 40);
    for (agg, ids) in &seen {
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, &sorted, "{agg} out of order or repeated");
        assert_eq!(ids.len(), 25, "{agg}");
    }
    assert_eq!(db.outbox.stats().await.unwrap().published, 1_000);
    db.drop().await;
}

async fn bump(tx: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("UPDATE effects SET n = n + 1 RETURNING n")
        .fetch_one(&mut *tx)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_applies_a_message_once_under_concurrent_redeliveries() {
    let db = TestDb::new("inbox").await;
    let pool = db.outbox.pool().clone();
    sqlx::raw_sql("CREATE TABLE effects (n bigint NOT NULL); INSERT INTO effects VALUES (0)")
        .execute(&pool)
        .await
        .unwrap();
    let inbox = PgInbox::new(pool.clone(), "read-model");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let inbox = inbox.clone();
            tokio::spawn(async move { inbox.handle("evt_1", async |tx| bump(tx).await).await })
        })
        .collect();
    let mut applied = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Handled::Applied(n) => {
                applied += 1;
                assert_eq!(n, 1);
            }
            Handled::Duplicate => {}
        }
    }
    assert_eq!(applied, 1, "twenty deliveries at once, one effect");
    assert!(inbox.seen("evt_1").await.unwrap());
    let other = PgInbox::new(pool.clone(), "billing");
    assert!(
        !other.seen("evt_1").await.unwrap(),
        "each consumer has its own inbox"
    );
    let n: i64 = sqlx::query_scalar("SELECT n FROM effects")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    db.drop().await;
}

#[tokio::test]
async fn a_failed_handler_rolls_back_its_effect_and_the_inbox_row() {
    let db = TestDb::new("inbox_fail").await;
    let pool = db.outbox.pool().clone();
    sqlx::raw_sql("CREATE TABLE effects (n bigint NOT NULL); INSERT INTO effects VALUES (0)")
        .execute(&pool)
        .await
        .unwrap();
    let inbox = PgInbox::new(pool.clone(), "read-model");
    let failed = inbox
        .handle("evt_1", async |tx| {
            bump(tx).await?;
            Err::<(), _>(sqlx::Error::RowNotFound)
        })
        .await;
    assert!(matches!(failed, Err(InboxError::Handler(_))));
    assert!(
        !inbox.seen("evt_1").await.unwrap(),
        "not seen: the redelivery runs it"
    );
    let again = inbox
        .handle("evt_1", async |tx| bump(tx).await)
        .await
        .unwrap();
    assert_eq!(
        again,
        Handled::Applied(1),
        "the failed attempt's effect rolled back"
    );
    db.drop().await;
}
