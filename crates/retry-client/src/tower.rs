//! The tower integration (feature `tower`): [`RetryLayer`] around any client
//! `Service<http::Request<B>>` (hyper-util's client, a tonic channel, an axum router in tests).

use crate::engine::{classify_error, History, Retrier, RetryError, Sent};
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use retry_safe_core::headers::IDEMPOTENCY_KEY;
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
/// use retry_client::{History, Retrier, RetryLayer, RetryPolicy};
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
///     .layer(RetryLayer::new(Retrier::new(RetryPolicy::default().max_attempts(3))))
///     .service(server);
/// let res = client.oneshot(Request::post("/orders").body(Full::new(Bytes::from("{}"))).unwrap()).await.unwrap();
/// assert_eq!(res.status(), StatusCode::CREATED);
/// assert_eq!(res.extensions().get::<History>().unwrap().len(), 3);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RetryLayer {
    retrier: Retrier,
}

impl RetryLayer {
    /// A layer retrying with `retrier` (clones share its budget).
    pub fn new(retrier: Retrier) -> Self {
        Self { retrier }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = RetryService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RetryService {
            inner,
            retrier: self.retrier.clone(),
        }
    }
}

/// The service made by [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct RetryService<S> {
    inner: S,
    retrier: Retrier,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<Request<B>> for RetryService<S>
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
            let mut history = History::default();
            if let Some(format) = retrier.policy.wants_key(&parts.method, &parts.headers) {
                let key = format.generate();
                if let Ok(v) = HeaderValue::from_str(&key) {
                    parts.headers.insert(IDEMPOTENCY_KEY, v);
                }
            }
            history.idempotency_key = parts
                .headers
                .get(IDEMPOTENCY_KEY)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let keyed = history.idempotency_key.is_some();
            let fits = body
                .size_hint()
                .exact()
                .is_some_and(|n| n <= retrier.policy.max_body as u64);
            // A replayable body is buffered once; any other is sent as is, once.
            let (bytes, mut once) = if fits {
                match body.collect().await {
                    Ok(c) => (Some(c.to_bytes()), None),
                    Err(e) => {
                        return Err(RetryError::BodyUnreadable {
                            source: Box::new(e),
                            history,
                        })
                    }
                }
            } else {
                (None, Some(body))
            };
            let method = parts.method.clone();
            let replayable = bytes.is_some();
            let (res, history) = retrier
                .run(
                    &method,
                    keyed,
                    replayable,
                    history,
                    |r: &Response<RB>| (r.status(), r.headers()),
                    move |_n, timeout| {
                        let mut svc = inner.clone();
                        #[cfg_attr(not(feature = "trace-ctx"), allow(unused_mut))]
                        let mut attempt = Request::from_parts(parts_clone(&parts), ());
                        #[cfg(feature = "trace-ctx")]
                        if let Some(ctx) = parts.extensions.get::<trace_ctx::TraceContext>() {
                            ctx.inject(attempt.headers_mut()); // a new span id per attempt
                        }
                        let body = match (&bytes, once.take()) {
                            (Some(b), _) => B::from(b.clone()),
                            (None, Some(b)) => b,
                            (None, None) => B::from(Bytes::new()),
                        };
                        let req = attempt.map(|()| body);
                        async move {
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
                    },
                )
                .await?;
            let mut res = res;
            res.extensions_mut().insert(history);
            Ok(res)
        })
    }
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
