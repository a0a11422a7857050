//! The tower integration (feature `tower`): [`ConcurrencyLimitLayer`].
//!
//! The application supplies the key extractor (API key, principal, client IP); a request without
//! a key is not limited. A request of a key at its cap waits in the limiter's bounded queue if one
//! is configured, else — or when the wait ends without a slot — it gets 429
//! `concurrency_limited` with `Retry-After` and an RFC 9457 problem+json body. The permit is held
//! until the inner service's response future completes (or is dropped).

use crate::{ConcurrencyLimiter, Limited, Reason};
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
pub struct ConcurrencyLimitLayer<K, F> {
    limiter: ConcurrencyLimiter<K>,
    key: Arc<F>,
}

impl<K, F> ConcurrencyLimitLayer<K, F>
where
    F: Fn(&Parts) -> Option<K> + Send + Sync + 'static,
{
    /// A layer taking permits from `limiter` for the key `key` extracts (`None`: not limited).
    pub fn new(limiter: ConcurrencyLimiter<K>, key: F) -> Self {
        Self {
            limiter,
            key: Arc::new(key),
        }
    }
}

impl<K, F> Clone for ConcurrencyLimitLayer<K, F> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            key: self.key.clone(),
        }
    }
}

impl<K, F> std::fmt::Debug for ConcurrencyLimitLayer<K, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<K, F, S> Layer<S> for ConcurrencyLimitLayer<K, F> {
    type Service = ConcurrencyLimitService<S, K, F>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimitService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`ConcurrencyLimitLayer`].
pub struct ConcurrencyLimitService<S, K, F> {
    inner: S,
    layer: ConcurrencyLimitLayer<K, F>,
}

impl<S: Clone, K, F> Clone for ConcurrencyLimitService<S, K, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, K, F> std::fmt::Debug for ConcurrencyLimitService<S, K, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyLimitService")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, K, F, ReqB, ResB> Service<Request<ReqB>> for ConcurrencyLimitService<S, K, F>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    K: Hash + Eq + Clone + Send + Sync + 'static,
    F: Fn(&Parts) -> Option<K> + Send + Sync + 'static,
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
            let acquired = limiter.acquire(&key).await;
            #[cfg(feature = "metrics")]
            record(&acquired, started.elapsed());
            match acquired {
                Ok(permit) => {
                    let res = inner.call(req).await;
                    drop(permit);
                    res
                }
                Err(limited) => Ok(refusal(&limited)),
            }
        })
    }
}

/// One acquisition to the `metrics` facade: `concurrency_permits_total{outcome, reason}` and the
/// time spent getting the answer, `concurrency_queue_wait_seconds`.
#[cfg(feature = "metrics")]
fn record<P>(acquired: &Result<P, Limited>, waited: std::time::Duration) {
    let (outcome, reason) = match acquired {
        Ok(_) => ("acquired", ""),
        Err(limited) => (
            "rejected",
            match limited.reason {
                Reason::Full => "full",
                Reason::QueueFull => "queue_full",
                Reason::TimedOut => "timed_out",
            },
        ),
    };
    metrics::counter!("concurrency_permits_total", "outcome" => outcome, "reason" => reason)
        .increment(1);
    metrics::histogram!("concurrency_queue_wait_seconds").record(waited.as_secs_f64());
}

fn refusal<B: From<Bytes>>(limited: &Limited) -> Response<B> {
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
    .into_response()
}
