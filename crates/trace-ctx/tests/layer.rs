//! The layer outermost: ids on every response, problem bodies of inner layers enriched.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use ratelimit_token_bucket::{KeyedLimiter, KeyedRateLimitLayer, ManualClock, Quota, Quotas};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tower::{ServiceBuilder, ServiceExt};
use trace_ctx::{Problem, TraceContext, TraceContextLayer};

type Body = Full<Bytes>;

const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn json(res: Response<Body>) -> serde_json::Value {
    serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

#[tokio::test]
async fn a_429_from_an_inner_layer_carries_the_request_and_trace_ids() {
    let limiter = KeyedLimiter::with_clock(
        Quotas::new([Quota::per_minute(1)]).unwrap(),
        ManualClock::new(),
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let seen = seen.clone();
        tower::service_fn(move |req: Request<Body>| {
            let ctx = req.extensions().get::<TraceContext>().cloned().unwrap();
            seen.lock().unwrap().push(ctx);
            async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
        })
    };
    let svc = ServiceBuilder::new()
        .layer(TraceContextLayer::new())
        .layer(KeyedRateLimitLayer::new(
            limiter,
            |_: &http::request::Parts| Some("client".to_owned()),
        ))
        .service(handler);
    let req = || {
        Request::post("/v1/orders")
            .header("traceparent", INCOMING)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    let ok = svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let first_id = ok.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(first_id.len(), 32, "a request id was generated");
    let ctx = seen.lock().unwrap()[0].clone();
    assert_eq!(ctx.request_id().as_str(), first_id);
    assert_eq!(
        ctx.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        ctx.caller_span_id().unwrap().to_string(),
        "00f067aa0ba902b7"
    );
    assert_ne!(
        ctx.span_id().to_string(),
        "00f067aa0ba902b7",
        "this server has its own span"
    );
    assert_eq!(
        json_or_text(ok).await,
        "ok",
        "non-problem bodies pass untouched"
    );

    let limited = svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let id = limited.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(id, first_id);
    assert!(limited.headers().contains_key("retry-after"));
    let len: usize = limited.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = json(limited).await;
    assert_eq!(
        body.to_string().len(),
        len,
        "content-length matches the enriched body"
    );
    assert_eq!(
        body["request_id"],
        id.as_str(),
        "the same id as the response header"
    );
    assert_eq!(body["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        body["error_code"], "rate_limited",
        "taken from the inner layer's code"
    );
    assert_eq!(body["status"], 429);
    assert_eq!(body["instance"], "/v1/orders");
    assert!(body["latency_ms"].is_u64());
    assert_eq!(
        body["title"], "Too many requests",
        "the inner layer's members are kept"
    );
}

async fn json_or_text(res: Response<Body>) -> String {
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn a_valid_request_id_is_kept_and_an_unsafe_one_replaced() {
    let svc = ServiceBuilder::new()
        .layer(TraceContextLayer::new())
        .service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(
                Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "Upstream timed out",
                )
                .with_detail("the payment provider did not answer")
                .into_response::<Body>(),
            )
        });
    let res = svc
        .clone()
        .oneshot(
            Request::get("/v1/charges/ch_1")
                .header("x-request-id", "req-2024:abc")
                .header(
                    "traceparent",
                    "00-ffffffffffffffffffffffffffffffff-0000000000000000-01",
                )
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "req-2024:abc");
    let body = json(res).await;
    assert_eq!(body["request_id"], "req-2024:abc");
    assert_eq!(body["error_code"], "upstream_timeout");
    assert_eq!(body["detail"], "the payment provider did not answer");
    // The incoming traceparent had an all-zero parent id: a new trace was started.
    assert_ne!(body["trace_id"], "ffffffffffffffffffffffffffffffff");
    assert_eq!(body["trace_id"].as_str().unwrap().len(), 32);

    let res = svc
        .oneshot(
            Request::get("/")
                .header("x-request-id", "<script>")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(id, "<script>");
    assert_eq!(id.len(), 32);
}

#[test]
fn invalid_tracestate_members_are_dropped_one_by_one_and_the_trace_kept() {
    let mut headers = http::HeaderMap::new();
    headers.insert("traceparent", INCOMING.parse().unwrap());
    headers.insert("tracestate", "a=1,a=2,Vendor=x,b=2".parse().unwrap());
    let ctx = TraceContext::from_headers(&headers);
    assert_eq!(
        ctx.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    // Other vendors' entries survive one bad or repeated member (Level 2).
    assert_eq!(ctx.tracestate().to_string(), "a=1,b=2");
    let reasons: Vec<_> = ctx
        .dropped_tracestate()
        .iter()
        .map(|d| d.member.as_str())
        .collect();
    assert_eq!(reasons, ["a=2", "Vendor=x"]);
    // Outgoing calls to third parties can leave the request id out.
    let mut out = http::HeaderMap::new();
    ctx.inject_trace(&mut out);
    assert!(out.contains_key("traceparent") && !out.contains_key("x-request-id"));
    assert_eq!(out["tracestate"], "a=1,b=2");
    ctx.inject(&mut out);
    assert!(out.contains_key("x-request-id"));
    // And a tracestate without a valid traceparent is ignored.
    headers.insert("traceparent", "garbage".parse().unwrap());
    headers.insert("tracestate", "a=1".parse().unwrap());
    let ctx = TraceContext::from_headers(&headers);
    assert!(ctx.tracestate().is_empty());
    assert!(ctx.rejected_traceparent().is_some());
}

#[test]
fn each_outgoing_call_gets_its_own_child_span() {
    let mut headers = http::HeaderMap::new();
    headers.insert("traceparent", INCOMING.parse().unwrap());
    headers.insert("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
    let mut ctx = TraceContext::from_headers(&headers);
    ctx.tracestate_mut().insert("retrysafe", "1").unwrap();
    let (mut a, mut b) = (http::HeaderMap::new(), http::HeaderMap::new());
    let span_a = ctx.inject(&mut a);
    let span_b = ctx.inject(&mut b);
    assert_ne!(span_a, span_b);
    assert_ne!(span_a, ctx.span_id());
    assert_eq!(a["tracestate"], "retrysafe=1,congo=t61rcWkgMzE");
    assert_eq!(a["x-request-id"], ctx.request_id().as_str());
    let sent = trace_ctx::TraceParent::parse(a["traceparent"].as_bytes()).unwrap();
    assert_eq!(sent.trace_id, ctx.trace_id());
    assert_eq!(sent.parent_id, span_a);
    assert!(sent.flags.sampled());
}

/// The router's own 404 and 405 and an extractor's text/plain rejection come back as enriched
/// problems; a 405 keeps its `Allow`.
#[tokio::test]
async fn bare_error_responses_become_problems() {
    use axum::extract::Query;
    use axum::routing::get;
    #[derive(serde::Deserialize)]
    struct Slow {
        #[allow(dead_code)]
        ms: u64,
    }
    let app = axum::Router::new()
        .route("/reports/slow", get(|_q: Query<Slow>| async { "ok" }))
        .route("/webhooks/psp", axum::routing::post(|| async { "ok" }))
        .layer(TraceContextLayer::new());
    let send = |method: &str, uri: &str| {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        app.clone().oneshot(req)
    };
    let body = |res: http::Response<axum::body::Body>| async move {
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            parts,
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
        )
    };

    let (parts, json) = body(send("GET", "/nope").await.unwrap()).await;
    assert_eq!(parts.status, 404);
    assert_eq!(parts.headers["content-type"], "application/problem+json");
    assert_eq!(json["code"], "not_found");
    assert!(json["request_id"].is_string() && json["trace_id"].is_string());
    assert!(json["latency_ms"].is_u64());

    let (parts, json) = body(send("GET", "/webhooks/psp").await.unwrap()).await;
    assert_eq!(parts.status, 405);
    assert_eq!(parts.headers["allow"], "POST");
    assert_eq!(json["error_code"], "method_not_allowed");

    let (parts, json) = body(send("GET", "/reports/slow?ms=abc").await.unwrap()).await;
    assert_eq!(parts.status, 400);
    assert_eq!(json["code"], "bad_request");
    assert!(json["detail"].as_str().unwrap().contains("ms"), "{json}");

    // Switched off, the bare answer passes as it was.
    let plain = axum::Router::new()
        .route("/x", get(|| async { "ok" }))
        .layer(TraceContextLayer::new().problem_for_bare_errors(false));
    let res = plain
        .oneshot(
            Request::get("/nope")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.headers().get("content-type").is_none());
}
