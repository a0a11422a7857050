use super::service::KeyedConcurrencyLimitService;
use super::PermitSource;
use crate::ConcurrencyLimiter;
use http::request::Parts;
use std::sync::Arc;
use tower_layer::Layer;

/// Caps each key's requests in flight in front of an HTTP service.
///
/// ```
/// use ratelimit_concurrent::{KeyedConcurrencyLimitLayer, ConcurrencyLimiter};
/// use tower::ServiceBuilder;
/// # use bytes::Bytes; use http_body_util::Full;
/// # let handler = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
/// # });
///
/// let limiter = ConcurrencyLimiter::new(20).unwrap();
/// let layer = KeyedConcurrencyLimitLayer::new(limiter, |parts: &http::request::Parts| {
///     parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned)
/// });
/// let service = ServiceBuilder::new().layer(layer).service(handler);
/// ```
///
/// Fleet-wide, the same layer over a `RedisConcurrencyLimiter` (feature `redis`):
///
/// ```no_run
/// # #[cfg(feature = "redis")]
/// # async fn fleet() -> Result<(), Box<dyn std::error::Error>> {
/// use ratelimit_concurrent::{KeyedConcurrencyLimitLayer, RedisConcurrencyLimiter};
/// let limiter = RedisConcurrencyLimiter::connect("redis://127.0.0.1:6379", 20).await?;
/// let layer = KeyedConcurrencyLimitLayer::new(limiter, |parts: &http::request::Parts| {
///     parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned)
/// });
/// # let _ = layer; Ok(()) }
/// ```
///
/// | outcome | response |
/// |---|---|
/// | a slot free (at once or after a wait in the queue) | the inner service's response |
/// | the key at its cap, the queue full or the wait over | 429 `concurrency_limited` + `Retry-After` |
/// | fleet limiter's Redis unreachable, fail-closed | 503 `concurrency_unavailable` + `Retry-After: 1` |
/// | fleet limiter misconfigured, any fail mode | 500 `concurrency_misconfigured` |
/// | fleet limiter's state unreadable, any fail mode | 500 `concurrency_state_corrupt` |
///
/// The application supplies the key extractor (API key, principal, client IP); a request without
/// a key is not limited. A request of a key at its cap waits in the limiter's bounded queue if one
/// is configured, else — or when the wait ends without a slot — it gets 429
/// `concurrency_limited` with `Retry-After` and an RFC 9457 problem+json body. The permit is held
/// until the inner service's response future completes (or is dropped).
///
/// The permits come from a [`PermitSource`]: the in-memory [`ConcurrencyLimiter`] (per server)
/// or, with the `redis` feature, a `RedisConcurrencyLimiter` (fleet-wide, on one Redis or a
/// Redis Cluster) — the same layer and the same 429 contract. A fleet limiter whose Redis is
/// unreachable answers 503 `concurrency_unavailable` when failing closed (or hands out a local
/// permit when failing open); a misconfigured one (a single-node client on a cluster) 500
/// `concurrency_misconfigured` under any fail mode.
pub struct KeyedConcurrencyLimitLayer<K, F, L = ConcurrencyLimiter<K>> {
    pub(crate) limiter: L,
    pub(crate) key: Arc<F>,
    #[cfg(feature = "metrics")]
    pub(crate) hot: Arc<HotMetrics>,
    _key: std::marker::PhantomData<fn() -> K>,
}

/// The `metrics` handles of the common outcome, looked up in the recorder on first use and kept:
/// an acquired permit costs an increment and a record, not registry lookups by name and labels.
#[cfg(feature = "metrics")]
#[derive(Default)]
pub(crate) struct HotMetrics {
    /// `concurrency_permits_total{outcome="acquired", reason=""}`.
    pub(crate) acquired: std::sync::OnceLock<metrics::Counter>,
    /// `concurrency_queue_wait_seconds`.
    pub(crate) wait: std::sync::OnceLock<metrics::Histogram>,
}

impl<K, F, L> KeyedConcurrencyLimitLayer<K, F, L>
where
    F: Fn(&Parts) -> Option<K> + Send + Sync + 'static,
    L: PermitSource<K>,
{
    /// A layer taking permits from `limiter` for the key `key` extracts (`None`: not limited).
    pub fn new(limiter: L, key: F) -> Self {
        Self {
            limiter,
            key: Arc::new(key),
            #[cfg(feature = "metrics")]
            hot: Arc::default(),
            _key: std::marker::PhantomData,
        }
    }
}

impl<K, F, L: Clone> Clone for KeyedConcurrencyLimitLayer<K, F, L> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            #[cfg(feature = "metrics")]
            hot: self.hot.clone(),
            _key: std::marker::PhantomData,
        }
    }
}

impl<K, F, L: std::fmt::Debug> std::fmt::Debug for KeyedConcurrencyLimitLayer<K, F, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedConcurrencyLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<K, F, L: Clone, S> Layer<S> for KeyedConcurrencyLimitLayer<K, F, L> {
    type Service = KeyedConcurrencyLimitService<S, K, F, L>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedConcurrencyLimitService {
            inner,
            layer: self.clone(),
        }
    }
}
