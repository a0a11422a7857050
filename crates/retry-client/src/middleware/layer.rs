//! [`SafeRetryLayer`]: retries for any tower client of `http::Request<B>`.

use crate::engine::{classify_error, History, Retrier, RetryError, Sent};
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use retry_safe_core::BoxError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// Retries for a tower client service: one `Idempotency-Key` per logical request, reused by every
/// attempt; only safe failures retried; backoff, server hints, deadline and the shared budget of
/// its [`Retrier`]. The response carries the [`History`] in its extensions.
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use retry_client::{History, Retrier, SafeRetryLayer, RetryPolicy};
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// // A server that is briefly unavailable, then creates the order.
/// let calls = Arc::new(AtomicU32::new(0));
/// let seen = calls.clone();
/// let server = tower::service_fn(move |req: Request<Full<Bytes>>| {
///     let n = seen.fetch_add(1, Ordering::SeqCst);
///     assert!(req.headers().contains_key("idempotency-key")); // generated once, sent every time
///     let status = if n < 2 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::CREATED };
///     async move { Ok::<_, std::io::Error>(Response::builder().status(status).body(Full::new(Bytes::new())).unwrap()) }
/// });
/// let client = ServiceBuilder::new()
///     .layer(SafeRetryLayer::new(Retrier::new(RetryPolicy::default().max_attempts(3))))
///     .service(server);
/// let res = client.oneshot(Request::post("/orders").body(Full::new(Bytes::from("{}"))).unwrap()).await.unwrap();
/// assert_eq!(res.status(), StatusCode::CREATED);
/// assert_eq!(res.extensions().get::<History>().unwrap().len(), 3);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SafeRetryLayer {
    retrier: Retrier,
}

impl SafeRetryLayer {
    /// A layer retrying with `retrier` (clones share its budget).
    pub fn new(retrier: Retrier) -> Self {
        Self { retrier }
    }
}

impl<S> Layer<S> for SafeRetryLayer {
    type Service = SafeRetryService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SafeRetryService {
            inner,
            retrier: self.retrier.clone(),
        }
    }
}

/// The service made by [`SafeRetryLayer`].
#[derive(Debug, Clone)]
pub struct SafeRetryService<S> {
    pub(super) inner: S,
    pub(super) retrier: Retrier,
}

impl<S> SafeRetryService<S> {
    retry_safe_core::inner_service!(S);
}

pub(super) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<Request<B>> for SafeRetryService<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::error::Error + Send + Sync + 'static,
    B: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = RetryError<S::Error>;
    type Future = BoxFuture<Result<Response<RB>, RetryError<S::Error>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each attempt waits for the inner service's readiness itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let retrier = self.retrier.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let history = History {
                idempotency_key: retrier.key_request(&parts.method, &mut parts.headers),
                ..History::default()
            };
            let keyed = history.idempotency_key.is_some();
            // A replayable body is buffered once; any other is sent as is, once.
            let (bytes, mut once) = match buffer(body, retrier.policy.max_body).await {
                Ok(read) => read,
                Err(source) => return Err(RetryError::BodyUnreadable { source, history }),
            };
            let method = parts.method.clone();
            let (mut res, history) = retrier
                .run(
                    &method,
                    keyed,
                    bytes.is_some(),
                    history,
                    |r: &Response<RB>| (effective_status(r), r.headers()),
                    move |_n, timeout| {
                        let body = match (&bytes, once.take()) {
                            (Some(b), _) => B::from(b.clone()),
                            (None, Some(b)) => b,
                            (None, None) => B::from(Bytes::new()),
                        };
                        send(inner.clone(), attempt_of(&parts, body), timeout)
                    },
                )
                .await?;
            res.extensions_mut().insert(history);
            Ok(res)
        })
    }
}

/// The body buffered when its exact size is known and at most `max` (it can be sent again), or
/// handed back as it is (sent once).
async fn buffer<B>(body: B, max: usize) -> Result<(Option<Bytes>, Option<B>), BoxError>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let fits = body.size_hint().exact().is_some_and(|n| n <= max as u64);
    if !fits {
        return Ok((None, Some(body)));
    }
    match body.collect().await {
        Ok(c) => Ok((Some(c.to_bytes()), None)),
        Err(e) => Err(Box::new(e)),
    }
}

/// One attempt's request: the logical request's parts (a new span id per attempt with the
/// `trace-ctx` feature) and `body`.
fn attempt_of<B>(parts: &http::request::Parts, body: B) -> Request<B> {
    #[cfg_attr(not(feature = "trace-ctx"), allow(unused_mut))]
    let mut attempt = Request::from_parts(parts_clone(parts), ());
    #[cfg(feature = "trace-ctx")]
    if let Some(ctx) = parts.extensions.get::<trace_ctx::TraceContext>() {
        ctx.inject(attempt.headers_mut());
    }
    attempt.map(|()| body)
}

/// Sends one attempt on `svc` once it is ready, within `timeout`.
async fn send<S, B, RB>(
    mut svc: S,
    req: Request<B>,
    timeout: Option<std::time::Duration>,
) -> Sent<Response<RB>, S::Error>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: std::error::Error + 'static,
{
    let call = async {
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
        svc.call(req).await
    };
    let result = match timeout {
        Some(t) => match tokio::time::timeout(t, call).await {
            Ok(r) => r,
            Err(_) => return Sent::TimedOut,
        },
        None => call.await,
    };
    match result {
        Ok(res) => Sent::Response(res),
        Err(e) => {
            let failure = classify_error(&e);
            Sent::Error(e, failure)
        }
    }
}

/// The status that decides a retry: the HTTP status, or for a trailers-only gRPC answer (HTTP
/// 200 with `grpc-status` in its headers, as gRPC errors are sent) the HTTP equivalent of its
/// code — `UNAVAILABLE` 503, `RESOURCE_EXHAUSTED` 429, `ABORTED` 409, `INTERNAL` 500,
/// `DEADLINE_EXCEEDED` 504, `INVALID_ARGUMENT` 400… — so gRPC calls follow the same safety rules.
fn effective_status<B>(res: &Response<B>) -> http::StatusCode {
    if res.status() == http::StatusCode::OK && retry_safe_core::grpc::is_grpc(res.headers()) {
        if let Some(code) = retry_safe_core::grpc::status_of(res.headers()) {
            return code.http_status();
        }
    }
    res.status()
}

fn parts_clone(parts: &http::request::Parts) -> http::request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    *req.extensions_mut() = parts.extensions.clone();
    req.into_parts().0
}
