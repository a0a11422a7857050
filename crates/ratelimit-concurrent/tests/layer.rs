//! The tower layer: 429 problem bodies over the cap, permits held while the handler runs.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use ratelimit_concurrent::{ConcurrencyLimiter, KeyedConcurrencyLimitLayer};
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
    let svc = KeyedConcurrencyLimitLayer::new(limiter.clone(), api_key).layer(handler);

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

/// An inner service that counts its clones: a layer that takes a free slot in place must call
/// the clone `poll_ready` made ready, never clone it.
struct CountsClones(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Clone for CountsClones {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(self.0.clone())
    }
}

impl tower::Service<Request<Body>> for CountsClones {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<Body>) -> Self::Future {
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
    }
}

#[tokio::test(start_paused = true)]
async fn a_free_slot_is_taken_in_place_and_a_queued_request_still_waits_for_one() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower::Service;
    let clones = std::sync::Arc::new(AtomicUsize::new(0));

    // No queue: the slot is taken when the request is called, held by its response future.
    let limiter = ConcurrencyLimiter::new(1).unwrap();
    let mut svc = KeyedConcurrencyLimitLayer::new(limiter.clone(), api_key)
        .layer(CountsClones(clones.clone()));
    let first = svc.ready().await.unwrap().call(request(Some("k")));
    assert_eq!(
        limiter.in_flight(&"k".to_owned()),
        1,
        "the slot is held by the future"
    );
    let refused = svc
        .ready()
        .await
        .unwrap()
        .call(request(Some("k")))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(first); // a dropped request frees its slot
    assert_eq!(limiter.in_flight(&"k".to_owned()), 0);
    let ok = svc
        .ready()
        .await
        .unwrap()
        .call(request(Some("k")))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        limiter.in_flight(&"k".to_owned()),
        0,
        "a completed request frees its slot"
    );
    let unkeyed = svc
        .ready()
        .await
        .unwrap()
        .call(request(None))
        .await
        .unwrap();
    assert_eq!(unkeyed.status(), StatusCode::OK);
    assert_eq!(
        clones.load(Ordering::SeqCst),
        0,
        "no clone of the inner service"
    );

    // With a queue: a full key's request waits (the awaited path, which takes the ready clone)
    // and runs once the slot is free.
    let limiter = ConcurrencyLimiter::new(1)
        .unwrap()
        .queue(1, Duration::from_secs(5));
    let mut svc = KeyedConcurrencyLimitLayer::new(limiter.clone(), api_key)
        .layer(CountsClones(clones.clone()));
    let first = svc.ready().await.unwrap().call(request(Some("k")));
    let waiting = tokio::spawn(svc.ready().await.unwrap().call(request(Some("k"))));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished(), "it waits in the queue");
    assert_eq!(first.await.unwrap().status(), StatusCode::OK);
    assert_eq!(waiting.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(
        clones.load(Ordering::SeqCst),
        1,
        "only the queued request took a clone"
    );
}
