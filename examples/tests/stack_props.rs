//! The whole layer stack as a property: for any mix of clients, retries (some concurrent), keys
//! and bodies, every key's handler runs at most once and every replay equals the first response.
//! `cargo xtask proptest --cases N` runs it with more cases; a failure prints the minimal stream.

use axum::body::Body;
use examples::{Limits, OrdersApi};
use http::Request;
use http_body_util::BodyExt;
use proptest::prelude::*;
use ratelimit_token_bucket::Quota;
use std::collections::HashMap;
use tower::ServiceExt;

/// One request: (client, key, body variant, sent together with the previous request).
type Op = (u8, u8, u8, bool);

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec((0u8..3, 0u8..4, 0u8..2, any::<bool>()), 1..40)
}

fn request(&(client, key, body, _): &Op) -> Request<Body> {
    Request::post("/orders")
        .header("authorization", format!("Bearer client-{client}"))
        .header("idempotency-key", format!("key-{key}"))
        .header("content-type", "application/json")
        .body(Body::from(format!(
            r#"{{"sku":"sku-{body}","quantity":1}}"#
        )))
        .unwrap()
}

async fn play(stream: &[Op]) -> (usize, Vec<(Op, u16, bytes::Bytes)>) {
    let api = OrdersApi::new(
        idem_core::MemoryStore::new(),
        Limits {
            rate: Quota::per_second(100_000),
            in_flight: 1000,
            in_flight_per_ip: 1_000,
            capacity: 10_000,
        },
    );
    let router = api.router();
    let mut results = Vec::new();
    let mut i = 0;
    while i < stream.len() {
        // A group: this request and the following ones flagged "together" run concurrently.
        let mut j = i + 1;
        while j < stream.len() && stream[j].3 {
            j += 1;
        }
        let tasks: Vec<_> = stream[i..j]
            .iter()
            .map(|op| {
                let (router, op) = (router.clone(), *op);
                tokio::spawn(async move {
                    let res = router.oneshot(request(&op)).await.unwrap();
                    let status = res.status().as_u16();
                    (
                        op,
                        status,
                        res.into_body().collect().await.unwrap().to_bytes(),
                    )
                })
            })
            .collect();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        i = j;
    }
    (api.order_count(), results)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64)
    ))]

    #[test]
    fn each_key_runs_at_most_once_and_replays_equal_the_first_response(stream in ops()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (orders, results) = rt.block_on(play(&stream));
        let mut first: HashMap<(u8, u8), (u8, bytes::Bytes)> = HashMap::new();
        for ((client, key, body, _), status, bytes) in &results {
            match status {
                201 => {
                    let seen = first.entry((*client, *key)).or_insert((*body, bytes.clone()));
                    prop_assert_eq!(&seen.1, bytes, "a replay differs from the first response");
                    prop_assert_eq!(seen.0, *body, "a 201 for another body under the same key");
                }
                // In flight (a concurrent twin) or another body on a used key.
                409 | 422 => {}
                other => prop_assert!(false, "unexpected status {}", other),
            }
        }
        prop_assert_eq!(orders, first.len(), "one order per key that succeeded, never two");
        // A 422 only ever answers a body that differs from the key's stored request.
        for ((client, key, body, _), status, _) in &results {
            if *status == 422 {
                let stored = first.get(&(*client, *key)).map(|f| f.0);
                prop_assert!(stored != Some(*body), "422 for the stored body itself");
            }
        }
    }
}
