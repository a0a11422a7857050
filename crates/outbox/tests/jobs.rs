//! JobQueue against the real PostgreSQL of `DATABASE_URL`: a job queued with its request's
//! transaction and once per id, claimed by one worker at a time, kept by heartbeats, taken over
//! after its lease with the overtaken worker unable to commit its effect, retried and failed
//! after its last attempt.

#[path = "common/pg.rs"]
mod pg;

use outbox::sqlx;
use outbox::{JobQueue, JobState};
use pg::TestDb;
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);

async fn jobs(db: &TestDb) -> JobQueue {
    sqlx::query("CREATE TABLE orders (id text PRIMARY KEY)")
        .execute(db.outbox.pool())
        .await
        .unwrap();
    JobQueue::new(db.outbox.pool().clone())
        .with_time_offset(db.offset.clone())
        .max_attempts(2)
        .retry_delay(Duration::from_secs(5))
}

#[tokio::test]
async fn a_job_is_queued_with_its_transaction_and_once_per_id() {
    let db = TestDb::new("jobs_enqueue").await;
    let jobs = jobs(&db).await;
    let mut tx = db.outbox.pool().begin().await.unwrap();
    assert!(jobs
        .enqueue_in(&mut *tx, "j0", "create", b"{}")
        .await
        .unwrap());
    tx.rollback().await.unwrap();
    assert!(
        jobs.status("j0").await.unwrap().is_none(),
        "rolled back with its request"
    );
    assert!(jobs
        .enqueue_in(jobs.pool(), "j1", "create", b"{}")
        .await
        .unwrap());
    assert!(!jobs
        .enqueue_in(jobs.pool(), "j1", "create", b"{}")
        .await
        .unwrap());
    let status = jobs.status("j1").await.unwrap().unwrap();
    assert_eq!((status.state, status.attempts), (JobState::Pending, 0));
    assert!(jobs.claim("other-kind", LEASE).await.unwrap().is_none());
    db.drop().await;
}

#[tokio::test]
async fn an_overtaken_worker_cannot_commit_its_effect() {
    let db = TestDb::new("jobs_fence").await;
    let jobs = jobs(&db).await;
    jobs.enqueue_in(jobs.pool(), "j1", "create", b"sku-a")
        .await
        .unwrap();
    let first = jobs.claim("create", LEASE).await.unwrap().unwrap();
    assert_eq!(
        (first.attempt, first.payload.as_ref()),
        (1, b"sku-a".as_slice())
    );
    assert_eq!(
        jobs.status("j1").await.unwrap().unwrap().state,
        JobState::Running
    );
    assert!(
        jobs.claim("create", LEASE).await.unwrap().is_none(),
        "one worker at a time"
    );
    db.offset.advance(Duration::from_secs(20));
    assert!(
        jobs.heartbeat(&first, LEASE).await.unwrap(),
        "the heartbeat keeps it"
    );
    db.offset.advance(Duration::from_secs(20));
    assert!(
        jobs.claim("create", LEASE).await.unwrap().is_none(),
        "renewed: still held"
    );

    // The first worker freezes past its lease; a second takes the job over.
    db.offset.advance(Duration::from_secs(31));
    let second = jobs.claim("create", LEASE).await.unwrap().unwrap();
    assert_eq!(second.attempt, 2);
    assert!(
        !jobs.heartbeat(&first, LEASE).await.unwrap(),
        "the first lost it"
    );
    let mut tx = db.outbox.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO orders VALUES ('ord_first')")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert!(!jobs
        .complete_in(&mut *tx, &first, "/orders/ord_first")
        .await
        .unwrap());
    tx.rollback().await.unwrap();

    let mut tx = db.outbox.pool().begin().await.unwrap();
    sqlx::query("INSERT INTO orders VALUES ('ord_second')")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert!(jobs
        .complete_in(&mut *tx, &second, "/orders/ord_second")
        .await
        .unwrap());
    tx.commit().await.unwrap();
    let orders: Vec<String> = sqlx::query_scalar("SELECT id FROM orders")
        .fetch_all(db.outbox.pool())
        .await
        .unwrap();
    assert_eq!(orders, ["ord_second"], "one effect: the fenced worker's");
    let status = jobs.status("j1").await.unwrap().unwrap();
    assert_eq!(status.state, JobState::Done);
    assert_eq!(status.result.as_deref(), Some("/orders/ord_second"));
    db.drop().await;
}

#[tokio::test]
async fn a_failed_job_is_retried_then_failed_after_its_last_attempt() {
    let db = TestDb::new("jobs_fail").await;
    let jobs = jobs(&db).await;
    jobs.enqueue_in(jobs.pool(), "j1", "create", b"{}")
        .await
        .unwrap();
    let job = jobs.claim("create", LEASE).await.unwrap().unwrap();
    assert!(jobs.fail(&job, "payment provider down").await.unwrap());
    assert_eq!(
        jobs.status("j1").await.unwrap().unwrap().state,
        JobState::Pending
    );
    assert!(
        jobs.claim("create", LEASE).await.unwrap().is_none(),
        "waits its retry delay"
    );
    db.offset.advance(Duration::from_secs(6));
    let job = jobs.claim("create", LEASE).await.unwrap().unwrap();
    assert!(jobs.fail(&job, "still down").await.unwrap());
    let status = jobs.status("j1").await.unwrap().unwrap();
    assert_eq!((status.state, status.attempts), (JobState::Failed, 2));
    assert_eq!(status.last_error.as_deref(), Some("still down"));

    // A job whose last attempt's worker died is failed once its lease runs out.
    jobs.enqueue_in(jobs.pool(), "j2", "create", b"{}")
        .await
        .unwrap();
    jobs.claim("create", LEASE).await.unwrap().unwrap();
    db.offset.advance(Duration::from_secs(31));
    jobs.claim("create", LEASE).await.unwrap().unwrap();
    db.offset.advance(Duration::from_secs(31));
    assert!(jobs.claim("create", LEASE).await.unwrap().is_none());
    let status = jobs.status("j2").await.unwrap().unwrap();
    assert_eq!(status.state, JobState::Failed);
    assert!(status.last_error.unwrap().contains("lease ran out"));
    db.drop().await;
}
