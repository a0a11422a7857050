//! gRPC answers through the retry layers: trailers-only statuses are classified like their HTTP
//! equivalents, every attempt carries the one generated key, pushback is honoured.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use retry_client::{GrpcRetryLayer, History, Retrier, RetryPolicy, SafeRetryLayer};
use std::sync::Arc;
use std::time::Duration;
use tower::{ServiceBuilder, ServiceExt};

/// A gRPC server that answers `codes` in turn (trailers-only; 0 = OK with a message) and records
/// the key and body of every attempt.
fn server(
    codes: Vec<(i32, Option<&'static str>)>,
    seen: Arc<parking_lot::Mutex<Vec<(String, Bytes)>>>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone {
    let codes = Arc::new(codes);
    tower::service_fn(move |req: Request<Full<Bytes>>| {
        let (codes, seen) = (codes.clone(), seen.clone());
        async move {
            let key = req.headers()["idempotency-key"]
                .to_str()
                .unwrap()
                .to_owned();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let n = {
                let mut seen = seen.lock();
                seen.push((key, body));
                seen.len() - 1
            };
            let (code, pushback) = codes[n.min(codes.len() - 1)];
            let mut res = Response::builder().header("content-type", "application/grpc");
            if code != 0 {
                res = res.header("grpc-status", code);
            }
            if let Some(ms) = pushback {
                res = res.header("grpc-retry-pushback-ms", ms);
            }
            Ok::<_, std::io::Error>(res.body(Full::new(Bytes::new())).unwrap())
        }
    })
}

fn call() -> Request<Full<Bytes>> {
    Request::post("/orders.v1.Orders/CreateOrder")
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02\x08\x01")))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn unavailable_and_resource_exhausted_are_retried_with_one_key_and_the_pushback() {
    let seen = Arc::default();
    let svc = ServiceBuilder::new()
        .layer(GrpcRetryLayer::new(
            Retrier::new(RetryPolicy::default().max_attempts(5)),
            Full::new,
        ))
        .service(server(
            vec![(14, None), (8, Some("2500")), (10, None), (0, None)],
            Arc::clone(&seen),
        ));
    let started = tokio::time::Instant::now();
    let res = svc.oneshot(call()).await.unwrap();
    assert!(retry_safe_core::grpc::status_of(res.headers()).is_none());
    let history = res.extensions().get::<History>().unwrap();
    assert_eq!(
        history.len(),
        4,
        "UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED (keyed), OK"
    );
    let seen = seen.lock();
    let key = &seen[0].0;
    assert!(seen
        .iter()
        .all(|(k, b)| k == key && &b[..] == b"\0\0\0\0\x02\x08\x01"));
    assert_eq!(history.idempotency_key.as_deref(), Some(key.as_str()));
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "the pushback was honoured: {:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn invalid_argument_and_failed_precondition_are_final() {
    for code in [3, 9, 5, 16] {
        let seen = Arc::default();
        let svc = ServiceBuilder::new()
            .layer(SafeRetryLayer::new(Retrier::new(
                RetryPolicy::default().max_attempts(5),
            )))
            .service(server(vec![(code, None), (0, None)], Arc::clone(&seen)));
        let res = svc.oneshot(call()).await.unwrap();
        assert_eq!(res.headers()["grpc-status"], code.to_string().as_str());
        assert_eq!(seen.lock().len(), 1, "code {code} is not retried");
    }
}
