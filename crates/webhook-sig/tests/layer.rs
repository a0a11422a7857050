//! The receiving layer: verify, dedupe, settle, and answer problem+json.

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use idem_core::{MemoryStore, MemoryStoreConfig};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tower::{service_fn, Layer, Service, ServiceExt};
use webhook_sig::{
    ManualClock, ReplayGuard, Scheme, Secret, Signer, VerifiedWebhook, Verifier, WebhookLayer,
};

const NOW: u64 = 1_700_000_000;
const BODY: &[u8] = br#"{"id":"evt_9","type":"order.paid"}"#;

fn secret() -> Secret {
    Secret::from_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
}

fn verifier(scheme: Scheme) -> Verifier {
    Verifier::new(scheme, secret()).with_clock(ManualClock::at_unix_secs(NOW))
}

fn request(headers: &HeaderMap, body: &'static [u8]) -> Request<Full<Bytes>> {
    let mut req = Request::post("/hooks")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    req.headers_mut().extend(headers.clone());
    req
}

fn signed(scheme: Scheme, id: &str) -> HeaderMap {
    Signer::new(scheme, &secret())
        .headers_at(id, NOW, BODY)
        .unwrap()
}

/// A handler that counts its runs and answers with `status`.
fn handler(
    runs: Arc<AtomicUsize>,
    status: StatusCode,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |req: Request<Full<Bytes>>| {
        let runs = runs.clone();
        async move {
            let hook = req.extensions().get::<VerifiedWebhook>().cloned().unwrap();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, hook.payload);
            runs.fetch_add(1, Ordering::SeqCst);
            let mut res = Response::new(Full::new(Bytes::from(format!(
                "handled {}",
                hook.id.unwrap_or_default()
            ))));
            *res.status_mut() = status;
            Ok(res)
        }
    })
}

async fn problem(res: Response<Full<Bytes>>) -> (StatusCode, serde_json::Value, HeaderMap) {
    let status = res.status();
    let headers = res.headers().clone();
    assert_eq!(headers["content-type"], "application/problem+json");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(
        !body.windows(BODY.len()).any(|w| w == BODY),
        "the payload was echoed"
    );
    (status, serde_json::from_slice(&body).unwrap(), headers)
}

fn guard() -> (ReplayGuard<MemoryStore<ManualClock>>, ManualClock) {
    let clock = ManualClock::new();
    let store = MemoryStore::with_clock(clock.clone(), MemoryStoreConfig::default());
    (ReplayGuard::new(store), clock)
}

#[tokio::test]
async fn a_valid_webhook_reaches_the_handler_with_its_payload() {
    let runs = Arc::new(AtomicUsize::new(0));
    let svc = WebhookLayer::new(verifier(Scheme::StandardWebhooks))
        .layer(handler(runs.clone(), StatusCode::OK));
    let res = svc
        .oneshot(request(&signed(Scheme::StandardWebhooks, "evt_9"), BODY))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "handled evt_9"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn refusals_are_401_problems_that_echo_nothing() {
    let runs = Arc::new(AtomicUsize::new(0));
    let svc = WebhookLayer::new(verifier(Scheme::StandardWebhooks))
        .layer(handler(runs.clone(), StatusCode::OK));
    let good = signed(Scheme::StandardWebhooks, "evt_9");
    let forged: &'static [u8] = br#"{"id":"evt_9","type":"order.refunded"}"#;
    let (status, body, _) =
        problem(svc.clone().oneshot(request(&good, forged)).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "webhook_signature_invalid");
    assert_eq!(body["type"], "urn:problem-type:webhook_signature_invalid");
    assert_eq!(body["status"], 401);

    let mut missing = good.clone();
    missing.remove("webhook-signature");
    let (status, body, _) =
        problem(svc.clone().oneshot(request(&missing, BODY)).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "webhook_signature_missing");

    let old = Signer::new(Scheme::StandardWebhooks, &secret())
        .headers_at("evt_9", NOW - 3600, BODY)
        .unwrap();
    let (_, body, _) = problem(svc.clone().oneshot(request(&old, BODY)).await.unwrap()).await;
    assert_eq!(body["code"], "webhook_timestamp_too_old");

    let mut bad_ts = good.clone();
    bad_ts.insert("webhook-timestamp", "yesterday".parse().unwrap());
    let (_, body, _) = problem(svc.clone().oneshot(request(&bad_ts, BODY)).await.unwrap()).await;
    assert_eq!(body["code"], "webhook_timestamp_invalid");

    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn bodies_over_the_cap_are_413_whether_declared_or_streamed() {
    let runs = Arc::new(AtomicUsize::new(0));
    let svc = WebhookLayer::new(verifier(Scheme::StandardWebhooks))
        .max_body(16)
        .layer(handler(runs.clone(), StatusCode::OK));
    let (status, body, _) = problem(
        svc.clone()
            .oneshot(request(&signed(Scheme::StandardWebhooks, "evt_9"), BODY))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["code"], "webhook_body_too_large");

    // Streamed in chunks, without a declared length: the limit holds while reading.
    let chunks = futures_util::stream::iter(
        BODY.chunks(5)
            .map(|c| Ok::<_, Infallible>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let svc = WebhookLayer::new(verifier(Scheme::StandardWebhooks))
        .max_body(16)
        .layer(service_fn(|_req: Request<axum::body::Body>| async {
            Ok::<_, Infallible>(Response::new(axum::body::Body::empty()))
        }));
    let mut req = Request::post("/hooks")
        .body(axum::body::Body::from_stream(chunks))
        .unwrap();
    req.headers_mut()
        .extend(signed(Scheme::StandardWebhooks, "evt_9"));
    assert!(req.headers().get("content-length").is_none());
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_replayed_event_is_refused_when_acknowledging_is_off() {
    let runs = Arc::new(AtomicUsize::new(0));
    let (guard, _) = guard();
    let svc = WebhookLayer::new(verifier(Scheme::StandardWebhooks))
        .replay_guard(guard)
        .acknowledge_replays(false)
        .layer(handler(runs.clone(), StatusCode::OK));
    let h = signed(Scheme::StandardWebhooks, "evt_9");
    assert_eq!(
        svc.clone()
            .oneshot(request(&h, BODY))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let (status, body, _) = problem(svc.clone().oneshot(request(&h, BODY)).await.unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "webhook_replayed");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Issue 17: a duplicate delivery gets the first handling's answer (2xx, byte for byte, marked
/// as a replay) by default — senders retry every non-2xx — and the handler does not run again.
#[tokio::test]
async fn duplicates_get_the_first_answer_byte_for_byte() {
    let runs = Arc::new(AtomicUsize::new(0));
    let (guard, _) = guard();
    let seen = runs.clone();
    let svc = WebhookLayer::new(verifier(Scheme::StandardWebhooks))
        .replay_guard(guard)
        .layer(service_fn(move |_req: Request<Full<Bytes>>| {
            let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                let res = Response::builder()
                    .status(StatusCode::ACCEPTED)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(format!("{{\"handled\":{n}}}"))))
                    .unwrap();
                Ok::<_, Infallible>(res)
            }
        }));
    let h = signed(Scheme::StandardWebhooks, "evt_9");
    let first = svc.clone().oneshot(request(&h, BODY)).await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first_body = first.into_body().collect().await.unwrap().to_bytes();
    for _ in 0..3 {
        let again = svc.clone().oneshot(request(&h, BODY)).await.unwrap();
        assert_eq!(again.status(), StatusCode::ACCEPTED);
        assert_eq!(again.headers()["webhook-replayed"], "true");
        assert_eq!(again.headers()["content-type"], "application/json");
        assert_eq!(
            again.into_body().collect().await.unwrap().to_bytes(),
            first_body
        );
    }
    assert_eq!(first_body, "{\"handled\":1}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_handler_frees_the_event_for_the_senders_retry() {
    let runs = Arc::new(AtomicUsize::new(0));
    let (guard, _) = guard();
    let layer = WebhookLayer::new(verifier(Scheme::StandardWebhooks)).replay_guard(guard);
    let failing = layer.layer(handler(runs.clone(), StatusCode::INTERNAL_SERVER_ERROR));
    let h = signed(Scheme::StandardWebhooks, "evt_9");
    assert_eq!(
        failing.oneshot(request(&h, BODY)).await.unwrap().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let healthy = layer.layer(handler(runs.clone(), StatusCode::NO_CONTENT));
    assert_eq!(
        healthy
            .clone()
            .oneshot(request(&h, BODY))
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    // The duplicate of the handled event gets its answer again; the handler does not run.
    let again = healthy.oneshot(request(&h, BODY)).await.unwrap();
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    assert_eq!(again.headers()["webhook-replayed"], "true");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_panicking_handler_frees_the_event() {
    let (guard, _) = guard();
    let layer = WebhookLayer::new(verifier(Scheme::StandardWebhooks)).replay_guard(guard);
    let panicking = layer.layer(service_fn(|_req: Request<Full<Bytes>>| async {
        if true {
            panic!("handler bug");
        }
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    }));
    let h = signed(Scheme::StandardWebhooks, "evt_9");
    let joined = tokio::spawn(panicking.oneshot(request(&h, BODY))).await;
    assert!(joined.unwrap_err().is_panic());

    let runs = Arc::new(AtomicUsize::new(0));
    let healthy = layer.layer(handler(runs.clone(), StatusCode::OK));
    let mut status = StatusCode::CONFLICT;
    for _ in 0..10 {
        tokio::task::yield_now().await;
        status = healthy
            .clone()
            .oneshot(request(&h, BODY))
            .await
            .unwrap()
            .status();
        if status == StatusCode::OK {
            break;
        }
    }
    assert_eq!(status, StatusCode::OK);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_concurrent_delivery_gets_409_with_retry_after() {
    let (guard, _) = guard();
    let guard = guard.lease(std::time::Duration::from_secs(30));
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let gates = Arc::new(parking_lot::Mutex::new(Some((entered_tx, go_rx))));
    let layer = WebhookLayer::new(verifier(Scheme::StandardWebhooks)).replay_guard(guard);
    let slow = layer.layer(service_fn(move |_req: Request<Full<Bytes>>| {
        let gates = gates.lock().take();
        async move {
            if let Some((entered, go)) = gates {
                entered.send(()).unwrap();
                go.await.unwrap();
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }
    }));
    let h = signed(Scheme::StandardWebhooks, "evt_9");
    let first = tokio::spawn(slow.clone().oneshot(request(&h, BODY)));
    entered_rx.await.unwrap();
    let (status, body, headers) =
        problem(slow.clone().oneshot(request(&h, BODY)).await.unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "webhook_in_flight");
    // Short: the first delivery usually finishes in milliseconds.
    assert_eq!(headers["retry-after"], "1");
    go_tx.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn stripe_style_replays_are_caught_by_content_or_by_an_extracted_id() {
    let runs = Arc::new(AtomicUsize::new(0));
    let (first_guard, _) = guard();
    let svc = WebhookLayer::new(verifier(Scheme::Stripe))
        .replay_guard(first_guard)
        .layer(handler(runs.clone(), StatusCode::OK));
    let h = signed(Scheme::Stripe, "");
    assert_eq!(
        svc.clone()
            .oneshot(request(&h, BODY))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        svc.clone()
            .oneshot(request(&h, BODY))
            .await
            .unwrap()
            .headers()
            .get("webhook-replayed")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("true".to_owned())
    );

    // With the event id read from the JSON body, a re-signed copy (new timestamp) is caught too.
    let (second_guard, _) = guard();
    let svc = WebhookLayer::new(verifier(Scheme::Stripe))
        .replay_guard(second_guard)
        .event_id(|_, body| {
            let v: serde_json::Value = serde_json::from_slice(body).ok()?;
            v["id"].as_str().map(str::to_owned)
        })
        .layer(handler(runs.clone(), StatusCode::OK));
    let resigned = Signer::new(Scheme::Stripe, &secret())
        .headers_at("", NOW - 60, BODY)
        .unwrap();
    assert_eq!(
        svc.clone()
            .oneshot(request(&h, BODY))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        svc.clone()
            .oneshot(request(&resigned, BODY))
            .await
            .unwrap()
            .headers()
            .get("webhook-replayed")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("true".to_owned())
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// A store whose backend is down: every call fails as a network error would.
struct DownStore;

#[async_trait::async_trait]
impl idem_core::IdempotencyStore for DownStore {
    async fn begin(
        &self,
        _: &str,
        _: &idem_core::IdempotencyKey,
        _: &idem_core::Fingerprint,
        _: std::time::Duration,
    ) -> Result<idem_core::BeginOutcome, idem_core::StoreError> {
        Err(idem_core::StoreError::unavailable("connection refused"))
    }
    async fn complete(
        &self,
        _: &str,
        _: &idem_core::IdempotencyKey,
        _: idem_core::Fence,
        _: &idem_core::StoredResponse,
        _: std::time::Duration,
    ) -> Result<(), idem_core::StoreError> {
        Err(idem_core::StoreError::unavailable("connection refused"))
    }
    async fn release(
        &self,
        _: &str,
        _: &idem_core::IdempotencyKey,
        _: idem_core::Fence,
    ) -> Result<(), idem_core::StoreError> {
        Err(idem_core::StoreError::unavailable("connection refused"))
    }
    async fn renew(
        &self,
        _: &str,
        _: &idem_core::IdempotencyKey,
        _: idem_core::Fence,
        _: std::time::Duration,
    ) -> Result<(), idem_core::StoreError> {
        Err(idem_core::StoreError::unavailable("connection refused"))
    }
}

#[tokio::test]
async fn an_unreachable_replay_store_fails_closed_with_503() {
    let runs = Arc::new(AtomicUsize::new(0));
    let svc = WebhookLayer::new(verifier(Scheme::StandardWebhooks))
        .replay_guard(ReplayGuard::new(DownStore))
        .layer(handler(runs.clone(), StatusCode::OK));
    let (status, body, headers) = problem(
        svc.oneshot(request(&signed(Scheme::StandardWebhooks, "evt_9"), BODY))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["code"], "webhook_replay_store_unavailable");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

/// Only POSTs are deliveries: another method reaches the inner service unverified (which answers
/// it — a router's 405), instead of a 401 "signature missing" for a request that is no webhook.
#[tokio::test]
async fn other_methods_pass_through_unverified() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let svc = WebhookLayer::new(verifier(Scheme::StandardWebhooks)).layer(service_fn(
        move |req: Request<Full<Bytes>>| {
            seen.fetch_add(1, Ordering::SeqCst);
            let verified = req.extensions().get::<VerifiedWebhook>().is_some();
            async move {
                let mut res = Response::new(Full::new(Bytes::new()));
                *res.status_mut() = if verified {
                    StatusCode::OK
                } else {
                    StatusCode::METHOD_NOT_ALLOWED
                };
                Ok::<_, Infallible>(res)
            }
        },
    ));
    for method in ["GET", "HEAD", "PUT", "DELETE"] {
        let req = Request::builder()
            .method(method)
            .uri("/hooks")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // An unsigned POST is still refused before the inner service.
    let res = svc
        .clone()
        .oneshot(request(&HeaderMap::new(), BODY))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

/// A delivery whose body never finishes gets 408 after the body timeout; the handler never runs.
#[tokio::test(start_paused = true)]
async fn a_body_that_never_finishes_gets_408() {
    use axum::body::Body;
    use futures_util::StreamExt;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let svc = WebhookLayer::new(verifier(Scheme::StandardWebhooks))
        .body_timeout(std::time::Duration::from_secs(3))
        .layer(service_fn(move |_req: Request<Body>| {
            seen.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Body::empty())) }
        }));
    let trickle = futures_util::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("{")) })
        .chain(futures_util::stream::pending());
    let mut req = Request::post("/hooks")
        .body(Body::from_stream(trickle))
        .unwrap();
    req.headers_mut()
        .extend(signed(Scheme::StandardWebhooks, "evt_slow"));
    let started = tokio::time::Instant::now();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(3));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}
