//! Orders created asynchronously, and the events they emit.
//!
//! - `POST /orders` with `Prefer: respond-async` (RFC 7240) and an `Idempotency-Key` queues a
//!   `create-order` job in the request's transaction, with the idempotency record, and answers
//!   `202 Accepted`, `Location: /jobs/{id}`, `Preference-Applied: respond-async`. A retry with the
//!   same key replays that answer: the same job.
//! - [`OrderWorker`] claims the jobs under a lease; for each, one transaction writes the order,
//!   its `order.created` webhook (when the webhook outbox is on PostgreSQL), its `OrderCreated`
//!   event (topic `orders.created`, aggregate `order:<id>`) and the job's completion, fenced by
//!   the claim: a worker overtaken after its lease commits nothing.
//! - `GET /jobs/{id}`: `200` with `{"id","status","attempts","error"}` while pending, running or
//!   failed; `303 See Other` to the order once done; `404` problem+json for an unknown id or
//!   another principal's job.
//! - [`ReadModel`]: the `OrderCreated` events, relayed to NATS JetStream by an `outbox::Relay`,
//!   counted per sku in `order_counts` through an `outbox::PgInbox` (each event once, whatever
//!   JetStream redelivers); `GET /reports/skus` reads it.

use crate::{
    insert_order_row, orders_unavailable, principal, problem, Db, NewOrder, Order, TxWork,
};
use ::outbox::async_nats::jetstream;
use ::outbox::{Event, JobQueue, JobState, NatsConsumer, PgInbox};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use idem_store_postgres::sqlx;
use std::time::Duration;

/// The kind of the jobs behind `202 Accepted` orders.
pub const CREATE_ORDER: &str = "create-order";

/// The topic of `OrderCreated` events.
pub const ORDER_CREATED: &str = "orders.created";

/// What the asynchronous orders need: the job queue and the events outbox, on the orders'
/// PostgreSQL.
#[derive(Clone)]
pub(crate) struct AsyncOrders {
    pub(crate) jobs: JobQueue,
    pub(crate) events: ::outbox::PostgresOutbox,
}

/// Whether the request says `Prefer: respond-async` (RFC 7240: comma-separated preferences,
/// tokens case-insensitive, each with optional parameters).
pub(crate) fn prefers_async(headers: &http::HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.split(';').next())
        .any(|token| token.trim().eq_ignore_ascii_case("respond-async"))
}

/// The stored `202 Accepted` for job `id`: replayed as is to a retry of the same key.
fn accepted(id: &str) -> idem_core::StoredResponse {
    let body = serde_json::json!({ "id": id, "status": "pending" }).to_string();
    idem_core::StoredResponse {
        status: 202,
        headers: vec![
            (
                "content-type".into(),
                bytes::Bytes::from_static(b"application/json"),
            ),
            ("location".into(), format!("/jobs/{id}").into()),
            (
                "preference-applied".into(),
                bytes::Bytes::from_static(b"respond-async"),
            ),
        ],
        body: body.into(),
        trailers: Vec::new(),
    }
}

/// The job of a `202` order as the work of the request's transaction.
pub(crate) fn job_work(
    owner: String,
    new: NewOrder,
    jobs: JobQueue,
) -> impl for<'a> FnOnce(&'a mut sqlx::Transaction<'static, sqlx::Postgres>) -> TxWork<'a> {
    move |tx| {
        Box::pin(async move {
            let (id,): (String,) = sqlx::query_as("SELECT 'job_' || nextval('jobs_seq')")
                .fetch_one(&mut **tx)
                .await?;
            let input =
                serde_json::json!({ "owner": owner, "sku": new.sku, "quantity": new.quantity });
            jobs.enqueue_in(&mut **tx, &id, CREATE_ORDER, input.to_string().as_bytes())
                .await?;
            Ok(accepted(&id))
        })
    }
}

/// `GET /jobs/{id}`.
pub(crate) async fn job_status(
    State(db): State<Db>,
    Path(id): Path<String>,
    headers: http::HeaderMap,
) -> Response {
    let not_found = || {
        problem(
            StatusCode::NOT_FOUND,
            "job_not_found",
            "Job not found",
            "no such job",
        )
    };
    let Some(orders) = &db.jobs else {
        return not_found();
    };
    let status = match orders.jobs.status(&id).await {
        Ok(Some(status)) => status,
        Ok(None) => return not_found(),
        Err(e) => return orders_unavailable(&e),
    };
    match job_owner(&orders.jobs, &id).await {
        Ok(Some(owner)) if owner == principal(&headers) => {}
        Ok(_) => return not_found(),
        Err(e) => return orders_unavailable(&e),
    }
    if let (JobState::Done, Some(location)) = (status.state, &status.result) {
        return (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, location.clone())],
        )
            .into_response();
    }
    let body = serde_json::json!({
        "id": id,
        "status": status.state.as_str(),
        "attempts": status.attempts,
        "error": status.last_error,
    });
    Json(body).into_response()
}

/// The principal that queued job `id` (from its input).
async fn job_owner(jobs: &JobQueue, id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT convert_from(payload, 'UTF8')::jsonb ->> 'owner' FROM outbox_jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(jobs.pool())
    .await
    .map(Option::flatten)
}

/// The `OrderCreated` event of `order`: id `evt_<order id>`, aggregate `order:<id>`.
pub fn order_created(order: &Order) -> Event {
    let body = serde_json::to_vec(order).unwrap_or_default();
    Event::new(ORDER_CREATED, format!("evt_{}", order.id), body)
        .and_then(|e| e.aggregate(format!("order:{}", order.id)))
        .and_then(|e| e.header("content-type", "application/json"))
        .expect("order ids are printable ASCII")
}

/// The worker of `202` orders.
#[derive(Clone)]
pub struct OrderWorker {
    db: Db,
    orders: AsyncOrders,
    lease: Duration,
}

impl OrderWorker {
    pub(crate) fn new(db: Db, orders: AsyncOrders) -> Self {
        Self {
            db,
            orders,
            lease: Duration::from_secs(30),
        }
    }

    /// Holds each job for `lease` (default 30 s): a worker that stops for longer loses the job
    /// to the next one, which then creates the order (the stopped one cannot commit its own).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Claims and runs one job; `false` when none was due.
    pub async fn run_once(&self) -> Result<bool, retry_safe_core::BoxError> {
        let jobs = &self.orders.jobs;
        let Some(job) = jobs.claim(CREATE_ORDER, self.lease).await? else {
            return Ok(false);
        };
        let input: serde_json::Value = serde_json::from_slice(&job.payload)?;
        let owner = input["owner"].as_str().unwrap_or_default().to_owned();
        let new: NewOrder = serde_json::from_value(input)?;
        let pool = self
            .db
            .pg
            .as_ref()
            .ok_or("orders are not on PostgreSQL")?
            .store
            .pool();
        let mut tx = pool.begin().await?;
        let order = insert_order_row(&mut tx, owner, new, self.db.outbox.as_ref()).await?;
        self.orders
            .events
            .enqueue_in(&mut *tx, &order_created(&order))
            .await?;
        if jobs
            .complete_in(&mut *tx, &job, &format!("/orders/{}", order.id))
            .await?
        {
            tx.commit().await?;
        } // else the lease was lost: dropping `tx` rolls the order and its events back
        Ok(true)
    }

    /// Runs jobs until `shutdown` completes; polls every 20 ms when none is due.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let wait = match self.run_once().await {
                Ok(true) => Duration::ZERO,
                Ok(false) => Duration::from_millis(20),
                Err(e) => {
                    tracing::warn!(error = %e, "order worker: a job failed; its lease will run out");
                    Duration::from_millis(200)
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// The read model: `OrderCreated` events from a JetStream stream, counted per sku in
/// `order_counts`, each event once.
pub struct ReadModel {
    consumer: jetstream::consumer::PullConsumer,
    handler: NatsConsumer,
}

impl ReadModel {
    /// A durable consumer `read-model` on `stream` (created if missing, capturing
    /// `<prefix>orders.>`), applying events through an inbox on `pool`.
    pub async fn connect(
        js: &jetstream::Context,
        stream: &str,
        prefix: &str,
        pool: sqlx::PgPool,
    ) -> Result<Self, retry_safe_core::BoxError> {
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: stream.to_owned(),
                subjects: vec![format!("{prefix}orders.>")],
                ..Default::default()
            })
            .await?;
        let consumer = stream
            .get_or_create_consumer(
                "read-model",
                jetstream::consumer::pull::Config {
                    durable_name: Some("read-model".into()),
                    ack_wait: Duration::from_secs(5),
                    ..Default::default()
                },
            )
            .await?;
        let inbox = PgInbox::new(pool, "read-model");
        let handler = NatsConsumer::new(inbox, js.clone(), &format!("{prefix}dead."));
        Ok(Self { consumer, handler })
    }

    /// Applies events until `shutdown` completes.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        use futures_util::StreamExt;
        let mut shutdown = std::pin::pin!(shutdown);
        let mut messages = match self.consumer.messages().await {
            Ok(m) => m,
            Err(e) => return tracing::error!(error = %e, "read model: no messages"),
        };
        loop {
            let next = tokio::select! {
                biased;
                () = &mut shutdown => return,
                next = messages.next() => next,
            };
            let Some(Ok(message)) = next else { continue };
            let order: Result<Order, _> = serde_json::from_slice(&message.payload);
            let done = self
                .handler
                .handle(&message, async |tx| count_order(tx, order).await)
                .await;
            if let Err(e) = done {
                tracing::warn!(error = %e, "read model: the message will be redelivered");
            }
        }
    }
}

async fn count_order(
    tx: &mut sqlx::PgConnection,
    order: Result<Order, serde_json::Error>,
) -> Result<(), String> {
    let order = order.map_err(|e| format!("not an order: {e}"))?;
    sqlx::query(
        "INSERT INTO order_counts (sku, orders, quantity) VALUES ($1, 1, $2)
         ON CONFLICT (sku) DO UPDATE
         SET orders = order_counts.orders + 1, quantity = order_counts.quantity + $2",
    )
    .bind(&order.sku)
    .bind(i64::from(order.quantity))
    .execute(&mut *tx)
    .await
    .map(drop)
    .map_err(|e| e.to_string())
}

/// `GET /reports/skus`: the read model, `{"<sku>": {"orders": n, "quantity": q}}`.
pub(crate) async fn sku_report(State(db): State<Db>) -> Response {
    let Some(pg) = &db.pg else {
        return problem(
            StatusCode::NOT_FOUND,
            "no_read_model",
            "No read model",
            "orders are in memory",
        );
    };
    let rows: Result<Vec<(String, i64, i64)>, _> =
        sqlx::query_as("SELECT sku, orders, quantity FROM order_counts ORDER BY sku")
            .fetch_all(pg.store.pool())
            .await;
    match rows {
        Ok(rows) => {
            let report: serde_json::Map<String, serde_json::Value> = rows
                .into_iter()
                .map(|(sku, orders, quantity)| {
                    (
                        sku,
                        serde_json::json!({ "orders": orders, "quantity": quantity }),
                    )
                })
                .collect();
            Json(report).into_response()
        }
        Err(e) => orders_unavailable(&e),
    }
}
