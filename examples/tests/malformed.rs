//! 2,000 seeded malformed requests against the whole stack: no panic, no 5xx but the documented
//! overload answers, and every rejection is problem+json with the envelope members.

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

const SEED: u64 = 0x0bad_5eed;

fn pick<'a>(rng: &mut fastrand::Rng, items: &[&'a str]) -> &'a str {
    items[rng.usize(..items.len())]
}

fn junk(rng: &mut fastrand::Rng, max: usize) -> Vec<u8> {
    let n = rng.usize(..=max);
    (0..n).map(|_| rng.u8(..)).collect()
}

fn malformed(rng: &mut fastrand::Rng) -> Request<Body> {
    let method = pick(
        rng,
        &[
            "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "BREW",
        ],
    );
    let path = pick(
        rng,
        &[
            "/orders",
            "/orders/",
            "/orders/ord_1",
            "/orders/%00",
            "/orders/../orders",
            "/payments//capture",
            "/payments/pi_1/capture",
            "/webhooks/psp",
            "/reports/slow?ms=abc",
            "/reports/slow?ms=-1",
            "/reports/slow?ms=99999999999999999999",
            "/nope",
            "/metrics",
            "/orders?x=%zz",
            "//",
            "/orders/ord_1?if=1",
        ],
    );
    let mut b = Request::builder().method(method).uri(path);
    let headers: [(&str, &[&str]); 9] = [
        (
            "idempotency-key",
            &[
                "",
                " ",
                "k",
                "\"quoted\"",
                "a b",
                "x".repeat(300).leak(),
                "ключ",
            ],
        ),
        (
            "content-type",
            &[
                "application/json",
                "text/plain",
                "application/json; charset=utf-8",
                "multipart/form-data",
                "garbage/",
            ],
        ),
        (
            "authorization",
            &[
                "Bearer ",
                "Bearer a",
                "Basic Zm9vOmJhcg==",
                "Bearer \u{7f}",
                "bearer x",
            ],
        ),
        (
            "traceparent",
            &[
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "ff-00-00-00",
                "00-0-0-0",
                "garbage",
            ],
        ),
        (
            "tracestate",
            &["a=1,a=2", "Bad=1", "=", ",,,", "k=v".repeat(200).leak()],
        ),
        (
            "if-match",
            &["*", "\"1\"", "1", "W/1", "*, \"1\"", "\"unterminated"],
        ),
        ("if-none-match", &["*", "\"1\"", "x"]),
        (
            "webhook-signature",
            &["v1,", "v1,AAAA", "garbage", "v1a,xyz"],
        ),
        (
            "x-forwarded-for",
            &["1.2.3.4", "not-an-ip", "1.2.3.4, ::1", ""],
        ),
    ];
    for (name, values) in headers {
        if rng.bool() {
            let v = pick(rng, values);
            if let Ok(v) = http::HeaderValue::from_str(v) {
                b = b.header(name, v);
            }
        }
    }
    if rng.u8(..4) == 0 {
        b = b.header("webhook-id", "evt_1").header(
            "webhook-timestamp",
            pick(rng, &["0", "x", "99999999999999999999", "1700000000"]),
        );
    }
    let body: Vec<u8> = match rng.u8(..6) {
        0 => Vec::new(),
        1 => br#"{"sku":"tea","quantity":2}"#.to_vec(),
        2 => br#"{"sku":"tea","quantity":-1}"#.to_vec(),
        3 => br#"{"quantity":"lots"}"#.to_vec(),
        4 => junk(rng, 64),
        _ => vec![b'{'; 2_000_000],
    };
    b.body(Body::from(body)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_malformed_requests_get_clean_answers() {
    // Limits wide enough that the requests reach every layer, not only the rate limiter.
    let limits = examples::Limits {
        rate: ratelimit_token_bucket::Quota::per_second(1_000_000).burst(1_000_000),
        ..examples::Limits::default()
    };
    let router = examples::OrdersApi::new(examples::memory_store(), limits).router();
    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..2_000 {
        let req = malformed(&mut rng);
        let (method, uri) = (req.method().clone(), req.uri().clone());
        let res = router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        *by_status.entry(status.as_u16()).or_default() += 1;
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        assert!(
            !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
            "request {i}: {method} {uri} → {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if status.is_client_error() || status.is_server_error() {
            if method == http::Method::HEAD {
                continue; // no body on HEAD
            }
            assert_eq!(
                parts
                    .headers
                    .get("content-type")
                    .map(|v| v.to_str().unwrap_or("")),
                Some("application/problem+json"),
                "request {i}: {method} {uri} → {status}"
            );
            let json: serde_json::Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("request {i}: {method} {uri} → {status}: {e}"));
            for member in ["request_id", "trace_id", "error_code"] {
                assert!(
                    json[member].is_string(),
                    "request {i}: {member} missing in {json}"
                );
            }
            assert!(json["latency_ms"].is_u64(), "request {i}: {json}");
        }
    }
    eprintln!("statuses: {by_status:?}");
    assert!(
        by_status.len() > 5,
        "the generator reached many outcomes: {by_status:?}"
    );
}
