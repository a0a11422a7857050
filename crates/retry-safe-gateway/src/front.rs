//! The front of the gateway: framing checks, the route table, request buffering, API keys, then
//! the route's stack; and the access log of what came out.

use crate::keys::{anonymous, Principal};
use crate::proxy::Peer;
use crate::routes::Lookup;
use crate::stack::Runtime;
use crate::Body;
use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use retry_safe_core::body::{declared_length, read_body, REQUEST_BODY_CODES as REQUEST_BODY};
use retry_safe_core::Problem;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::ServiceExt;
use tower_service::Service;

/// The service every connection runs (inside the trace-context layer): the current config's.
#[derive(Clone)]
pub(crate) struct Dispatch {
    pub(crate) current: Arc<ArcSwap<Runtime>>,
}

impl Service<Request<Body>> for Dispatch {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let rt = self.current.load_full();
        Box::pin(async move { Ok(logged(rt, req).await) })
    }
}

/// What the access log says of a request, gathered before it is handed on.
struct Entry {
    start: Instant,
    method: http::Method,
    path: String,
    request_id: String,
    trace_id: String,
    client: Option<std::net::IpAddr>,
}

async fn logged(rt: Arc<Runtime>, req: Request<Body>) -> Response<Body> {
    if !rt.config.limits.access_log {
        let (route, _, res) = dispatch(&rt, req).await;
        counters(&rt, route).count(res.status());
        return res;
    }
    let ctx = req.extensions().get::<trace_ctx::TraceContext>();
    let entry = Entry {
        start: Instant::now(),
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        request_id: ctx
            .map(|c| c.request_id().as_str().to_owned())
            .unwrap_or_default(),
        trace_id: ctx.map(|c| c.trace_id().to_string()).unwrap_or_default(),
        client: req
            .extensions()
            .get::<Peer>()
            .map(|p| rt.client_ip.resolve(p.addr.ip(), req.headers())),
    };
    let (route, principal, res) = dispatch(&rt, req).await;
    counters(&rt, route).count(res.status());
    let (res, code) = problem_code(res).await;
    let name = route.map(|i| &*rt.routes[i].name);
    log(
        &entry,
        name,
        principal.as_ref(),
        res.status(),
        code.as_deref(),
    );
    res
}

fn counters(rt: &Runtime, route: Option<usize>) -> &crate::metrics::StatusCounters {
    route.map_or(&rt.unrouted, |i| &rt.routes[i].counters)
}

/// The `error_code` of a problem response (its body is small and in memory), and the response.
async fn problem_code(res: Response<Body>) -> (Response<Body>, Option<String>) {
    let small = res
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n <= 16 * 1024);
    if !small || !retry_safe_core::is_problem(res.headers()) {
        return (res, None);
    }
    let (parts, body) = res.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let code = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.get("error_code")
                .and_then(|c| c.as_str())
                .map(str::to_owned)
        });
    (Response::from_parts(parts, Body::from(bytes)), code)
}

/// One JSON line on stdout. Neither API keys nor any other header is written.
fn log(
    e: &Entry,
    route: Option<&str>,
    principal: Option<&Principal>,
    status: StatusCode,
    code: Option<&str>,
) {
    let line = serde_json::json!({
        "ts": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        "method": e.method.as_str(),
        "path": e.path,
        "route": route,
        "status": status.as_u16(),
        "latency_ms": e.start.elapsed().as_secs_f64() * 1000.0,
        "request_id": e.request_id,
        "trace_id": e.trace_id,
        "error_code": code,
        "principal": principal.map(|p| &*p.name),
        "client": e.client.map(|ip| ip.to_string()),
    });
    crate::events::stdout_line(&line);
}

/// The route's answer: framing, route, body and key checked first, in that order.
async fn dispatch(
    rt: &Runtime,
    req: Request<Body>,
) -> (Option<usize>, Option<Principal>, Response<Body>) {
    if let Some(problem) = smuggling(req.headers()) {
        return (None, None, problem.into_response());
    }
    let index = match rt.table.find(req.method(), req.uri().path()) {
        Lookup::Found(i) => i,
        Lookup::NotFound => return (None, None, not_found(req.uri().path())),
        Lookup::MethodNotAllowed(allow) => return (None, None, method_not_allowed(&allow)),
    };
    let route = &rt.routes[index];
    let (mut parts, body) = req.into_parts();
    let principal = match authenticate(rt, &parts.headers, route.auth) {
        Ok(p) => p,
        Err(problem) => {
            let mut res: Response<Body> = problem.into_response();
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return (Some(index), None, res);
        }
    };
    parts.extensions.insert(principal.clone());
    let body = if crate::proxy::wants_upgrade(&parts.headers) {
        body
    } else {
        match read_body(body, declared_length(&parts.headers), rt.body).await {
            Ok(bytes) => Body::from(bytes),
            Err(e) => {
                return (
                    Some(index),
                    Some(principal),
                    e.problem(&REQUEST_BODY).into_response(),
                )
            }
        }
    };
    let svc = principal
        .plan
        .and_then(|i| route.plans.get(i))
        .unwrap_or(&route.base)
        .clone();
    let res = svc
        .oneshot(Request::from_parts(parts, body))
        .await
        .unwrap_or_else(|never| match never {});
    (Some(index), Some(principal), res)
}

/// A request framed two ways at once is refused: proxies that read the two framings differently
/// are how requests are smuggled past them. hyper's HTTP/1 parser already answers 400 to
/// different lengths and to a transfer coding other than chunked, and reads `Transfer-Encoding`
/// with `Content-Length` by the chunked framing alone, closing the connection after it (RFC 9112
/// §6.1); this catches what still reaches the service that way (an HTTP/2 request with both). The
/// upstream always gets the buffered body with one length of the gateway's own.
fn smuggling(headers: &HeaderMap) -> Option<Problem> {
    let lengths: Vec<&HeaderValue> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
    let conflicting = headers.contains_key(header::TRANSFER_ENCODING) && !lengths.is_empty()
        || lengths.windows(2).any(|w| w[0] != w[1]);
    conflicting.then(|| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "request_framing_ambiguous",
            "Ambiguous request framing",
        )
        .with_detail(
            "a request may carry Content-Length or Transfer-Encoding, not both, and one length",
        )
    })
}

fn not_found(path: &str) -> Response<Body> {
    Problem::new(StatusCode::NOT_FOUND, "route_not_found", "No route")
        .with_detail(format!("no route serves `{path}`"))
        .into_response()
}

fn method_not_allowed(allow: &[http::Method]) -> Response<Body> {
    let list = allow
        .iter()
        .map(http::Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut res: Response<Body> = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed",
    )
    .with_detail(format!("this path serves {list}"))
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&list) {
        res.headers_mut().insert(header::ALLOW, v);
    }
    res
}

/// The request's principal: from its API key when the config has keys; a route with `auth`
/// refuses a request without a known key (401); elsewhere an unknown key is anonymous.
fn authenticate(rt: &Runtime, headers: &HeaderMap, required: bool) -> Result<Principal, Problem> {
    let Some((ring, header_name)) = &rt.keys else {
        return Ok(anonymous());
    };
    let presented = headers.get(header_name).map(|v| {
        let v = v.as_bytes();
        if header_name == header::AUTHORIZATION {
            v.strip_prefix(b"Bearer ").unwrap_or(v)
        } else {
            v
        }
    });
    match (presented.and_then(|k| ring.find(k)), presented.is_some()) {
        (Some(p), _) => Ok(p.clone()),
        (None, _) if !required => Ok(anonymous()),
        (None, present) => {
            let (code, detail) = if present {
                ("api_key_invalid", "the API key is not known")
            } else {
                ("api_key_missing", "this route needs an API key")
            };
            Err(Problem::new(StatusCode::UNAUTHORIZED, code, "Unauthorized").with_detail(detail))
        }
    }
}
