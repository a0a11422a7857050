//! [`GrpcRetryLayer`]: retries for gRPC channels.

use super::layer::BoxFuture;
use super::SafeRetryService;
use crate::engine::{History, Retrier, RetryError};
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// Retries for gRPC channels (tonic's `Channel`) and any other client whose request body cannot
/// be made from bytes: the request body is read once (a unary call's one message), each attempt
/// gets a fresh body of it from `make_body`, and the attempts run through a [`SafeRetryLayer`](crate::SafeRetryLayer) — one
/// `idempotency-key` in the metadata for all, `UNAVAILABLE` / `RESOURCE_EXHAUSTED` / `ABORTED`
/// retried by the same rules as 503 / 429 / 409, `grpc-retry-pushback-ms` honoured.
///
/// Only for unary calls: a streaming call's request would be buffered until it ends.
///
/// ```no_run
/// use examples::grpc::pb::{orders_client::OrdersClient, CreateOrderRequest};
/// use retry_client::{GrpcRetryLayer, Retrier, RetryPolicy};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let channel = tonic::transport::Channel::from_static("http://127.0.0.1:8080").connect().await?;
/// let retrier = Retrier::new(RetryPolicy::default().max_attempts(4));
/// let retrying = tower::ServiceBuilder::new()
///     .layer(GrpcRetryLayer::new(retrier, |bytes| {
///         tonic::body::Body::new(http_body_util::Full::new(bytes))
///     }))
///     .service(channel);
/// let mut orders = OrdersClient::new(retrying);
/// // One idempotency-key for every attempt of this call, retried on UNAVAILABLE and the like.
/// let order = orders
///     .create_order(CreateOrderRequest { sku: "tea".into(), quantity: 1 })
///     .await?;
/// # let _ = order; Ok(()) }
/// ```
#[derive(Clone)]
pub struct GrpcRetryLayer<F> {
    retrier: Retrier,
    make_body: F,
}

impl<F> std::fmt::Debug for GrpcRetryLayer<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcRetryLayer")
            .field("retrier", &self.retrier)
            .finish_non_exhaustive()
    }
}

impl<F> GrpcRetryLayer<F> {
    /// Retries with `retrier`; `make_body` makes the transport's request body from the buffered
    /// bytes (for tonic: `|b| tonic::body::Body::new(http_body_util::Full::new(b))`).
    pub fn new(retrier: Retrier, make_body: F) -> Self {
        Self { retrier, make_body }
    }
}

impl<S, F: Clone> Layer<S> for GrpcRetryLayer<F> {
    type Service = GrpcRetryService<S, F>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcRetryService {
            retry: SafeRetryService {
                inner: ToTransport {
                    inner,
                    make_body: self.make_body.clone(),
                },
                retrier: self.retrier.clone(),
            },
        }
    }
}

/// The service made by [`GrpcRetryLayer`].
#[derive(Clone)]
pub struct GrpcRetryService<S, F> {
    retry: SafeRetryService<ToTransport<S, F>>,
}

impl<S, F> std::fmt::Debug for GrpcRetryService<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcRetryService").finish_non_exhaustive()
    }
}

/// Turns the buffered attempts back into the transport's requests.
#[derive(Clone)]
pub struct ToTransport<S, F> {
    inner: S,
    make_body: F,
}

impl<S, F> std::fmt::Debug for ToTransport<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToTransport").finish_non_exhaustive()
    }
}

impl<S, F, TB> Service<Request<http_body_util::Full<Bytes>>> for ToTransport<S, F>
where
    S: Service<Request<TB>>,
    F: Fn(Bytes) -> TB,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<http_body_util::Full<Bytes>>) -> S::Future {
        let (parts, body) = req.into_parts();
        // A `Full` is one frame that cannot fail: read it without awaiting.
        let bytes = {
            let mut body = std::pin::pin!(body);
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            match body.as_mut().poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
                _ => Bytes::new(),
            }
        };
        self.inner
            .call(Request::from_parts(parts, (self.make_body)(bytes)))
    }
}

impl<S, F, TB, RB> Service<Request<TB>> for GrpcRetryService<S, F>
where
    S: Service<Request<TB>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::error::Error + Send + Sync + 'static,
    F: Fn(Bytes) -> TB + Clone + Send + Sync + 'static,
    TB: Body + Send + 'static,
    TB::Data: Send,
    TB::Error: std::error::Error + Send + Sync + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = RetryError<S::Error>;
    type Future = BoxFuture<Result<Response<RB>, RetryError<S::Error>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<TB>) -> Self::Future {
        let mut retry = self.retry.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = match body.collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) => {
                    return Err(RetryError::BodyUnreadable {
                        source: Box::new(e),
                        history: History::default(),
                    })
                }
            };
            retry
                .call(Request::from_parts(parts, http_body_util::Full::new(bytes)))
                .await
        })
    }
}
