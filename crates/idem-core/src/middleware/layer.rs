use super::IdempotencyService;
use crate::{IdempotencyPolicy, IdempotencyStore};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tower_layer::Layer;

/// Applies the idempotency contract to an HTTP service.
///
/// ```
/// use idem_core::{IdempotencyLayer, IdempotencyPolicy, MemoryStore};
/// use tower::ServiceBuilder;
/// # use bytes::Bytes; use http_body_util::Full;
/// # let handler = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
/// # });
///
/// let service = ServiceBuilder::new()
///     .layer(IdempotencyLayer::new(MemoryStore::new(), IdempotencyPolicy::default().require_key(true)))
///     .service(handler);
/// ```
///
/// For each request of a covered method that carries an `Idempotency-Key`:
/// 1. the body is buffered (up to [`max_request_bytes`](crate::IdempotencyPolicy::max_request_bytes))
///    and fingerprinted with the method and path;
/// 2. `begin` runs on the store; the inner service runs only on `Acquired`;
/// 3. a response whose status the policy stores is buffered and `complete`d; any other outcome
///    (5xx, an inner error, a panic, a cancelled request) `release`s the key so a retry may run.
///
/// | outcome | response |
/// |---|---|
/// | key missing on a route that requires one, or invalid | 400 `idempotency_key_missing` / `idempotency_key_invalid` |
/// | request body over the limit (declared or sent) | 413 `request_body_too_large` |
/// | request body slower than the body timeout | 408 `request_body_timeout` |
/// | request body ended with an error | 400 `request_body_unreadable` |
/// | this scope holds its whole share of the store | 429 `idempotency_scope_full` + `Retry-After` |
/// | another attempt in flight | 409 `idempotency_request_in_flight` + `Retry-After` |
/// | same key, other request | 422 `idempotency_key_reused` |
/// | already completed | the stored response, byte for byte, + `Idempotent-Replayed: true` |
/// | store unreachable, fail-closed | 503 `idempotency_store_unavailable` + `Retry-After` |
/// | store misconfigured (a single-node client on a cluster), any fail mode | 500 `idempotency_store_misconfigured` |
/// | the stored record cannot be read, any fail mode | 500 `idempotency_record_corrupt` |
/// | completed, but the answer was over the size limit and not stored | 409 `idempotency_response_not_stored` (the replay of such a key) |
/// | the handler panicked, or its response could not be read | 500 `internal_error` (the key is released) |
///
/// Every rejection is an RFC 9457 `application/problem+json` body; see [`Problem`](crate::Problem).
///
/// The handler finds its [`IdempotencyAttempt`](crate::IdempotencyAttempt) in the request's extensions; a response marked
/// [`CompletedByHandler`](crate::CompletedByHandler) (see [`handler_completed`](crate::handler_completed)) is passed through without `complete`, the
/// handler having completed the record in its own transaction.
pub struct IdempotencyLayer<S> {
    pub(crate) store: Arc<S>,
    pub(crate) policy: Arc<IdempotencyPolicy>,
    pub(crate) metrics: Arc<Metrics>,
}

impl<S: IdempotencyStore> IdempotencyLayer<S> {
    /// A layer on `store` with `policy`.
    pub fn new(store: S, policy: IdempotencyPolicy) -> Self {
        Self::from_shared(Arc::new(store), policy)
    }

    /// A layer on a store that the application also uses elsewhere.
    pub fn from_shared(store: Arc<S>, policy: IdempotencyPolicy) -> Self {
        Self {
            store,
            policy: Arc::new(policy),
            metrics: Arc::default(),
        }
    }

    /// Counters of this layer and every service it made.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }
}

impl<S> Clone for IdempotencyLayer<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            policy: self.policy.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<S> std::fmt::Debug for IdempotencyLayer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S, Inner> Layer<Inner> for IdempotencyLayer<S> {
    type Service = IdempotencyService<Inner, S>;
    fn layer(&self, inner: Inner) -> Self::Service {
        IdempotencyService {
            inner,
            store: self.store.clone(),
            policy: self.policy.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) executed: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) mismatched: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) fail_open: AtomicU64,
}

/// What the layer counts; with the `metrics` feature each event also goes to the `metrics`
/// facade (names in docs/operations.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Executed,
    Replayed,
    InFlight,
    Mismatched,
    Released,
    StoreError,
    FailOpen,
}

impl Metrics {
    pub(crate) fn record(&self, event: Event) {
        let counter = match event {
            Event::Executed => &self.executed,
            Event::Replayed => &self.replayed,
            Event::InFlight => &self.in_flight,
            Event::Mismatched => &self.mismatched,
            Event::Released => &self.released,
            Event::StoreError => &self.store_errors,
            Event::FailOpen => &self.fail_open,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        match event {
            Event::Released => metrics::counter!("idempotency_keys_released_total").increment(1),
            Event::StoreError => metrics::counter!("idempotency_store_errors_total").increment(1),
            _ => {
                let outcome = match event {
                    Event::Executed => "executed",
                    Event::Replayed => "replayed",
                    Event::InFlight => "in_flight",
                    Event::Mismatched => "mismatch",
                    _ => "fail_open",
                };
                metrics::counter!("idempotency_requests_total", "outcome" => outcome).increment(1);
            }
        }
    }

    fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            executed: get(&self.executed),
            replayed: get(&self.replayed),
            in_flight: get(&self.in_flight),
            mismatched: get(&self.mismatched),
            released: get(&self.released),
            store_errors: get(&self.store_errors),
            fail_open: get(&self.fail_open),
        }
    }
}

/// Counters since the layer was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Requests that acquired a key and ran the inner service.
    pub executed: u64,
    /// Stored responses replayed.
    pub replayed: u64,
    /// Requests answered 409 because another attempt was in flight.
    pub in_flight: u64,
    /// Requests answered 422 because the key belonged to another request.
    pub mismatched: u64,
    /// Keys released after a failure so a retry could run.
    pub released: u64,
    /// Store operations that failed.
    pub store_errors: u64,
    /// Requests run without protection because the store failed and the policy fails open.
    pub fail_open: u64,
}
