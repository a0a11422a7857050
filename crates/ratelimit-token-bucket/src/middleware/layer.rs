use super::service::KeyedRateLimitService;
use crate::Limiter;
use http::request::Parts;
use http::HeaderValue;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tower_layer::Layer;

pub(crate) type CostFn = dyn Fn(&Parts) -> u32 + Send + Sync;

/// Limits each key's request rate in front of an HTTP service.
///
/// ```
/// use ratelimit_token_bucket::{KeyedLimiter, Quota, Quotas, KeyedRateLimitLayer};
/// use tower::ServiceBuilder;
/// # use bytes::Bytes; use http_body_util::Full;
/// # let handler = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
/// # });
///
/// let limiter = KeyedLimiter::new(Quotas::new([Quota::per_second(10).burst(20)]).unwrap());
/// let layer = KeyedRateLimitLayer::new(limiter, |parts: &http::request::Parts| {
///     parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_owned)
/// });
/// let service = ServiceBuilder::new().layer(layer).service(handler);
/// ```
///
/// The tower integration (feature `tower`): [`KeyedRateLimitLayer`] and its service.
///
/// The application supplies a key extractor (header, client IP, authenticated principal) and,
/// optionally, a cost per request. A request without a key is not limited. Then:
///
/// | outcome | response |
/// |---|---|
/// | allowed | the inner service's response + `RateLimit-Policy` + `RateLimit` |
/// | limited | 429 `rate_limited` + `Retry-After` + `RateLimit-Policy` + `RateLimit` (`r=0`) |
/// | cost larger than a quota's burst | 400 `rate_limit_cost_exceeds_burst` (it could never pass) |
/// | backend unreachable (fail-closed) | 503 `rate_limit_unavailable` + `Retry-After: 1` |
/// | backend misconfigured (a single-node client on a cluster), any fail mode | 500 `rate_limit_misconfigured` |
/// | backend state unreadable | 500 `rate_limit_state_corrupt` |
///
/// The headers follow the IETF draft *RateLimit header fields for HTTP*
/// (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy` lists every quota as
/// `"name";q=<burst>;w=<seconds to refill the burst>`, and `RateLimit` reports the tightest quota
/// as `"name";r=<remaining>;t=<seconds until full>`. Bodies are RFC 9457 problem+json.
pub struct KeyedRateLimitLayer<L, K, F> {
    pub(crate) limiter: Arc<L>,
    pub(crate) key: Arc<F>,
    pub(crate) cost: Arc<CostFn>,
    pub(crate) policy: HeaderValue,
    pub(crate) metrics: Arc<Metrics>,
    _key: PhantomData<fn() -> K>,
}

impl<L, K, F> KeyedRateLimitLayer<L, K, F>
where
    L: Limiter<K>,
    K: Send + Sync + 'static,
    F: Fn(&Parts) -> Option<K> + Send + Sync + 'static,
{
    /// A layer asking `limiter` for the key `key` extracts (`None`: not limited).
    pub fn new(limiter: L, key: F) -> Self {
        Self::from_shared(Arc::new(limiter), key)
    }

    /// A layer on a limiter the application also uses elsewhere.
    pub fn from_shared(limiter: Arc<L>, key: F) -> Self {
        let policy = HeaderValue::from_str(limiter.quotas().policy_header())
            .expect("quota names are validated as printable ASCII");
        Self {
            limiter,
            key: Arc::new(key),
            cost: Arc::new(|_| 1),
            policy,
            metrics: Arc::default(),
            _key: PhantomData,
        }
    }

    /// Weighs requests: `cost` returns the units a request takes (default 1 each).
    pub fn cost(mut self, cost: impl Fn(&Parts) -> u32 + Send + Sync + 'static) -> Self {
        self.cost = Arc::new(cost);
        self
    }

    /// Counters of this layer and every service it made.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }
}

impl<L, K, F> Clone for KeyedRateLimitLayer<L, K, F> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            cost: self.cost.clone(),
            policy: self.policy.clone(),
            metrics: self.metrics.clone(),
            _key: PhantomData,
        }
    }
}

impl<L, K, F> std::fmt::Debug for KeyedRateLimitLayer<L, K, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<L, K, F, S> Layer<S> for KeyedRateLimitLayer<L, K, F> {
    type Service = KeyedRateLimitService<S, L, K, F>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedRateLimitService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) allowed: AtomicU64,
    pub(crate) limited: AtomicU64,
    pub(crate) unkeyed: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// The `metrics` handles of the common outcomes, looked up in the recorder on first use and
    /// kept: an allowed request costs an increment, not a registry lookup by name and labels.
    #[cfg(feature = "metrics")]
    pub(crate) hot: HotMetrics,
}

/// `ratelimit_requests_total{outcome="allowed", quota}` by quota index, and `{outcome="unkeyed"}`.
#[cfg(feature = "metrics")]
#[derive(Debug, Default)]
pub(crate) struct HotMetrics {
    pub(crate) allowed: [std::sync::OnceLock<metrics::Counter>; crate::MAX_QUOTAS],
    pub(crate) unkeyed: std::sync::OnceLock<metrics::Counter>,
}

impl Metrics {
    fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            allowed: self.allowed.load(Ordering::Relaxed),
            limited: self.limited.load(Ordering::Relaxed),
            unkeyed: self.unkeyed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// Counters of a [`KeyedRateLimitLayer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Requests that passed.
    pub allowed: u64,
    /// Requests answered 429.
    pub limited: u64,
    /// Requests without a key, passed unlimited.
    pub unkeyed: u64,
    /// Requests whose cost could never pass (400).
    pub rejected: u64,
    /// Requests answered 503/500 because the backend failed.
    pub failed: u64,
}
