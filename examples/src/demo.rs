//! The demo scenario: what each layer does, played against the API in-process.
//!
//! `cargo run -p examples --bin demo` prints a progress bar and a summary table; the test
//! `tests/demo.rs` runs the same scenarios and requires every expectation to hold.

use crate::{Limits, OrdersApi, PSP_WEBHOOK_SECRET};
use axum::body::Body;
use axum::Router;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use ratelimit_token_bucket::Quota;
use std::time::Duration;
use tower::ServiceExt;
use webhook_sig::{Scheme, Secret, Signer};

/// One scenario's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What was played.
    pub name: &'static str,
    /// What should happen.
    pub expected: String,
    /// What happened.
    pub observed: String,
    /// Whether it did.
    pub ok: bool,
}

async fn send(router: &Router, req: Request<Body>) -> (Response<Body>, serde_json::Value) {
    let res = router
        .clone()
        .oneshot(req)
        .await
        .expect("the router is infallible");
    let (parts, body) = res.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (Response::from_parts(parts, Body::from(bytes)), json)
}

fn create(key: &str, who: &str, body: &str) -> Request<Body> {
    Request::post("/orders")
        .header("idempotency-key", key)
        .header("authorization", format!("Bearer {who}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn patch(path: &str, who: &str, key: &str, if_match: Option<&str>, body: &str) -> Request<Body> {
    let mut req = Request::patch(path)
        .header("idempotency-key", key)
        .header("authorization", format!("Bearer {who}"))
        .header("content-type", "application/json");
    if let Some(tag) = if_match {
        req = req.header("if-match", tag);
    }
    req.body(Body::from(body.to_owned())).unwrap()
}

fn etag(res: &Response<Body>) -> String {
    res.headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

/// Alice and Bob read one order, both change it: Bob's change, based on a stale read, is refused
/// with 412 and the current ETag instead of erasing Alice's; he reads again and succeeds. A change
/// without If-Match gets 428; Alice's retried PATCH is replayed, not refused by its own success.
async fn two_editors(router: &Router) -> Outcome {
    let (res, order) = send(
        router,
        create("order-dave-1", "dave", r#"{"sku":"tea","quantity":1}"#),
    )
    .await;
    let id = order["id"].as_str().unwrap_or("ord_?").to_owned();
    let path = format!("/orders/{id}");
    let created = res.status() == StatusCode::CREATED;
    let (alice_read, _) = send(router, get(&path, "dave")).await;
    let (bob_read, _) = send(router, get(&path, "dave")).await;
    let (a_tag, b_tag) = (etag(&alice_read), etag(&bob_read));
    let (no_tag, _) = send(
        router,
        patch(&path, "dave", "edit-0", None, r#"{"quantity":9}"#),
    )
    .await;
    let (alice, _) = send(
        router,
        patch(&path, "dave", "edit-a", Some(&a_tag), r#"{"quantity":2}"#),
    )
    .await;
    let (alice_retry, _) = send(
        router,
        patch(&path, "dave", "edit-a", Some(&a_tag), r#"{"quantity":2}"#),
    )
    .await;
    let (bob, _) = send(
        router,
        patch(&path, "dave", "edit-b", Some(&b_tag), r#"{"quantity":5}"#),
    )
    .await;
    let (bob_reread, _) = send(router, get(&path, "dave")).await;
    let fresh = etag(&bob_reread);
    let (bob_again, _) = send(
        router,
        patch(&path, "dave", "edit-b2", Some(&fresh), r#"{"quantity":5}"#),
    )
    .await;
    let (_, last) = send(router, get(&path, "dave")).await;
    let statuses = [
        no_tag.status(),
        alice.status(),
        alice_retry.status(),
        bob.status(),
        bob_again.status(),
    ];
    Outcome {
        name: "two clients read one order and both PATCH it (If-Match)",
        expected: "no If-Match 428; Alice 200 (retry replayed); Bob 412 with the new ETag, then 200 after a re-read; quantity 5".into(),
        observed: format!(
            "statuses {:?}, Bob's 412 carried ETag {}, final quantity {}",
            statuses.map(|s| s.as_u16()),
            etag(&bob),
            last["quantity"]
        ),
        ok: created
            && a_tag == "\"1\""
            && statuses
                == [
                    StatusCode::PRECONDITION_REQUIRED,
                    StatusCode::OK,
                    StatusCode::OK,
                    StatusCode::PRECONDITION_FAILED,
                    StatusCode::OK,
                ]
            && alice_retry.headers().contains_key("idempotent-replayed")
            && etag(&bob) == "\"2\""
            && last["quantity"] == 5
            && last["version"] == 3,
    }
}

/// A client with `retry-client` sends one POST; the network loses the server's answer twice (the
/// order was created each time it arrived), then delivers it: one order, and the client gets its
/// 201 — the replay of the first.
async fn lost_responses(api: &OrdersApi<idem_core::MemoryStore>, router: &Router) -> Outcome {
    use retry_client::{History, Retrier, RetryPolicy, SafeRetryLayer};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    let before = api.order_count();
    let lost = Arc::new(AtomicU32::new(0));
    let (server, lose) = (router.clone(), lost.clone());
    // The network: the request reaches the API, the answer is lost on the first two attempts.
    let network = tower::service_fn(move |req: Request<Body>| {
        let (server, lose) = (server.clone(), lose.clone());
        async move {
            let res = server.oneshot(req).await.expect("the router is infallible");
            if lose.fetch_add(1, Ordering::SeqCst) < 2 {
                drop(res);
                return Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
            }
            Ok(res)
        }
    });
    let client = tower::ServiceBuilder::new()
        .layer(SafeRetryLayer::new(Retrier::new(
            RetryPolicy::default()
                .max_attempts(4)
                .backoff(Duration::from_millis(1), Duration::from_millis(5)),
        )))
        .service(network);
    let req = Request::post("/orders")
        .header("authorization", "Bearer erin")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"sku":"coffee","quantity":1}"#))
        .unwrap();
    let res = client.oneshot(req).await;
    let made = api.order_count() - before;
    match res {
        Ok(res) => {
            let attempts = res.extensions().get::<History>().map_or(0, |h| h.len());
            let replayed = res.headers().contains_key("idempotent-replayed");
            Outcome {
                name: "one POST through a network that loses the first two answers (retry-client)",
                expected: "3 attempts with one generated Idempotency-Key; 1 order; the client gets the replayed 201".into(),
                observed: format!(
                    "{attempts} attempts, {made} order(s), final {} (replayed: {replayed})",
                    res.status().as_u16()
                ),
                ok: attempts == 3 && made == 1 && res.status() == StatusCode::CREATED && replayed,
            }
        }
        Err(e) => Outcome {
            name: "one POST through a network that loses the first two answers (retry-client)",
            expected: "3 attempts; 1 order; the replayed 201".into(),
            observed: format!("the call failed: {e}"),
            ok: false,
        },
    }
}

/// The sending side: every new order queues an `order.created` webhook in the outbox; the
/// dispatcher signs and delivers it to the merchant's receiver on loopback, which verifies it and
/// deduplicates by event id. A retried POST makes no second event; a redelivery (the sender lost
/// the receiver's answer) is acknowledged with the first answer and not processed again.
async fn order_webhooks() -> Outcome {
    let name = "3 POSTs of 2 orders (one retried), the webhooks delivered, one redelivered";
    let expected = "2 orders, 2 order.created delivered and processed once each; the redelivery answered 2xx as a replay".to_owned();
    let failed = |observed: String| Outcome {
        name,
        expected: expected.clone(),
        observed,
        ok: false,
    };
    let secret = Secret::from_standard(crate::MERCHANT_WEBHOOK_SECRET).expect("valid");
    let processed = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let seen = processed.clone();
    let receiver = Router::new()
        .route(
            "/merchant/hooks",
            axum::routing::post(
                move |axum::Extension(hook): axum::Extension<webhook_sig::VerifiedWebhook>| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().push(hook.id.unwrap_or_default());
                        StatusCode::NO_CONTENT
                    }
                },
            ),
        )
        .layer(
            webhook_sig::WebhookLayer::new(webhook_sig::Verifier::new(
                Scheme::StandardWebhooks,
                secret.clone(),
            ))
            .replay_guard(webhook_sig::ReplayGuard::new(idem_core::MemoryStore::new())),
        );
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => return failed(format!("no loopback listener: {e}")),
    };
    let url = match listener.local_addr() {
        Ok(addr) => format!("http://{addr}/merchant/hooks"),
        Err(e) => return failed(e.to_string()),
    };
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let outbox = webhook_delivery::MemoryOutbox::new();
    let api = OrdersApi::in_memory().with_memory_outbox(outbox.clone());
    let router = api.router();
    for key in ["hook-order-a", "hook-order-a", "hook-order-b"] {
        send(
            &router,
            create(key, "frank", r#"{"sku":"tea","quantity":1}"#),
        )
        .await;
    }
    let loopback: retry_safe_core::IpNet = "127.0.0.0/8".parse().expect("a network");
    let dispatcher = match crate::merchant_dispatcher(
        outbox.clone(),
        &url,
        &secret,
        &[loopback],
        Duration::from_secs(60),
        Duration::from_secs(5),
    ) {
        Ok(d) => d,
        Err(e) => return failed(e.to_string()),
    };
    let delivered = match dispatcher.run_once().await {
        Ok(round) => round.delivered,
        Err(e) => return failed(e.to_string()),
    };
    // The dispatcher "crashed" after the receiver answered: the same event goes out again.
    let sender = webhook_delivery::Sender::builder()
        .address_policy(webhook_delivery::AddressPolicy::default().allow(loopback))
        .build();
    let endpoint = webhook_delivery::Endpoint::new(
        crate::MERCHANT_ENDPOINT,
        &url,
        Signer::new(Scheme::StandardWebhooks, &secret),
    );
    let (Ok(sender), Ok(endpoint)) = (sender, endpoint) else {
        return failed("could not build the sender".into());
    };
    let first = crate::Order {
        id: "ord_1".into(),
        owner: "bearer:frank".into(),
        sku: "tea".into(),
        quantity: 1,
        version: 1,
    };
    let again = sender
        .send(&endpoint, &crate::order_created_event(&first))
        .await;
    let processed = processed.lock().clone();
    Outcome {
        name,
        expected,
        observed: format!(
            "{} orders, {delivered} delivered, redelivery {:?}; processed {processed:?}",
            api.order_count(),
            again.status
        ),
        ok: api.order_count() == 2
            && delivered == 2
            && again.is_success()
            && processed.len() == 2
            && processed.contains(&"evt_ord_1".to_owned())
            && processed.contains(&"evt_ord_2".to_owned()),
    }
}

fn get(path: &str, who: &str) -> Request<Body> {
    Request::get(path)
        .header("authorization", format!("Bearer {who}"))
        .body(Body::empty())
        .unwrap()
}

/// The scenarios, in order; `progress(done, total, name)` is called before each.
pub async fn run(mut progress: impl FnMut(usize, usize, &str)) -> Vec<Outcome> {
    const TOTAL: usize = 10;
    let mut out = Vec::new();
    let api = OrdersApi::in_memory();
    let router = api.router();

    progress(0, TOTAL, "retries and double-clicks");
    let body = r#"{"sku":"tea","quantity":2}"#;
    let mut statuses = Vec::new();
    let mut replays = 0;
    for _ in 0..5 {
        let (res, _) = send(&router, create("checkout-1", "alice", body)).await;
        statuses.push(res.status().as_u16());
        replays += usize::from(res.headers().contains_key("idempotent-replayed"));
    }
    out.push(Outcome {
        name: "5 retries of one POST /orders (same Idempotency-Key)",
        expected: "1 order created, 4 replays of the same 201".into(),
        observed: format!(
            "{} order(s), {replays} replays, statuses {statuses:?}",
            api.order_count()
        ),
        ok: api.order_count() == 1 && replays == 4 && statuses.iter().all(|&s| s == 201),
    });

    progress(1, TOTAL, "same key, another body");
    let (res, json) = send(
        &router,
        create("checkout-1", "alice", r#"{"sku":"cake","quantity":1}"#),
    )
    .await;
    out.push(Outcome {
        name: "same key with a different body",
        expected: "422 idempotency_key_reused, no new order".into(),
        observed: format!(
            "{} {}, {} order(s)",
            res.status().as_u16(),
            json["code"],
            api.order_count()
        ),
        ok: res.status() == StatusCode::UNPROCESSABLE_ENTITY && api.order_count() == 1,
    });

    progress(2, TOTAL, "a burst beyond the rate limit");
    let mut limited = None;
    let mut passed = 0;
    for _ in 0..60 {
        let (res, _) = send(&router, get("/orders", "carol")).await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            limited.get_or_insert(res);
        } else {
            passed += 1;
        }
    }
    let ok = limited.as_ref().is_some_and(|r| {
        r.headers().contains_key("ratelimit") && r.headers().contains_key("retry-after")
    });
    let header = |r: &Response<Body>, h: &str| {
        r.headers()
            .get(h)
            .map_or("-".into(), |v| v.to_str().unwrap_or("-").to_owned())
    };
    out.push(Outcome {
        name: "60 quick GETs from one client (20/s, burst 40)",
        expected: "the burst passes, then 429 with RateLimit headers".into(),
        observed: match &limited {
            Some(r) => format!(
                "{passed} passed, then 429; RateLimit: {}; Retry-After: {}",
                header(r, "ratelimit"),
                header(r, "retry-after")
            ),
            None => format!("{passed} passed, none limited"),
        },
        ok: ok && (40..60).contains(&passed),
    });

    progress(3, TOTAL, "too many requests in flight");
    let slow: Vec<_> = (0..12)
        .map(|_| {
            let router = router.clone();
            tokio::spawn(async move {
                send(&router, get("/reports/slow?ms=300", "bob"))
                    .await
                    .0
                    .status()
            })
        })
        .collect();
    let mut ok_count = 0;
    let mut refused = 0;
    for t in slow {
        match t.await.expect("no panic") {
            StatusCode::OK => ok_count += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            _ => {}
        }
    }
    out.push(Outcome {
        name: "12 slow reports at once from one client (cap 8 in flight)",
        expected: "8 run, 4 refused with 429 concurrency_limited".into(),
        observed: format!("{ok_count} ran, {refused} refused"),
        ok: ok_count == 8 && refused == 4,
    });

    progress(
        4,
        TOTAL,
        "overload: shed reads and test mode, keep critical",
    );
    // A small server (10 slots) whose read share (70 %) is full of slow reports.
    let small = OrdersApi::new(
        idem_core::MemoryStore::new(),
        Limits {
            rate: Quota::per_second(1000),
            in_flight: 100,
            in_flight_per_ip: 1_000,
            capacity: 10,
        },
    );
    let small_router = small.router();
    let holders: Vec<_> = (0..7)
        .map(|i| {
            let router = small_router.clone();
            tokio::spawn(async move {
                send(&router, get("/reports/slow?ms=400", &format!("u{i}")))
                    .await
                    .0
                    .status()
            })
        })
        .collect();
    // Wait until the 7 reports hold their slots (they sleep 400 ms inside).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while small.shedder().snapshot().in_flight < 7 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (read, _) = send(&small_router, get("/orders", "dave")).await;
    let test_mode = Request::post("/orders")
        .header("x-test-mode", "true")
        .header("idempotency-key", "t-1")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let (test, test_json) = send(&small_router, test_mode).await;
    let capture = Request::post("/payments/pi_42/capture")
        .header("idempotency-key", "capture-pi_42")
        .body(Body::empty())
        .unwrap();
    let (critical, _) = send(&small_router, capture).await;
    for h in holders {
        let _ = h.await;
    }
    out.push(Outcome {
        name: "overload: read slots full, then a read, a test-mode write, a payment capture",
        expected: "read 503, test-mode 503, capture 200 (reserved capacity)".into(),
        observed: format!(
            "read {}, test-mode {} ({}), capture {}",
            read.status().as_u16(),
            test.status().as_u16(),
            test_json["reason"].as_str().unwrap_or("-"),
            critical.status().as_u16()
        ),
        ok: read.status() == StatusCode::SERVICE_UNAVAILABLE
            && test.status() == StatusCode::SERVICE_UNAVAILABLE
            && critical.status() == StatusCode::OK
            && small.captures() == ["pi_42"],
    });

    progress(5, TOTAL, "forged and replayed webhooks");
    let secret = Secret::from_standard(PSP_WEBHOOK_SECRET).expect("valid");
    let event = br#"{"type":"payment.succeeded","id":"evt_1"}"#;
    let webhook = |signer: &Signer| {
        let mut req = Request::post("/webhooks/psp")
            .header("content-type", "application/json")
            .body(Body::from(&event[..]))
            .unwrap();
        req.headers_mut()
            .extend(signer.headers("evt_1", event).expect("valid id"));
        req
    };
    let genuine = Signer::new(Scheme::StandardWebhooks, &secret);
    let forger = Signer::new(
        Scheme::StandardWebhooks,
        &Secret::from_text("guessed").expect("valid"),
    );
    let (first, _) = send(&router, webhook(&genuine)).await;
    let (replayed, _) = send(&router, webhook(&genuine)).await;
    let (forged, forged_json) = send(&router, webhook(&forger)).await;
    out.push(Outcome {
        name: "a genuine webhook, the same again, a forged one",
        expected: "204, then the same 204 acknowledged (Webhook-Replayed: true), 401 webhook_signature_invalid; processed once"
            .into(),
        observed: format!(
            "{}, {} (replayed: {}), {} {}; processed {:?}",
            first.status().as_u16(),
            replayed.status().as_u16(),
            replayed.headers().contains_key("webhook-replayed"),
            forged.status().as_u16(),
            forged_json["code"],
            api.webhook_events()
        ),
        ok: first.status() == StatusCode::NO_CONTENT
            && replayed.status() == StatusCode::NO_CONTENT
            && replayed.headers().contains_key("webhook-replayed")
            && forged.status() == StatusCode::UNAUTHORIZED
            && api.webhook_events() == ["evt_1"],
    });

    progress(6, TOTAL, "an error, traced");
    let traced = Request::get("/orders/ord_404")
        .header("authorization", "Bearer erin")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Body::empty())
        .unwrap();
    let (res, json) = send(&router, traced).await;
    let header_id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    out.push(Outcome {
        name: "GET of a missing order with a traceparent",
        expected: "404 problem+json with request_id, trace_id, error_code, latency_ms".into(),
        observed: format!(
            "{} request_id={} trace_id={} error_code={} latency_ms={}",
            res.status().as_u16(),
            json["request_id"],
            json["trace_id"],
            json["error_code"],
            json["latency_ms"]
        ),
        ok: res.status() == StatusCode::NOT_FOUND
            && json["request_id"] == header_id
            && json["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
            && json["error_code"] == "order_not_found"
            && json["latency_ms"].is_u64(),
    });
    progress(7, TOTAL, "two clients edit one order");
    out.push(two_editors(&router).await);

    progress(8, TOTAL, "a retrying client through lost responses");
    out.push(lost_responses(&api, &router).await);

    progress(9, TOTAL, "order webhooks through the outbox");
    out.push(order_webhooks().await);

    progress(TOTAL, TOTAL, "done");
    out
}
