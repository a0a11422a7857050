//! The tower integration (feature `tower`): [`ConcurrencyLimitLayer`].
//!
//! The application supplies the key extractor (API key, principal, client IP); a request without
//! a key is not limited. A request of a key at its cap waits in the limiter's bounded queue if one
//! is configured, else — or when the wait ends without a slot — it gets 429
//! `concurrency_limited` with `Retry-After` and an RFC 9457 problem+json body. The permit is held
//! until the inner service's response future completes (or is dropped).
//!
//! The permits come from a [`PermitSource`]: the in-memory [`ConcurrencyLimiter`] (per server)
//! or, with the `redis` feature, a `RedisConcurrencyLimiter` (fleet-wide, on one Redis or a
//! Redis Cluster) — the same layer and the same 429 contract. A fleet limiter whose Redis is
//! unreachable answers 503 `concurrency_unavailable` when failing closed (or hands out a local
//! permit when failing open); a misconfigured one (a single-node client on a cluster) 500
//! `concurrency_misconfigured` under any fail mode.

use crate::{BoxError, ConcurrencyLimiter, Limited, Reason};
use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use retry_safe_core::Problem;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// Why a [`PermitSource`] gave no permit.
#[derive(Debug)]
#[non_exhaustive]
pub enum Refusal {
    /// The key is at its cap (429).
    Limited(Limited),
    /// The shared backend could not be reached and the source fails closed (503).
    Unavailable(BoxError),
    /// The shared backend is misconfigured (500, under any fail mode).
    Misconfigured(BoxError),
    /// The shared backend holds unreadable state (500).
    Corrupt(String),
}

/// Where a [`ConcurrencyLimitLayer`] takes its permits: a permit is held while the request runs
/// and frees its slot when dropped.
pub trait PermitSource<K>: Clone + Send + Sync + 'static {
    /// The slot held while a request runs.
    type Permit: Send + 'static;

    /// A permit for `key`, or why there is none.
    fn acquire_permit(&self, key: &K)
        -> impl Future<Output = Result<Self::Permit, Refusal>> + Send;
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> PermitSource<K> for ConcurrencyLimiter<K> {
    type Permit = crate::OwnedPermit<K>;

    async fn acquire_permit(&self, key: &K) -> Result<Self::Permit, Refusal> {
        self.acquire_owned(key).await.map_err(Refusal::Limited)
    }
}

#[cfg(feature = "redis")]
impl<K: std::fmt::Display + Sync> PermitSource<K> for crate::RedisConcurrencyLimiter {
    type Permit = crate::Lease;

    async fn acquire_permit(&self, key: &K) -> Result<Self::Permit, Refusal> {
        use crate::Error;
        self.acquire(&key.to_string()).await.map_err(|e| match e {
            Error::Limited(l) => Refusal::Limited(l),
            Error::Unavailable(e) => Refusal::Unavailable(e),
            Error::Misconfigured(e) => Refusal::Misconfigured(e),
            Error::Corrupt(c) => Refusal::Corrupt(c),
        })
    }
}

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
    limiter: L,
    key: Arc<F>,
    _key: std::marker::PhantomData<fn() -> K>,
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
            _key: std::marker::PhantomData,
        }
    }
}

impl<K, F, L: Clone> Clone for ConcurrencyLimitLayer<K, F, L> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            key: self.key.clone(),
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

/// The service made by [`ConcurrencyLimitLayer`].
pub struct ConcurrencyLimitService<S, K, F, L = ConcurrencyLimiter<K>> {
    inner: S,
    layer: ConcurrencyLimitLayer<K, F, L>,
}

impl<S: Clone, K, F, L: Clone> Clone for ConcurrencyLimitService<S, K, F, L> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, K, F, L: std::fmt::Debug> std::fmt::Debug for ConcurrencyLimitService<S, K, F, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyLimitService")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, K, F, L, ReqB, ResB> Service<Request<ReqB>> for ConcurrencyLimitService<S, K, F, L>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    K: Send + Sync + 'static,
    F: Fn(&Parts) -> Option<K> + Send + Sync + 'static,
    L: PermitSource<K>,
    ReqB: Send + 'static,
    ResB: From<Bytes> + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<ResB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let key = (self.layer.key)(&parts);
        let grpc = retry_safe_core::grpc::is_grpc(&parts.headers);
        let req = Request::from_parts(parts, body);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(key) = key else {
            return Box::pin(inner.call(req));
        };
        let limiter = self.layer.limiter.clone();
        Box::pin(async move {
            #[cfg(feature = "metrics")]
            let started = std::time::Instant::now();
            let acquired = limiter.acquire_permit(&key).await;
            #[cfg(feature = "metrics")]
            record(&acquired, started.elapsed());
            match acquired {
                Ok(permit) => {
                    let res = inner.call(req).await;
                    drop(permit);
                    res
                }
                Err(Refusal::Limited(limited)) => Ok(refusal(&limited, grpc)),
                Err(other) => Ok(backend_failed(&other, grpc)),
            }
        })
    }
}

/// One acquisition to the `metrics` facade: `concurrency_permits_total{outcome, reason}` and the
/// time spent getting the answer, `concurrency_queue_wait_seconds`.
#[cfg(feature = "metrics")]
fn record<P>(acquired: &Result<P, Refusal>, waited: std::time::Duration) {
    let (outcome, reason) = match acquired {
        Ok(_) => ("acquired", ""),
        Err(Refusal::Limited(limited)) => (
            "rejected",
            match limited.reason {
                Reason::Full => "full",
                Reason::QueueFull => "queue_full",
                Reason::TimedOut => "timed_out",
            },
        ),
        Err(Refusal::Unavailable(_)) => ("rejected", "unavailable"),
        Err(Refusal::Misconfigured(_)) => ("rejected", "misconfigured"),
        Err(Refusal::Corrupt(_)) => ("rejected", "corrupt"),
    };
    metrics::counter!("concurrency_permits_total", "outcome" => outcome, "reason" => reason)
        .increment(1);
    metrics::histogram!("concurrency_queue_wait_seconds").record(waited.as_secs_f64());
}

/// The answer when the fleet limiter's backend failed.
fn backend_failed<B: From<Bytes>>(refusal: &Refusal, grpc: bool) -> Response<B> {
    let (status, code, title, detail, retry) = match refusal {
        Refusal::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "concurrency_unavailable",
            "Concurrency limiter unavailable",
            "the shared concurrency limiter cannot be reached; the request was not run",
            true,
        ),
        Refusal::Misconfigured(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "concurrency_misconfigured",
            "Concurrency limiter misconfigured",
            "the server's shared concurrency limiter is misconfigured; the request was not run",
            false,
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "concurrency_state_corrupt",
            "Concurrency limiter state unreadable",
            "the shared concurrency limiter's state could not be read; the request was not run",
            false,
        ),
    };
    let problem = Problem::new(status, code, title).with_detail(detail);
    if retry {
        problem
            .with_retry_after(std::time::Duration::from_secs(1))
            .into_response_if_grpc(grpc)
    } else {
        problem.into_response_if_grpc(grpc)
    }
}

fn refusal<B: From<Bytes>>(limited: &Limited, grpc: bool) -> Response<B> {
    let detail = match limited.reason {
        Reason::Full => format!(
            "{} requests of this client are already in progress, the most allowed at once",
            limited.in_flight
        ),
        Reason::QueueFull => format!(
            "{} requests of this client are in progress and its wait queue is full",
            limited.in_flight
        ),
        Reason::TimedOut => format!(
            "{} requests of this client stayed in progress for the whole wait",
            limited.in_flight
        ),
    };
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "concurrency_limited",
        "Too many requests in progress",
    )
    .with_detail(detail)
    .with("max_in_flight", limited.max)
    .with_retry_after(limited.retry_after)
    .into_response_if_grpc(grpc)
}
