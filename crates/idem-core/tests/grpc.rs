//! The idempotency layer in front of gRPC services (framed messages, `grpc-status` in trailers or,
//! trailers-only, in the headers), on the in-memory store and tokio's paused clock.

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use idem_core::IdempotencyBody;
use idem_core::{IdempotencyLayer, IdempotencyPolicy, MemoryStore, MemoryStoreConfig, TokioClock};
use retry_safe_core::grpc::{self, Code};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::{Layer, ServiceExt};

type Body = IdempotencyBody<http_body_util::Empty<Bytes>>;

/// A framed gRPC message: compression flag, length, bytes.
fn frame(message: &[u8]) -> Bytes {
    let mut out = vec![0u8];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.into()
}

fn call(key: Option<&str>, message: &[u8]) -> Request<http_body_util::Full<Bytes>> {
    let mut b = Request::post("/orders.v1.Orders/CreateOrder")
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(key) = key {
        b = b.header("idempotency-key", key);
    }
    b.body(http_body_util::Full::new(frame(message))).unwrap()
}

/// What a gRPC client sees of an answer.
#[derive(Debug, PartialEq)]
struct Answer {
    code: Code,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

async fn answer<B>(res: Response<B>) -> Answer
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = res.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    let code = grpc::status_of(&parts.headers)
        .or_else(|| trailers.as_ref().and_then(grpc::status_of))
        .expect("a gRPC status in headers or trailers");
    let mut headers = parts.headers;
    headers.remove("idempotent-replayed");
    Answer {
        code,
        headers,
        body: collected.to_bytes(),
        trailers,
    }
}

/// A unary handler: answers `code` (with a message and the run number in a trailer when OK;
/// trailers-only otherwise) and counts its runs.
fn handler(
    runs: Arc<AtomicU32>,
    code: Code,
) -> impl tower::Service<
    Request<http_body_util::Full<Bytes>>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |_req: Request<http_body_util::Full<Bytes>>| {
        let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let mut res = Response::builder()
                .header("content-type", "application/grpc")
                .header("x-order-id", format!("ord_{n}"));
            let body = if code == Code::Ok {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                trailers.insert("x-run", n.to_string().parse().unwrap());
                IdempotencyBody::buffered(frame(format!("order {n}").as_bytes()), Some(trailers))
            } else {
                res = res
                    .header("grpc-status", code.as_i32())
                    .header("grpc-message", "failed");
                IdempotencyBody::buffered(Bytes::new(), None)
            };
            Ok::<_, Infallible>(res.body(body).unwrap())
        }
    })
}

fn layer() -> IdempotencyLayer<MemoryStore<TokioClock>> {
    let store = MemoryStore::with_clock(TokioClock::new(), MemoryStoreConfig::default());
    IdempotencyLayer::new(
        store,
        IdempotencyPolicy::default().replay_headers(
            ["content-type", "x-order-id"]
                .into_iter()
                .map(http::HeaderName::from_static),
        ),
    )
}

#[tokio::test(start_paused = true)]
async fn a_unary_call_retried_five_times_runs_once_and_replays_trailers() {
    let runs = Arc::new(AtomicU32::new(0));
    let svc = layer().layer(handler(runs.clone(), Code::Ok));
    let mut answers = Vec::new();
    for _ in 0..5 {
        let res = svc
            .clone()
            .oneshot(call(Some("k-1"), b"sku=1"))
            .await
            .unwrap();
        answers.push(answer(res).await);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let first = &answers[0];
    assert_eq!(first.code, Code::Ok);
    assert_eq!(first.trailers.as_ref().unwrap()["x-run"], "1");
    assert_eq!(first.headers["x-order-id"], "ord_1");
    assert_eq!(&first.body[5..], b"order 1");
    for replay in &answers[1..] {
        assert_eq!(replay, first);
    }
}

#[tokio::test(start_paused = true)]
async fn the_same_key_with_another_message_is_invalid_argument() {
    let runs = Arc::new(AtomicU32::new(0));
    let svc = layer().layer(handler(runs.clone(), Code::Ok));
    let _ = svc
        .clone()
        .oneshot(call(Some("k-2"), b"sku=1"))
        .await
        .unwrap();
    let res = svc
        .clone()
        .oneshot(call(Some("k-2"), b"sku=2"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/grpc");
    assert_eq!(res.headers()["x-error-code"], "idempotency_key_reused");
    let a = answer(res).await;
    assert_eq!(a.code, Code::InvalidArgument);
    assert!(a.body.is_empty());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn unavailable_is_not_kept_and_a_retry_runs_again_but_invalid_argument_is_kept() {
    let runs = Arc::new(AtomicU32::new(0));
    let svc = layer().layer(handler(runs.clone(), Code::Unavailable));
    for _ in 0..2 {
        let res = svc.clone().oneshot(call(Some("k-3"), b"m")).await.unwrap();
        assert_eq!(answer(res).await.code, Code::Unavailable);
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "UNAVAILABLE releases the key"
    );

    let runs = Arc::new(AtomicU32::new(0));
    let svc = layer().layer(handler(runs.clone(), Code::InvalidArgument));
    for _ in 0..2 {
        let res = svc.clone().oneshot(call(Some("k-4"), b"m")).await.unwrap();
        let a = answer(res).await;
        assert_eq!(a.code, Code::InvalidArgument);
        assert_eq!(a.headers["grpc-message"], "failed");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "a final answer is replayed");
}

#[tokio::test(start_paused = true)]
async fn a_call_while_the_first_runs_is_aborted_with_pushback() {
    let runs = Arc::new(AtomicU32::new(0));
    let slow = {
        let runs = runs.clone();
        tower::service_fn(move |req: Request<http_body_util::Full<Bytes>>| {
            let inner = handler(runs.clone(), Code::Ok);
            async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                inner.oneshot(req).await
            }
        })
    };
    let svc = layer().layer(slow);
    let first = tokio::spawn(svc.clone().oneshot(call(Some("k-5"), b"m")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let res = svc.clone().oneshot(call(Some("k-5"), b"m")).await.unwrap();
    assert!(res.headers().contains_key("grpc-retry-pushback-ms"));
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(
        res.headers()["x-error-code"],
        "idempotency_request_in_flight"
    );
    assert_eq!(answer(res).await.code, Code::Aborted);
    assert_eq!(answer(first.await.unwrap().unwrap()).await.code, Code::Ok);
}

#[tokio::test(start_paused = true)]
async fn an_http_request_through_the_same_layer_still_gets_problem_json() {
    let runs = Arc::new(AtomicU32::new(0));
    let svc = layer().layer(handler(runs, Code::Ok));
    let req = |body: &'static str| {
        Request::post("/orders")
            .header("idempotency-key", "k-6")
            .body(http_body_util::Full::new(Bytes::from(body)))
            .unwrap()
    };
    let _ = svc.clone().oneshot(req("a")).await.unwrap();
    let res = svc.clone().oneshot(req("b")).await.unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}
