use super::future::TraceContextFuture;
use crate::TraceContext;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use std::task::{Context, Poll};
use std::time::Instant;
use tower_service::Service;
use tracing::Instrument;

/// The service made by [`TraceContextLayer`](super::TraceContextLayer).
#[derive(Debug, Clone)]
pub struct TraceContextService<S> {
    pub(crate) inner: S,
    pub(crate) max_problem_bytes: usize,
    pub(crate) bare_errors: bool,
}

impl<S> TraceContextService<S> {
    retry_safe_core::inner_service!(S);
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for TraceContextService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + From<Bytes> + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = TraceContextFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let started = Instant::now();
        let ctx = TraceContext::from_headers(req.headers());
        let span = tracing::info_span!(
            "request",
            request_id = %ctx.request_id(),
            trace_id = %ctx.trace_id(),
            span_id = %ctx.span_id(),
            method = %req.method(),
            path = %req.uri().path(),
        );
        // A cheap, reference-counted copy: the path is only read if a problem body comes back.
        let uri = req.uri().clone();
        let grpc = retry_safe_core::grpc::is_grpc(req.headers());
        req.extensions_mut().insert(ctx.clone());
        TraceContextFuture::new(
            self.inner.call(req).instrument(span),
            Pending {
                ctx,
                started,
                uri,
                grpc,
                max: self.max_problem_bytes,
                bare_errors: self.bare_errors,
            },
        )
    }
}

/// What a response still needs once the inner service answered.
pub(crate) struct Pending {
    pub(crate) ctx: TraceContext,
    pub(crate) started: Instant,
    pub(crate) uri: http::Uri,
    pub(crate) grpc: bool,
    pub(crate) max: usize,
    pub(crate) bare_errors: bool,
}
