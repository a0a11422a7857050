use super::future::KeyedRateLimitFuture;
use super::layer::{KeyedRateLimitLayer, Metrics};
use super::{RATELIMIT, RATELIMIT_POLICY};
use crate::{Decision, Error, Limiter};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode};
use retry_safe_core::{ceil_secs, Problem};
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

/// The service made by [`KeyedRateLimitLayer`].
pub struct KeyedRateLimitService<S, L, K, F> {
    pub(crate) inner: S,
    pub(crate) layer: KeyedRateLimitLayer<L, K, F>,
}

impl<S, L, K, F> KeyedRateLimitService<S, L, K, F> {
    retry_safe_core::inner_service!(S);
}

impl<S: Clone, L, K, F> Clone for KeyedRateLimitService<S, L, K, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, L, K, F> std::fmt::Debug for KeyedRateLimitService<S, L, K, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedRateLimitService")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

impl<S, L, K, F, ReqB, ResB> Service<Request<ReqB>> for KeyedRateLimitService<S, L, K, F>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    L: Limiter<K>,
    K: Send + Sync + 'static,
    F: Fn(&Parts) -> Option<K> + Send + Sync + 'static,
    ReqB: Send + 'static,
    ResB: From<Bytes> + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = KeyedRateLimitFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let key = (self.layer.key)(&parts);
        let Some(key) = key else {
            self.layer.metrics.unkeyed.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "metrics")]
            self.layer
                .metrics
                .hot
                .unkeyed
                .get_or_init(|| metrics::counter!("ratelimit_requests_total", "outcome" => "unkeyed", "quota" => ""))
                .increment(1);
            return KeyedRateLimitFuture::inner(
                self.inner.call(Request::from_parts(parts, body)),
                None,
            );
        };
        let cost = (self.layer.cost)(&parts);
        let req = Request::from_parts(parts, body);
        // An in-memory limiter decides in place: the inner service made ready by `poll_ready` is
        // called now, nothing is boxed or cloned.
        if let Some(decision) = self.layer.limiter.check_now(&key, cost) {
            let limiter = &*self.layer.limiter;
            let metrics = &self.layer.metrics;
            return match answer(
                decision,
                limiter,
                &self.layer.policy,
                metrics,
                req.headers(),
            ) {
                Answer::Allowed(state) => KeyedRateLimitFuture::inner(
                    self.inner.call(req),
                    Some((self.layer.policy.clone(), state)),
                ),
                Answer::Refused(res) => KeyedRateLimitFuture::ready(res),
            };
        }
        // A shared limiter is asked over the network: the inner service is called later, so the
        // clone that was made ready goes into the future and a fresh clone stays here.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.layer.limiter.clone();
        let policy = self.layer.policy.clone();
        let metrics = self.layer.metrics.clone();
        KeyedRateLimitFuture::boxed(Box::pin(async move {
            let decision = limiter.check(&key, cost).await;
            match answer(decision, &*limiter, &policy, &metrics, req.headers()) {
                Answer::Allowed(state) => {
                    let mut res = inner.call(req).await?;
                    let headers = res.headers_mut();
                    headers.insert(RATELIMIT_POLICY, policy);
                    headers.insert(RATELIMIT, state);
                    Ok(res)
                }
                Answer::Refused(res) => Ok(res),
            }
        }))
    }
}

/// What the layer does with one decision.
enum Answer<B> {
    /// Run the request; its response gets this `RateLimit` value.
    Allowed(HeaderValue),
    /// Answer with this refusal instead.
    Refused(Response<B>),
}

/// Counts one decision and turns it into an [`Answer`].
fn answer<K: ?Sized + Sync, L: Limiter<K> + ?Sized, B: From<Bytes>>(
    decision: Result<Decision, Error>,
    limiter: &L,
    policy: &HeaderValue,
    metrics: &Metrics,
    headers: &http::HeaderMap,
) -> Answer<B> {
    // Only a refusal needs to know whether it answers a gRPC call.
    let grpc = || retry_safe_core::grpc::is_grpc(headers);
    let quotas = limiter.quotas();
    match decision {
        Ok(Decision::Allowed(allowed)) => {
            metrics.allowed.fetch_add(1, Ordering::Relaxed);
            let name = quotas.name(allowed.quota());
            #[cfg(feature = "metrics")]
            match metrics.hot.allowed.get(allowed.quota()) {
                Some(hot) => hot
                    .get_or_init(|| metrics::counter!("ratelimit_requests_total", "outcome" => "allowed", "quota" => name.to_owned()))
                    .increment(1),
                None => emit("allowed", name),
            }
            Answer::Allowed(state_header(
                name,
                allowed.remaining(),
                allowed.reset_after(),
            ))
        }
        Ok(Decision::Limited(limited)) => {
            metrics.limited.fetch_add(1, Ordering::Relaxed);
            Answer::Refused(limited_response(&limited, quotas, policy, grpc()))
        }
        Err(Error::CostExceedsBurst(e)) => {
            metrics.rejected.fetch_add(1, Ordering::Relaxed);
            emit("cost_exceeds_burst", quotas.name(e.quota));
            let detail = format!(
                "this request costs {} units; quota \"{}\" never holds more than {}",
                e.cost,
                quotas.name(e.quota),
                e.burst
            );
            Answer::Refused(problem(
                StatusCode::BAD_REQUEST,
                "rate_limit_cost_exceeds_burst",
                "Request larger than the rate limit",
                &detail,
                None,
                grpc(),
            ))
        }
        Err(Error::Backend(e)) => {
            metrics.failed.fetch_add(1, Ordering::Relaxed);
            emit(e.label(), "");
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "rate limiter {}; refusing the request", e.label());
            let problem = e.problem(&BACKEND_CODES);
            let problem = match problem.retry_after() {
                Some(after) => problem.with_retry_after_ms(after),
                None => problem,
            };
            Answer::Refused(problem.into_response_if_grpc(grpc()))
        }
    }
}

/// The 429 of a limited request, with `RateLimit-Policy`, `RateLimit` and `Retry-After`.
fn limited_response<B: From<Bytes>>(
    limited: &crate::Limited,
    quotas: &crate::Quotas,
    policy: &HeaderValue,
    grpc: bool,
) -> Response<B> {
    let name = quotas.name(limited.quota());
    emit("limited", name);
    tracing::debug!(quota = name, retry_after = ?limited.retry_after(), "rate limited");
    let q = &quotas.quotas()[limited.quota()];
    let detail = format!(
        "quota \"{name}\" allows {} requests per {:?} with bursts of {}; retry in {:?}",
        q.rate(),
        q.period(),
        q.burst_size(),
        limited.retry_after()
    );
    let mut res = problem(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "Too many requests",
        &detail,
        Some(limited.retry_after()),
        grpc,
    );
    let headers = res.headers_mut();
    headers.insert(RATELIMIT_POLICY, policy.clone());
    headers.insert(RATELIMIT, state_header(name, 0, limited.reset_after()));
    res
}

/// The codes of the shared limiter's failures.
const BACKEND_CODES: retry_safe_core::BackendCodes = retry_safe_core::BackendCodes {
    name: "rate limiter",
    unavailable: "rate_limit_unavailable",
    misconfigured: "rate_limit_misconfigured",
    corrupt: "rate_limit_state_corrupt",
};

/// One decision to the `metrics` facade (feature `metrics`): `ratelimit_requests_total` with the
/// outcome and the quota that decided it (empty when none did).
#[inline]
#[allow(unused_variables)]
fn emit(outcome: &'static str, quota: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("ratelimit_requests_total", "outcome" => outcome, "quota" => quota.to_owned())
        .increment(1);
}

/// `"name";r=<remaining>;t=<seconds, rounded up>`, built as bytes (one allocation, the
/// value's own; no formatter).
fn state_header(name: &str, remaining: u64, reset_after: Duration) -> HeaderValue {
    let t = ceil_secs(reset_after);
    let mut v = Vec::with_capacity(name.len() + 48);
    v.push(b'"');
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(b"\";r=");
    let mut digits = itoa::Buffer::new();
    v.extend_from_slice(digits.format(remaining).as_bytes());
    v.extend_from_slice(b";t=");
    v.extend_from_slice(digits.format(t).as_bytes());
    HeaderValue::from_maybe_shared(Bytes::from(v))
        .expect("quota names are validated as printable ASCII")
}

fn problem<B: From<Bytes>>(
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: &str,
    retry_after: Option<Duration>,
    grpc: bool,
) -> Response<B> {
    let problem = Problem::new(status, code, title).with_detail(detail);
    match retry_after {
        Some(after) => problem.with_retry_after_ms(after),
        None => problem,
    }
    .into_response_if_grpc(grpc)
}
