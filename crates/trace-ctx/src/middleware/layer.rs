use super::service::TraceContextService;
use tower_layer::Layer;

/// Request ids, trace context, latency and problem+json enrichment for an HTTP service.
///
/// ```
/// use bytes::Bytes;
/// use http::StatusCode;
/// use http_body_util::{BodyExt, Full};
/// use trace_ctx::{Problem, TraceContext, TraceContextLayer};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = ServiceBuilder::new()
///     .layer(TraceContextLayer::new())
///     .service_fn(|req: http::Request<Full<Bytes>>| async move {
///         assert!(req.extensions().get::<TraceContext>().is_some());
///         let problem = Problem::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "Upstream timed out");
///         Ok::<_, std::convert::Infallible>(problem.into_response::<Full<Bytes>>())
///     });
/// let res = svc.oneshot(http::Request::new(Full::new(Bytes::new()))).await.unwrap();
/// let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
/// let body = res.into_body().collect().await.unwrap().to_bytes();
/// let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
/// assert_eq!(body["request_id"], id.as_str());
/// assert!(body["latency_ms"].is_u64());
/// # }
/// ```
///
/// The tower layer (feature `tower`): [`TraceContextLayer`].
///
/// Placed outermost, for each request it:
/// 1. reads the trace context and request id ([`TraceContext::from_headers`](crate::TraceContext::from_headers); never fails) and
///    inserts the [`TraceContext`](crate::TraceContext) into the request's extensions for handlers and inner layers;
/// 2. runs the inner service inside a `tracing` span `request` carrying `request_id`, `trace_id`,
///    `span_id`, method and path;
/// 3. echoes `X-Request-Id` on the response;
/// 4. measures the latency and, when the response is `application/problem+json` (up to
///    [`max_problem_bytes`](TraceContextLayer::max_problem_bytes)), adds `request_id`, `trace_id`,
///    `latency_ms`, `error_code` and `instance` to its body (see [`crate::problem::enrich`]).
///    Other responses stream through untouched.
#[derive(Debug, Clone)]
pub struct TraceContextLayer {
    pub(crate) max_problem_bytes: usize,
    pub(crate) bare_errors: bool,
}

impl TraceContextLayer {
    /// A layer enriching problem bodies up to 64 KiB, and turning bare error responses into
    /// problems (see [`TraceContextLayer::problem_for_bare_errors`]).
    pub fn new() -> Self {
        Self {
            max_problem_bytes: 64 * 1024,
            bare_errors: true,
        }
    }

    /// Whether a 4xx/5xx response that is not problem+json — the router's empty 404 and 405, an
    /// extractor's `text/plain` rejection, a handler's bare status — is rewritten as an RFC 9457
    /// problem (default `true`): `code` from the status (`not_found`, `method_not_allowed`, …,
    /// else `http_<status>`), the original text (up to 512 bytes) as `detail`, every header kept
    /// (`Allow`, `Retry-After`) but the content type and length. Then it is enriched like any
    /// problem.
    pub fn problem_for_bare_errors(mut self, on: bool) -> Self {
        self.bare_errors = on;
        self
    }

    /// The largest problem body enriched (bigger ones pass unchanged).
    pub fn max_problem_bytes(mut self, bytes: usize) -> Self {
        self.max_problem_bytes = bytes;
        self
    }
}

impl Default for TraceContextLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for TraceContextLayer {
    type Service = TraceContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceContextService {
            inner,
            max_problem_bytes: self.max_problem_bytes,
            bare_errors: self.bare_errors,
        }
    }
}
