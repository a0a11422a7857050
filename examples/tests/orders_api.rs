//! The orders API over real HTTP on loopback: retries with one key create one order.

use examples::{Order, OrdersApi};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request on a fresh connection; returns the status, the head and the body.
async fn http(addr: std::net::SocketAddr, request: String) -> (u16, String, String) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut raw))
        .await
        .expect("server answered")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn create(key: &str, token: &str, body: &str) -> String {
    format!(
        "POST /orders HTTP/1.1\r\nhost: test\r\nconnection: close\r\nidempotency-key: {key}\r\n\
         authorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_double_clicks_create_one_order() {
    let api = OrdersApi::in_memory();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = api.router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let body = r#"{"sku":"tea","quantity":2}"#;
    let (status, head, first) = http(addr, create("checkout-1", "alice", body)).await;
    assert_eq!(status, 201);
    assert!(head.contains("location: /orders/ord_1"));
    let order: Order = serde_json::from_str(&first).unwrap();
    assert_eq!((order.owner.as_str(), order.quantity), ("bearer:alice", 2));

    // Ten retries at once, as from a client whose first attempt timed out.
    let retries: Vec<_> = (0..10)
        .map(|_| tokio::spawn(http(addr, create("checkout-1", "alice", body))))
        .collect();
    for r in retries {
        let (status, head, replay) = r.await.unwrap();
        assert_eq!(status, 201);
        assert!(head.contains("idempotent-replayed: true"));
        assert_eq!(replay, first);
    }
    assert_eq!(api.order_count(), 1);

    // The same key from another principal is another order; a changed body is refused.
    assert_eq!(http(addr, create("checkout-1", "bob", body)).await.0, 201);
    let (status, head, problem) = http(
        addr,
        create("checkout-1", "alice", r#"{"sku":"tea","quantity":9}"#),
    )
    .await;
    assert_eq!(status, 422);
    assert!(head.contains("content-type: application/problem+json"));
    assert!(problem.contains("idempotency_key_reused"));
    let missing =
        "POST /orders HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}";
    assert_eq!(http(addr, missing.into()).await.0, 400);

    let (status, _, list) = http(
        addr,
        "GET /orders HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".into(),
    )
    .await;
    assert_eq!(status, 200);
    let orders: Vec<Order> = serde_json::from_str(&list).unwrap();
    assert_eq!(orders.len(), 2);
    assert_eq!(api.order_count(), 2);
    let m = api.idempotency_metrics();
    assert_eq!((m.executed, m.replayed, m.mismatched), (2, 10, 1));
    server.abort();
}

/// `without_idempotency` (the benchmarks' yardstick) takes the idempotency layer off the POSTs
/// and keeps the rest: the same key twice makes two orders, and the rate limit still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idempotency_a_repeated_key_makes_a_second_order_and_other_layers_stay() {
    let api = OrdersApi::in_memory().without_idempotency();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = api.router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let body = r#"{"sku":"tea","quantity":1}"#;
    for _ in 0..2 {
        let (status, head, _) = http(addr, create("same-key", "alice", body)).await;
        assert_eq!(status, 201);
        assert!(!head.contains("idempotent-replayed"), "{head}");
        assert!(
            head.contains("ratelimit:"),
            "the rate limit layer still runs: {head}"
        );
    }
    assert_eq!(api.order_count(), 2);
    server.abort();
}
