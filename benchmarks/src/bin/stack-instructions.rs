//! A fixed number of requests through the orders API in process, for instruction counting under
//! valgrind's callgrind (`cargo xtask instructions`): no network, one thread, the embedded stores.
//! After a warm-up of 100 requests, the `N` measured ones run inside `measured_requests`, the only
//! function callgrind collects in.
//!
//! `stack-instructions <stack|bare|slow> <post|get> <N>`: `stack` is the router with every layer,
//! `bare` the same handlers without layers, `slow` the stack with one deliberately wasteful layer
//! in front (the check that the CI gate notices a slower layer). `post` sends `POST /orders` with a
//! fresh `Idempotency-Key` each, `get` sends `GET /orders/ord_1`. Limits are far above the load.
//! Exits non-zero if any answer is not a success.

use axum::body::Body;
use examples::{Limits, OrdersApi};
use http::Request;
use http_body_util::BodyExt;
use ratelimit_token_bucket::Quota;
use tower::ServiceExt;

fn request(kind: &str, i: usize) -> Request<Body> {
    let builder = Request::builder().header("authorization", format!("Bearer p{}", i % 64));
    match kind {
        "post" => builder
            .method("POST")
            .uri("/orders")
            .header("content-type", "application/json")
            .header("idempotency-key", format!("ik-{i}"))
            .body(Body::from(r#"{"sku":"tea","quantity":1}"#))
            .expect("a valid request"),
        _ => builder
            .method("GET")
            .uri("/orders/ord_1")
            .body(Body::empty())
            .expect("a valid request"),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: stack-instructions <stack|bare|slow> <post|get> <N>";
    let (mode, kind, n) = match args.as_slice() {
        [_, mode, kind, n] => (mode.as_str(), kind.as_str(), n.parse::<usize>()?),
        _ => return Err(usage.into()),
    };
    let limits = Limits {
        rate: Quota::per_second(1_000_000_000),
        in_flight: 1 << 20,
        in_flight_per_ip: 1 << 20,
        capacity: 1 << 20,
    };
    let api = OrdersApi::new(examples::memory_store(), limits);
    let router = match mode {
        "stack" => api.router(),
        "bare" => api.bare_router(),
        "slow" => api
            .router()
            .layer(tower::util::MapRequestLayer::new(|req: Request<Body>| {
                // A layer that wastes work on every request: hashes the path 2,000 times.
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for _ in 0..2_000 {
                    for b in req.uri().path().bytes() {
                        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                    }
                }
                std::hint::black_box(h);
                req
            })),
        _ => return Err(usage.into()),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // The order every GET reads, and a warm-up: lazy statics (the clock's calibration, the
        // metrics' registrations) and first allocations happen here, outside the measured part.
        let seed = router.clone().oneshot(request("post", usize::MAX)).await?;
        if !seed.status().is_success() {
            return Err(format!("seeding answered {}", seed.status()).into());
        }
        send(&router, kind, 1_000_000..1_000_100).await
    })?;
    measured_requests(&rt, &router, kind, n)
}

async fn send(
    router: &axum::Router,
    kind: &str,
    range: std::ops::Range<usize>,
) -> Result<(), Box<dyn std::error::Error>> {
    for i in range {
        let res = router.clone().oneshot(request(kind, i)).await?;
        let status = res.status();
        let _ = res.into_body().collect().await;
        if !status.is_success() {
            return Err(format!("request {i} answered {status}").into());
        }
    }
    Ok(())
}

/// The measured part: `n` requests. `cargo xtask instructions` collects instructions only while
/// this function runs (`valgrind --tool=callgrind --toggle-collect=*measured_requests*`).
#[inline(never)]
fn measured_requests(
    rt: &tokio::runtime::Runtime,
    router: &axum::Router,
    kind: &str,
    n: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    rt.block_on(send(router, kind, 0..n))
}
