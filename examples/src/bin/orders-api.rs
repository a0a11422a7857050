//! The orders API on the in-memory store: `cargo run -p examples --bin orders-api`.
//!
//! Listens on `ADDR` (default `127.0.0.1:3000`).

use std::net::SocketAddr;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::var("ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()?;
    let api = examples::OrdersApi::in_memory();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("orders API on http://{addr} (in-memory stores and limiters)");
    println!("try the same request twice; the second is a replay and no second order is made:");
    println!(
        "  curl -i -X POST http://{addr}/orders -H 'Idempotency-Key: demo-1' \\\n       -H 'content-type: application/json' -d '{{\"sku\":\"tea\",\"quantity\":2}}'"
    );
    println!("  curl http://{addr}/orders");
    println!("  curl -i http://{addr}/orders/ord_404   # a problem+json with request_id, trace_id, latency_ms");
    println!("  curl -i -X POST http://{addr}/payments/pi_1/capture -H 'Idempotency-Key: cap-1'   # critical route");
    println!("every layer is on: trace-ctx, load shedding, 20 req/s per client (burst 40), 8 in flight per client, idempotency");
    println!("the guided tour of all of them: cargo run -p examples --bin demo");
    axum::serve(listener, api.router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
