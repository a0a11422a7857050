//! Defects an independent torture run found, each with the test that would have caught it.

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn send(
    router: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, http::HeaderMap, serde_json::Value) {
    let res = router.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts.status, parts.headers, json)
}

fn req(method: &str, uri: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap()
}

fn assert_problem(headers: &http::HeaderMap, json: &serde_json::Value, code: &str) {
    assert_eq!(
        headers["content-type"], "application/problem+json",
        "{json}"
    );
    assert_eq!(json["error_code"], code, "{json}");
    for member in ["request_id", "trace_id"] {
        assert!(json[member].is_string(), "{member} missing: {json}");
    }
    assert!(json["latency_ms"].is_u64(), "{json}");
}

/// Defects 1 and 2: unknown routes were answered 401 "webhook signature missing" (the webhook
/// layer ran on the router's fallback), 405 answers were empty, extractor rejections text/plain.
#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_404_and_405_problems() {
    let router = examples::OrdersApi::in_memory().router();
    for (method, uri) in [
        ("GET", "/nope"),
        ("POST", "/nope"),
        ("POST", "/orders/../orders"),
        ("DELETE", "/webhooks"),
    ] {
        let (status, headers, json) = send(&router, req(method, uri)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {json}");
        assert_problem(&headers, &json, "not_found");
    }
    let (status, headers, json) = send(&router, req("GET", "/webhooks/psp")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "POST");
    assert_problem(&headers, &json, "method_not_allowed");

    let (status, headers, json) = send(&router, req("GET", "/reports/slow?ms=abc")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_problem(&headers, &json, "bad_request");
    assert!(
        json["detail"].as_str().unwrap_or("").contains("ms"),
        "{json}"
    );
}

/// Defect 7: no `Authorization` and `Authorization: Bearer public` were one principal (a replay
/// leaked across them); an empty payment id was captured.
#[tokio::test]
async fn anonymous_is_its_own_principal_and_empty_ids_are_404() {
    let api = examples::OrdersApi::in_memory();
    let router = api.router();
    let post = |auth: Option<&str>| {
        let mut b = Request::post("/orders")
            .header("idempotency-key", "same-key")
            .header("content-type", "application/json");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(Body::from(r#"{"sku":"tea","quantity":1}"#)).unwrap()
    };
    let (first, h1, o1) = send(&router, post(None)).await;
    for token in ["Bearer public", "Bearer anonymous", "Bearer "] {
        let (status, headers, order) = send(&router, post(Some(token))).await;
        assert_eq!(status, StatusCode::CREATED, "{token}");
        assert!(
            !headers.contains_key("idempotent-replayed"),
            "{token} got another principal's replay"
        );
        assert_ne!(order["id"], o1["id"]);
    }
    assert_eq!(first, StatusCode::CREATED);
    assert!(!h1.contains_key("idempotent-replayed"));
    assert_eq!(api.order_count(), 4);
    assert_eq!(o1["owner"], "anonymous");

    let capture = Request::post("/payments//capture")
        .header("idempotency-key", "cap-empty")
        .body(Body::empty())
        .unwrap();
    let (status, headers, json) = send(&router, capture).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
    assert_problem(&headers, &json, "payment_not_found");
    assert!(api.captures().is_empty());
}

/// Defect 3 (the keying half): one source with many tokens used to take every slot. Requests
/// are now also capped per client IP, before the load shedder; another source keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ip_with_many_tokens_cannot_take_every_slot() {
    use axum::extract::ConnectInfo;
    use std::net::SocketAddr;
    let limits = examples::Limits {
        in_flight_per_ip: 3,
        ..examples::Limits::default()
    };
    let router = examples::OrdersApi::new(examples::memory_store(), limits).router();
    let from = |ip: [u8; 4], token: usize| {
        let mut req = Request::get("/reports/slow?ms=300")
            .header("authorization", format!("Bearer token-{token}"))
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 40_000))));
        req
    };
    let attack: Vec<_> = (0..6)
        .map(|i| {
            let router = router.clone();
            tokio::spawn(async move {
                router
                    .oneshot(from([203, 0, 113, 9], i))
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let (status, _, _) = send(&router, from([198, 51, 100, 7], 99)).await;
    assert_eq!(status, StatusCode::OK, "another source is served");
    let mut statuses = Vec::new();
    for t in attack {
        statuses.push(t.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((ok, limited), (3, 3), "{statuses:?}");
}

#[tokio::test]
async fn healthz_answers_while_the_rate_limit_refuses_everything_else() {
    use ratelimit_token_bucket::Quota;
    let limits = examples::Limits {
        rate: Quota::per_hour(1).burst(1),
        ..examples::Limits::default()
    };
    let router = examples::OrdersApi::new(examples::memory_store(), limits).router();
    // The anonymous principal's one token, then a refusal.
    assert_eq!(send(&router, req("GET", "/orders")).await.0, StatusCode::OK);
    let (status, _, json) = send(&router, req("GET", "/orders")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
    for _ in 0..5 {
        let res = router
            .clone()
            .oneshot(req("GET", "/healthz"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
    }
}
