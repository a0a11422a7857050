//! The tower layer: 429 problem bodies over the cap, permits held while the handler runs.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use ratelimit_concurrent::{ConcurrencyLimitLayer, ConcurrencyLimiter};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::oneshot;
use tower::{Layer, ServiceExt};

type Body = Full<Bytes>;

fn request(key: Option<&str>) -> Request<Body> {
    let mut b = Request::get("/v1/reports");
    if let Some(key) = key {
        b = b.header("x-api-key", key);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

fn api_key(parts: &http::request::Parts) -> Option<String> {
    parts
        .headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test(start_paused = true)]
async fn requests_over_the_cap_get_a_429_while_the_first_ones_run() {
    let limiter = ConcurrencyLimiter::new(2)
        .unwrap()
        .retry_hint(Duration::from_millis(1500));
    // Handlers that run until the test lets them finish.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<oneshot::Receiver<()>>();
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    let handler = tower::service_fn(move |_req: Request<Body>| {
        let rx = rx.clone();
        async move {
            let gate = rx.lock().await.recv().await.unwrap();
            let _ = gate.await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"report"))))
        }
    });
    let svc = ConcurrencyLimitLayer::new(limiter.clone(), api_key).layer(handler);

    let mut gates = Vec::new();
    let mut running = Vec::new();
    for _ in 0..2 {
        let (open, gate) = oneshot::channel();
        tx.send(gate).unwrap();
        gates.push(open);
        running.push(tokio::spawn(svc.clone().oneshot(request(Some("k1")))));
    }
    tokio::task::yield_now().await;
    assert_eq!(limiter.in_flight(&"k1".to_owned()), 2);

    let res = svc.clone().oneshot(request(Some("k1"))).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "2");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["code"], "concurrency_limited");
    assert_eq!(body["max_in_flight"], 2);

    for open in gates {
        open.send(()).unwrap();
    }
    for r in running {
        assert_eq!(r.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(
        limiter.active_keys(),
        0,
        "the permits were released with the responses"
    );

    // Requests without a key are not limited.
    let (open, gate) = oneshot::channel();
    tx.send(gate).unwrap();
    open.send(()).unwrap();
    let res = svc.clone().oneshot(request(None)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}
