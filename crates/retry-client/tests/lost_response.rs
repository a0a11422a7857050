//! The lost-response test, end to end on loopback: a TCP proxy between the client and a real
//! orders API (served by axum on a loopback port) drops responses after the server acted, resets
//! connections before forwarding, or stalls past the client's timeout — seeded, 30 % of the
//! connections. 1,000 logical `POST /orders` must make exactly 1,000 orders, each call ending with
//! its order's 201 (first or replayed). Once through reqwest, once through the tower layer over
//! hyper-util.

use bytes::Bytes;
use examples::{Limits, OrdersApi};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use idem_core::MemoryStore;
use ratelimit_token_bucket::Quota;
use retry_client::{History, Retrier, RetryBudget, RetryMiddleware, RetryPolicy, SafeRetryLayer};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

const LOGICAL: usize = 1_000;
const CONCURRENCY: usize = 24;
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(400);
const STALL: Duration = Duration::from_millis(700);

#[derive(Debug, Default)]
struct Faults {
    dropped: AtomicU64,
    reset: AtomicU64,
    stalled: AtomicU64,
    clean: AtomicU64,
}

/// The orders API with limits wide enough for the load, on a loopback port.
async fn orders_api() -> (OrdersApi<MemoryStore>, SocketAddr) {
    let limits = Limits {
        rate: Quota::per_second(100_000).burst(100_000),
        in_flight: 64,
        in_flight_per_ip: 1_024,
        capacity: 1_024,
    };
    let api = OrdersApi::new(MemoryStore::new(), limits);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = api.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (api, addr)
}

/// The faulty proxy: one decision per connection (the clients open one connection per attempt),
/// drawn from a seeded generator.
async fn proxy(upstream: SocketAddr, seed: u64, faults: Arc<Faults>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rng = Arc::new(parking_lot::Mutex::new(fastrand::Rng::with_seed(seed)));
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let roll = rng.lock().u32(0..100);
            let faults = faults.clone();
            tokio::spawn(async move {
                let _ = relay(client, upstream, roll, &faults).await;
            });
        }
    });
    addr
}

async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    roll: u32,
    faults: &Faults,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = client.read(&mut buf).await?;
    if n == 0 {
        return Ok(());
    }
    if roll < 10 {
        // The request was written, but never reaches the server: reset.
        faults.reset.fetch_add(1, Ordering::Relaxed);
        client.set_zero_linger()?;
        return Ok(());
    }
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(&buf[..n]).await?;
    // The request bodies are small: the first read holds the whole request. Forward anything
    // else the client sends while we wait for the answer.
    let m = server.read(&mut buf).await?;
    match roll {
        10..=19 => {
            // The server acted and answered; the answer is lost.
            faults.dropped.fetch_add(1, Ordering::Relaxed);
            client.set_zero_linger()?;
            Ok(())
        }
        20..=29 => {
            // The answer comes after the client gave up on this attempt.
            faults.stalled.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(STALL).await;
            let _ = client.write_all(&buf[..m]).await;
            Ok(())
        }
        _ => {
            faults.clean.fetch_add(1, Ordering::Relaxed);
            client.write_all(&buf[..m]).await?;
            // Keep relaying until either side closes.
            let (mut cr, mut cw) = client.split();
            let (mut sr, mut sw) = server.split();
            let _ = tokio::join!(
                tokio::io::copy(&mut cr, &mut sw),
                tokio::io::copy(&mut sr, &mut cw)
            );
            Ok(())
        }
    }
}

fn retrier() -> Retrier {
    // 30 % of attempts fail here, by design: a budget for 10 % would (rightly) refuse most
    // retries. This test is about correctness under loss, so the budget is widened.
    Retrier::new(
        RetryPolicy::default()
            .max_attempts(12)
            .backoff(Duration::from_millis(5), Duration::from_millis(100))
            .attempt_timeout(ATTEMPT_TIMEOUT)
            .deadline(Duration::from_secs(30)),
    )
    .budget(Some(RetryBudget::new(Duration::from_secs(10), 1_000, 1.0)))
    .seed(11)
}

struct Call {
    status: StatusCode,
    order: String,
    attempts: usize,
}

fn check(api: &OrdersApi<MemoryStore>, calls: Vec<Call>, faults: &Faults, transport: &str) {
    let ids: HashSet<_> = calls.iter().map(|c| c.order.clone()).collect();
    let attempts: usize = calls.iter().map(|c| c.attempts).sum();
    let injected = faults.dropped.load(Ordering::Relaxed)
        + faults.reset.load(Ordering::Relaxed)
        + faults.stalled.load(Ordering::Relaxed);
    eprintln!(
        "{transport}: {LOGICAL} calls, {attempts} attempts, faults {faults:?}, {} orders",
        api.order_count()
    );
    assert!(calls.iter().all(|c| c.status == StatusCode::CREATED));
    assert_eq!(ids.len(), LOGICAL, "every call got its own order");
    assert_eq!(
        api.order_count(),
        LOGICAL,
        "exactly one order per logical request"
    );
    assert!(
        injected as f64 >= 0.2 * attempts as f64,
        "faults were injected: {injected}"
    );
    assert!(attempts > LOGICAL, "retries happened and were reported");
}

fn body(i: usize) -> String {
    format!("{{\"sku\":\"sku-{i}\",\"quantity\":1}}")
}

/// Runs the `LOGICAL` calls from `CONCURRENCY` tasks; `call(i)` makes call `i` and reports it.
async fn drive<F, Fut>(call: F) -> Vec<Call>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Call> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (call, next) = (call.clone(), next.clone());
            tokio::spawn(async move {
                let mut calls = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= LOGICAL {
                        return calls;
                    }
                    calls.push(call(i).await);
                }
            })
        })
        .collect();
    let mut calls = Vec::new();
    for t in tasks {
        calls.extend(t.await.unwrap());
    }
    calls
}

fn reported(status: StatusCode, history: Option<&History>, body: &[u8]) -> Call {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    Call {
        status,
        order: json["id"].as_str().unwrap_or("").to_owned(),
        attempts: history.map_or(0, History::len),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_per_logical_request_through_lost_responses_with_reqwest() {
    let (api, upstream) = orders_api().await;
    let faults = Arc::new(Faults::default());
    let addr = proxy(upstream, 20261125, faults.clone()).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(http)
        .with(RetryMiddleware::new(retrier()))
        .build();
    let calls = drive(move |i| {
        let client = client.clone();
        async move {
            let res = client
                .post(format!("http://{addr}/orders"))
                .header("authorization", format!("Bearer client-{i}"))
                .header("content-type", "application/json")
                .body(body(i))
                .send()
                .await
                .unwrap_or_else(|e| panic!("call {i} failed: {e:?}"));
            let (status, history) = (res.status(), res.extensions().get::<History>().cloned());
            let bytes = res.bytes().await.unwrap_or_default();
            reported(status, history.as_ref(), &bytes)
        }
    })
    .await;
    check(&api, calls, &faults, "reqwest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_per_logical_request_through_lost_responses_with_the_tower_layer() {
    let (api, upstream) = orders_api().await;
    let faults = Arc::new(Faults::default());
    let addr = proxy(upstream, 20261126, faults.clone()).await;
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Full<Bytes>>();
    let client = tower::ServiceBuilder::new()
        .layer(SafeRetryLayer::new(retrier()))
        .service(hyper);
    let calls = drive(move |i| {
        let client = client.clone();
        async move {
            let req = Request::post(format!("http://{addr}/orders"))
                .header("authorization", format!("Bearer client-{i}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body(i))))
                .unwrap();
            let res = client
                .oneshot(req)
                .await
                .unwrap_or_else(|e| panic!("call {i} failed: {e:?}"));
            let (status, history) = (res.status(), res.extensions().get::<History>().cloned());
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            reported(status, history.as_ref(), &bytes)
        }
    })
    .await;
    check(&api, calls, &faults, "tower over hyper-util");
}
