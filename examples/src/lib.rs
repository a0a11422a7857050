//! The orders API: a small payment-style service behind the workspace's layers.
//!
//! `POST /orders` creates an order and is protected by an `Idempotency-Key`, so a client that
//! times out and retries, or a user who double-clicks, creates one order, not two.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use axum::body::Body;
//! use axum::http::Request;
//! use tower::ServiceExt;
//!
//! let api = examples::OrdersApi::in_memory();
//! let create = || {
//!     Request::post("/orders")
//!         .header("idempotency-key", "checkout-7f3a")
//!         .header("content-type", "application/json")
//!         .body(Body::from(r#"{"sku":"tea","quantity":2}"#))
//!         .unwrap()
//! };
//! for _ in 0..3 {
//!     api.router().oneshot(create()).await.unwrap();
//! }
//! assert_eq!(api.order_count(), 1);
//! # });
//! ```

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use idem_core::{IdempotencyLayer, IdempotencyPolicy, IdempotencyStore, MemoryStore};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// An order as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Order {
    /// `ord_<n>`, assigned on creation.
    pub id: String,
    /// The principal that created it (the bearer token, or `public`).
    pub owner: String,
    /// What was ordered.
    pub sku: String,
    /// How many.
    pub quantity: u32,
}

/// The body of `POST /orders`.
#[derive(Debug, Deserialize)]
pub struct NewOrder {
    /// What to order.
    pub sku: String,
    /// How many (1 or more).
    pub quantity: u32,
}

#[derive(Default)]
struct Orders {
    next: u64,
    by_id: BTreeMap<String, Order>,
}

/// The service: its order book and its idempotency store.
#[derive(Clone)]
pub struct OrdersApi<S> {
    orders: Arc<Mutex<Orders>>,
    idempotency: IdempotencyLayer<S>,
}

impl OrdersApi<MemoryStore> {
    /// The API on the embedded in-memory store.
    pub fn in_memory() -> Self {
        Self::new(MemoryStore::new())
    }
}

/// The principal of a request: its bearer token, or `public`. Keys of two principals never meet.
fn principal(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("public")
        .to_owned()
}

impl<S: IdempotencyStore> OrdersApi<S> {
    /// The API on any idempotency store.
    pub fn new(store: S) -> Self {
        let policy = IdempotencyPolicy::default()
            .require_key(true)
            .scope_with(|parts| principal(&parts.headers));
        Self {
            orders: Arc::default(),
            idempotency: IdempotencyLayer::new(store, policy),
        }
    }

    /// The HTTP routes with their layers.
    pub fn router(&self) -> Router {
        let creating = Router::new()
            .route("/orders", post(create_order))
            .layer(self.idempotency.clone());
        Router::new()
            .route("/orders", get(list_orders))
            .route("/orders/{id}", get(get_order))
            .merge(creating)
            .with_state(self.orders.clone())
    }

    /// How many orders exist.
    pub fn order_count(&self) -> usize {
        self.orders.lock().by_id.len()
    }

    /// The idempotency layer's counters.
    pub fn idempotency_metrics(&self) -> idem_core::MetricsSnapshot {
        self.idempotency.metrics()
    }
}

type Db = Arc<Mutex<Orders>>;

fn problem(status: StatusCode, code: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": format!("urn:problem-type:{code}"),
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

async fn create_order(
    State(db): State<Db>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let new: NewOrder = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => return problem(StatusCode::BAD_REQUEST, "invalid_body", &e.to_string()),
    };
    if new.quantity == 0 || new.sku.is_empty() {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_order",
            "sku must be set and quantity at least 1",
        );
    }
    let mut db = db.lock();
    db.next += 1;
    let order = Order {
        id: format!("ord_{}", db.next),
        owner: principal(&headers),
        sku: new.sku,
        quantity: new.quantity,
    };
    db.by_id.insert(order.id.clone(), order.clone());
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/orders/{}", order.id))],
        Json(order),
    )
        .into_response()
}

async fn get_order(State(db): State<Db>, Path(id): Path<String>) -> Response {
    match db.lock().by_id.get(&id) {
        Some(order) => Json(order.clone()).into_response(),
        None => problem(StatusCode::NOT_FOUND, "order_not_found", "no such order"),
    }
}

async fn list_orders(State(db): State<Db>) -> Json<Vec<Order>> {
    Json(db.lock().by_id.values().cloned().collect())
}
