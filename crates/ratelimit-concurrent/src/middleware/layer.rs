use super::service::ConcurrencyLimitService;
use super::PermitSource;
use crate::ConcurrencyLimiter;
use http::request::Parts;
use std::sync::Arc;
use tower_layer::Layer;

/// Caps each key's requests in flight in front of an HTTP service.
///
/// ```
/// use ratelimit_concurrent::{ConcurrencyLimitLayer, ConcurrencyLimiter};
/// use tower::ServiceBuilder;
/// # use bytes::Bytes; use http_body_util::Full;
/// # let handler = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
/// # });
///
/// let limiter = ConcurrencyLimiter::new(20).unwrap();
/// let layer = ConcurrencyLimitLayer::new(limiter, |parts: &http::request::Parts| {
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
/// use ratelimit_concurrent::{ConcurrencyLimitLayer, RedisConcurrencyLimiter};
/// let limiter = RedisConcurrencyLimiter::connect("redis://127.0.0.1:6379", 20).await?;
/// let layer = ConcurrencyLimitLayer::new(limiter, |parts: &http::request::Parts| {
///     parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned)
/// });
/// # let _ = layer; Ok(()) }
/// ```
pub struct ConcurrencyLimitLayer<K, F, L = ConcurrencyLimiter<K>> {
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

impl<K, F, L> ConcurrencyLimitLayer<K, F, L>
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

impl<K, F, L: Clone> Clone for ConcurrencyLimitLayer<K, F, L> {
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

impl<K, F, L: std::fmt::Debug> std::fmt::Debug for ConcurrencyLimitLayer<K, F, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<K, F, L: Clone, S> Layer<S> for ConcurrencyLimitLayer<K, F, L> {
    type Service = ConcurrencyLimitService<S, K, F, L>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimitService {
            inner,
            layer: self.clone(),
        }
    }
}
