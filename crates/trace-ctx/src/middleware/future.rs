//! The response future of [`TraceContextService`](super::TraceContextService) and the work on the bodies it
//! rewrites.

use super::service::Pending;
use crate::problem::{enrich, is_problem, Problem};
use crate::TraceContext;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project_lite::pin_project! {
    /// The response future of [`TraceContextService`](super::TraceContextService): the inner service's future, then — only for a
    /// problem body to enrich, a bare error to rewrite or an HTTP error to a gRPC request — the
    /// work on the body. A response that needs none (most of them) costs no allocation here.
    pub struct TraceContextFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Inner {
            #[pin]
            fut: tracing::instrument::Instrumented<F>,
            pending: Option<Pending>,
        },
        Finish {
            fut: BoxFuture<Response<B>>,
        },
    }
}

impl<F, B> TraceContextFuture<F, B> {
    pub(crate) fn new(fut: tracing::instrument::Instrumented<F>, pending: Pending) -> Self {
        Self {
            state: State::Inner {
                fut,
                pending: Some(pending),
            },
        }
    }
}

impl<F, B> std::fmt::Debug for TraceContextFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceContextFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for TraceContextFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes> + From<Bytes> + Send + 'static,
{
    type Output = Result<Response<B>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project().state.project() {
                StateProj::Inner { fut, pending } => {
                    let mut res = match fut.poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(res)) => res,
                    };
                    let Some(p) = pending.take() else {
                        return Poll::Ready(Ok(res)); // polled again after completion
                    };
                    res.headers_mut()
                        .insert("x-request-id", p.ctx.request_id().to_header_value());
                    let error = res.status().is_client_error() || res.status().is_server_error();
                    if p.grpc {
                        if retry_safe_core::grpc::is_grpc(res.headers()) {
                            return Poll::Ready(Ok(grpc_failed_call(res, &p.ctx)));
                        }
                        if !error {
                            return Poll::Ready(Ok(res));
                        }
                    } else if !(is_problem(res.headers()) || (p.bare_errors && error)) {
                        return Poll::Ready(Ok(res));
                    }
                    let finish: BoxFuture<Response<B>> = Box::pin(finish(res, error, p));
                    self.as_mut()
                        .project()
                        .state
                        .set(State::Finish { fut: finish });
                }
                StateProj::Finish { fut } => return fut.as_mut().poll(cx).map(Ok),
            }
        }
    }
}

/// The work on a response's body: the gRPC status of an HTTP error to a gRPC request, or the
/// problem (rewritten from a bare error if need be) enriched with ids and latency.
async fn finish<B>(mut res: Response<B>, error: bool, p: Pending) -> Response<B>
where
    B: Body<Data = Bytes> + From<Bytes>,
{
    if p.grpc {
        return grpc_answer(res, error, &p.ctx, p.max).await;
    }
    if !is_problem(res.headers()) {
        res = to_problem(res).await;
    }
    let small = res
        .body()
        .size_hint()
        .upper()
        .is_some_and(|n| n as usize <= p.max);
    if !small {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let Ok(collected) = body.collect().await else {
        // The body failed while being read: nothing of it can be sent any more.
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, B::from(Bytes::new()));
    };
    let bytes = collected.to_bytes();
    let latency_ms = u64::try_from(p.started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let trace_id = p.ctx.trace_id().to_string();
    let body = match enrich(
        &bytes,
        parts.status,
        p.ctx.request_id().as_str(),
        &trace_id,
        latency_ms,
        p.uri.path(),
    ) {
        Some(enriched) => Bytes::from(enriched),
        None => bytes,
    };
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, B::from(body))
}

/// A gRPC answer to a gRPC request passes; a failed call gets `x-trace-id`.
fn grpc_failed_call<B>(mut res: Response<B>, ctx: &TraceContext) -> Response<B> {
    use retry_safe_core::grpc;
    if grpc::status_of(res.headers()).is_some_and(|c| c != grpc::Code::Ok) {
        if let Ok(v) = HeaderValue::from_str(&ctx.trace_id().to_string()) {
            res.headers_mut().insert("x-trace-id", v);
        }
    }
    res
}

/// The stable code of a status without a problem body of its own.
fn status_code_name(status: StatusCode) -> std::borrow::Cow<'static, str> {
    let name = match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        408 => "request_timeout",
        409 => "conflict",
        411 => "length_required",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "unprocessable_content",
        429 => "too_many_requests",
        431 => "request_header_fields_too_large",
        500 => "internal_error",
        501 => "not_implemented",
        502 => "bad_gateway",
        503 => "service_unavailable",
        504 => "gateway_timeout",
        other => return format!("http_{other}").into(),
    };
    name.into()
}

/// The answer to a gRPC request. A gRPC answer passes; a failed one gets `x-trace-id`. An HTTP
/// error (a 404 or 405 of the router, a 413, an extractor's rejection, a problem+json of a layer
/// or handler that does not speak gRPC) becomes the trailers-only gRPC status of its problem, with
/// `request_id` and `trace_id` in the `ErrorInfo` metadata: a gRPC client never sees an HTTP error.
async fn grpc_answer<B>(
    res: Response<B>,
    error: bool,
    ctx: &TraceContext,
    max: usize,
) -> Response<B>
where
    B: Body<Data = Bytes> + From<Bytes>,
{
    let trace_id = ctx.trace_id().to_string();
    if retry_safe_core::grpc::is_grpc(res.headers()) {
        return grpc_failed_call(res, ctx);
    }
    if !error {
        return res;
    }
    let (parts, body) = res.into_parts();
    let status = parts.status;
    let fallback_title = status.canonical_reason().unwrap_or("Error");
    let mut problem = Problem::new(status, status_code_name(status), fallback_title);
    let small = body.size_hint().upper().is_some_and(|n| n as usize <= max);
    if is_problem(&parts.headers) && small {
        if let Ok(collected) = body.collect().await {
            if let Ok(serde_json::Value::Object(map)) =
                serde_json::from_slice::<serde_json::Value>(&collected.to_bytes())
            {
                let text = |k: &str| map.get(k).and_then(|v| v.as_str()).map(str::to_owned);
                let code = text("error_code").or_else(|| text("code"));
                let title = text("title");
                problem = Problem::new(
                    status,
                    code.unwrap_or_else(|| status_code_name(status).into_owned()),
                    title.unwrap_or_else(|| fallback_title.to_owned()),
                );
                if let Some(detail) = text("detail") {
                    problem = problem.with_detail(detail);
                }
            }
        }
    }
    if let Some(after) =
        retry_safe_core::headers::retry_after(&parts.headers, std::time::SystemTime::now())
    {
        problem = problem.with_retry_after(after);
    }
    let problem = problem
        .with("request_id", ctx.request_id().as_str())
        .with("trace_id", trace_id.as_str());
    let mut rendered: Response<B> = problem.into_grpc_response();
    if let Some(id) = parts.headers.get("x-request-id") {
        rendered.headers_mut().insert("x-request-id", id.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&trace_id) {
        rendered.headers_mut().insert("x-trace-id", v);
    }
    rendered
}

/// Rewrites a bare error response as a problem (see [`TraceContextLayer::problem_for_bare_errors`]).
async fn to_problem<B>(res: Response<B>) -> Response<B>
where
    B: Body<Data = Bytes> + From<Bytes>,
{
    const MAX_DETAIL: usize = 512;
    let (mut parts, body) = res.into_parts();
    let small = body.size_hint().upper().is_some_and(|n| n <= 4096);
    let text = if small {
        match body.collect().await {
            Ok(c) => String::from_utf8_lossy(&c.to_bytes()).trim().to_owned(),
            Err(_) => String::new(),
        }
    } else {
        String::new()
    };
    let status = parts.status;
    let title = status.canonical_reason().unwrap_or("Error");
    let mut problem = Problem::new(status, status_code_name(status), title);
    if !text.is_empty() {
        let mut end = text.len().min(MAX_DETAIL);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        problem = problem.with_detail(&text[..end]);
    }
    let rendered: Response<B> = problem.into_response();
    let (new_parts, body) = rendered.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &new_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, body)
}
