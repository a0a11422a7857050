use super::future::KeyedConcurrencyLimitFuture;
use super::layer::KeyedConcurrencyLimitLayer;
use super::PermitSource;
use crate::Error;
use crate::{ConcurrencyLimiter, Limited, Reason};
use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use retry_safe_core::Problem;
use std::task::{Context, Poll};
use tower_service::Service;

/// The service made by [`KeyedConcurrencyLimitLayer`].
pub struct KeyedConcurrencyLimitService<S, K, F, L = ConcurrencyLimiter<K>> {
    pub(crate) inner: S,
    pub(crate) layer: KeyedConcurrencyLimitLayer<K, F, L>,
}

impl<S, K, F, L> KeyedConcurrencyLimitService<S, K, F, L> {
    retry_safe_core::inner_service!(S);
}

impl<S: Clone, K, F, L: Clone> Clone for KeyedConcurrencyLimitService<S, K, F, L> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, K, F, L: std::fmt::Debug> std::fmt::Debug for KeyedConcurrencyLimitService<S, K, F, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedConcurrencyLimitService")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

impl<S, K, F, L, ReqB, ResB> Service<Request<ReqB>> for KeyedConcurrencyLimitService<S, K, F, L>
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
    type Future = KeyedConcurrencyLimitFuture<S::Future, L::Permit, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let Some(key) = (self.layer.key)(&parts) else {
            return KeyedConcurrencyLimitFuture::running(
                self.inner.call(Request::from_parts(parts, body)),
                None,
            );
        };
        let req = Request::from_parts(parts, body);
        // Only a refusal needs to know whether it answers a gRPC call.
        let grpc = |req: &Request<ReqB>| retry_safe_core::grpc::is_grpc(req.headers());
        // A free slot in memory is taken in place: the inner service made ready by `poll_ready`
        // is called now, nothing is boxed or cloned.
        if let Some(acquired) = self.layer.limiter.acquire_now(&key) {
            #[cfg(feature = "metrics")]
            record(&self.layer.hot, &acquired, std::time::Duration::ZERO);
            return match acquired {
                Ok(permit) => {
                    KeyedConcurrencyLimitFuture::running(self.inner.call(req), Some(permit))
                }
                Err(refused) => KeyedConcurrencyLimitFuture::ready(answer(&refused, grpc(&req))),
            };
        }
        // Waiting in the queue or asking the fleet: the inner service is called later, so the
        // clone that was made ready goes into the future and a fresh clone stays here.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.layer.limiter.clone();
        #[cfg(feature = "metrics")]
        let hot = self.layer.hot.clone();
        KeyedConcurrencyLimitFuture::boxed(Box::pin(async move {
            #[cfg(feature = "metrics")]
            let started = std::time::Instant::now();
            let acquired = limiter.acquire_permit(&key).await;
            #[cfg(feature = "metrics")]
            record(&hot, &acquired, started.elapsed());
            match acquired {
                Ok(permit) => {
                    let res = inner.call(req).await;
                    drop(permit);
                    res
                }
                Err(refused) => Ok(answer(&refused, grpc(&req))),
            }
        }))
    }
}

/// The answer to a request that got no permit.
fn answer<B: From<Bytes>>(refused: &Error, grpc: bool) -> Response<B> {
    match refused {
        Error::Limited(limited) => refusal(limited, grpc),
        Error::Backend(e) => e.problem(&BACKEND_CODES).into_response_if_grpc(grpc),
    }
}

/// One acquisition to the `metrics` facade: `concurrency_permits_total{outcome, reason}` and the
/// time spent getting the answer, `concurrency_queue_wait_seconds`.
#[cfg(feature = "metrics")]
fn record<P>(
    hot: &super::layer::HotMetrics,
    acquired: &Result<P, Error>,
    waited: std::time::Duration,
) {
    let (outcome, reason) = match acquired {
        Ok(_) => ("acquired", ""),
        Err(Error::Limited(limited)) => (
            "rejected",
            match limited.reason {
                Reason::Full => "full",
                Reason::QueueFull => "queue_full",
                Reason::TimedOut => "timed_out",
            },
        ),
        Err(Error::Backend(e)) => ("rejected", e.label()),
    };
    if acquired.is_ok() {
        hot.acquired
            .get_or_init(|| {
                metrics::counter!("concurrency_permits_total", "outcome" => outcome, "reason" => reason)
            })
            .increment(1);
    } else {
        metrics::counter!("concurrency_permits_total", "outcome" => outcome, "reason" => reason)
            .increment(1);
    }
    hot.wait
        .get_or_init(|| metrics::histogram!("concurrency_queue_wait_seconds"))
        .record(waited.as_secs_f64());
}

/// The codes of the fleet limiter's backend failures.
const BACKEND_CODES: retry_safe_core::BackendCodes = retry_safe_core::BackendCodes {
    name: "concurrency limiter",
    unavailable: "concurrency_unavailable",
    misconfigured: "concurrency_misconfigured",
    corrupt: "concurrency_state_corrupt",
};

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
