//! gRPC through the real `orders-api` binary: a real tonic client on loopback against the tonic
//! services the binary serves beside its HTTP routes, behind the same layers. Every rejection a
//! layer makes is a gRPC status (with the error code as `x-error-code` and in an `ErrorInfo`, the
//! wait as `grpc-retry-pushback-ms` and a `RetryInfo`); the same server still answers HTTP with
//! problem+json.

mod common;

use common::{free_addr, http, orders_api, request, wait_listening, Proc};
use examples::grpc::pb::orders_client::OrdersClient;
use examples::grpc::pb::reports_client::ReportsClient;
use examples::grpc::pb::{CreateOrderRequest, SlowReportRequest};
use std::net::SocketAddr;
use std::time::Duration;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// orders-api with small limits: `rate` requests/s per principal (burst as many), 1 in flight
/// per principal, 4 slots (3 for non-critical work).
async fn server(rate: &str) -> (Proc, SocketAddr, Channel) {
    let addr = free_addr();
    let proc = orders_api(
        addr,
        &[
            "--rate",
            &format!("{rate}/s"),
            "--burst",
            rate,
            "--in-flight",
            "1",
            "--capacity",
            "4",
        ],
        &[],
    );
    wait_listening(addr).await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("an HTTP/2 connection to orders-api");
    (proc, addr, channel)
}

fn call<T>(message: T, token: &str, key: Option<&str>) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    if let Some(key) = key {
        req.metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
    }
    req.set_timeout(Duration::from_secs(10));
    req
}

fn tea(quantity: u32) -> CreateOrderRequest {
    CreateOrderRequest {
        sku: "tea".into(),
        quantity,
    }
}

/// The metadata of an answer without what differs per response by design.
fn stable(metadata: &MetadataMap) -> Vec<(String, String)> {
    let varying = [
        "x-request-id",
        "date",
        "ratelimit",
        "ratelimit-policy",
        "idempotent-replayed",
    ];
    let mut kept: Vec<(String, String)> = metadata
        .clone()
        .into_headers()
        .iter()
        .filter(|(n, _)| !varying.contains(&n.as_str()))
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    kept.sort();
    kept
}

/// The error code a layer put in the status: metadata `x-error-code` and the `ErrorInfo`.
fn error_code(status: &Status) -> String {
    let from_metadata = status
        .metadata()
        .get("x-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("x-error-code metadata");
    let details = status.get_error_details();
    let info = details
        .error_info()
        .expect("an ErrorInfo in the status details");
    assert_eq!(info.domain, "retry-safe");
    assert_eq!(info.metadata.get("error_code"), Some(&from_metadata));
    assert_eq!(info.reason, from_metadata.to_ascii_uppercase());
    from_metadata
}

fn pushback(status: &Status) -> Duration {
    let ms: u64 = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .expect("grpc-retry-pushback-ms")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let retry = status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("a RetryInfo");
    assert_eq!(retry.as_millis() as u64, ms);
    assert!(status.metadata().contains_key("retry-after"));
    Duration::from_millis(ms)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_key_five_calls_one_order_and_the_same_answer_with_its_trailers() {
    let (_server, addr, channel) = server("100").await;
    let mut orders = OrdersClient::new(channel);
    let mut answers = Vec::new();
    for _ in 0..5 {
        let res = orders
            .create_order(call(tea(2), "alice", Some("grpc-order-1")))
            .await
            .expect("created or replayed");
        answers.push(res);
    }
    let first = &answers[0];
    assert_eq!(first.get_ref().sku, "tea");
    assert!(first.get_ref().id.starts_with("ord_"));
    assert_eq!(
        first.metadata().get("x-order-id").unwrap(),
        first.get_ref().id.as_str()
    );
    assert!(!first.metadata().contains_key("idempotent-replayed"));
    for replay in &answers[1..] {
        assert_eq!(replay.get_ref(), first.get_ref(), "the same message");
        // tonic merges the trailers into the metadata it returns, and fails a call whose answer
        // lost its `grpc-status` trailer: a replay that succeeds kept its trailers.
        assert_eq!(stable(replay.metadata()), stable(first.metadata()));
        assert_eq!(
            replay.metadata().get("idempotent-replayed").unwrap(),
            "true"
        );
    }
    // One order exists.
    let (status, _, body) = http(addr, &request("GET", "/orders", "alice", None, ""))
        .await
        .expect("GET /orders answers");
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{body}");

    // The same key with another message: the mismatch, as INVALID_ARGUMENT; nothing created.
    let err = orders
        .create_order(call(tea(3), "alice", Some("grpc-order-1")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(error_code(&err), "idempotency_key_reused");

    // No key on a route that requires one.
    let err = orders
        .create_order(call(tea(1), "alice", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(error_code(&err), "idempotency_key_missing");

    // The handler's own status is replayed too.
    for _ in 0..2 {
        let err = orders
            .create_order(call(tea(0), "alice", Some("grpc-bad-1")))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(err.message(), "sku must be set and quantity at least 1");
    }

    // HTTP on the same server, through the same layers: problem+json.
    let body = r#"{"sku":"tea","quantity":1}"#;
    let (status, head, _) = http(
        addr,
        &request("POST", "/orders", "alice", Some("http-1"), body),
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    let other = r#"{"sku":"tea","quantity":9}"#;
    let (status, head2, problem) = http(
        addr,
        &request("POST", "/orders", "alice", Some("http-1"), other),
    )
    .await
    .unwrap();
    assert_eq!(status, 422, "{head}");
    assert!(head2.contains("content-type: application/problem+json"));
    let problem: serde_json::Value = serde_json::from_str(&problem).unwrap();
    assert_eq!(problem["error_code"], "idempotency_key_reused");
    assert!(problem["trace_id"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_concurrency_limited_and_shed_calls_get_their_grpc_statuses() {
    let (_server, addr, channel) = server("5").await;

    // Rate: the sixth call within a second is RESOURCE_EXHAUSTED, with pushback.
    let mut reports = ReportsClient::new(channel.clone());
    let mut limited = None;
    for _ in 0..20 {
        match reports
            .slow_report(call(SlowReportRequest { millis: 0 }, "bob", None))
            .await
        {
            Ok(_) => {}
            Err(status) => {
                limited = Some(status);
                break;
            }
        }
    }
    let limited = limited.expect("the burst of 5 runs out");
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(error_code(&limited), "rate_limited");
    assert!(pushback(&limited) > Duration::ZERO);

    // In flight: carol's second call while her first runs is RESOURCE_EXHAUSTED.
    let slow = {
        let mut reports = reports.clone();
        tokio::spawn(async move {
            reports
                .slow_report(call(SlowReportRequest { millis: 1500 }, "carol", None))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = reports
        .slow_report(call(SlowReportRequest { millis: 0 }, "carol", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(error_code(&err), "concurrency_limited");
    pushback(&err);
    slow.await.unwrap().expect("the first call completes");

    // Shed: three slow calls of three principals fill the 3 non-critical slots; a fourth
    // principal's call is UNAVAILABLE, with pushback.
    let fill: Vec<_> = ["dave", "erin", "frank"]
        .into_iter()
        .map(|who| {
            let mut reports = reports.clone();
            tokio::spawn(async move {
                reports
                    .slow_report(call(SlowReportRequest { millis: 2000 }, who, None))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let err = reports
        .slow_report(call(SlowReportRequest { millis: 0 }, "gina", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(error_code(&err), "overloaded");
    pushback(&err);
    for f in fill {
        f.await.unwrap().expect("admitted calls complete");
    }

    // The same rejection to HTTP is a 503 problem+json (the slots are free again: admitted).
    let (status, _, _) = http(addr, &request("GET", "/orders", "gina", None, ""))
        .await
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_keeps_its_trace_id_through_the_trace_layer_and_unknown_methods_are_grpc_errors() {
    let (_server, _addr, channel) = server("100").await;
    let mut reports = ReportsClient::new(channel.clone());
    let mut req = call(SlowReportRequest { millis: 0 }, "hana", None);
    req.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let res = reports.slow_report(req).await.unwrap();
    assert_eq!(res.get_ref().trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        res.metadata().get("x-request-id").unwrap(),
        res.get_ref().request_id.as_str()
    );

    // A service the server does not have: the router's 404 reaches the client as a gRPC status
    // (not an HTTP error), with the trace id in its ErrorInfo.
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/orders.v1.NoSuchService/Method");
    let mut req = call(SlowReportRequest { millis: 0 }, "hana", Some("nm-1"));
    req.metadata_mut().insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            .parse()
            .unwrap(),
    );
    let err = grpc
        .unary::<_, examples::grpc::pb::Report, _>(req, path, tonic_prost::ProstCodec::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(error_code(&err), "not_found");
    let details = err.get_error_details();
    let info = details.error_info().expect("an ErrorInfo");
    assert_eq!(
        info.metadata.get("trace_id").map(String::as_str),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
    assert!(info.metadata.contains_key("request_id"));

    // An unknown method of a known service: tonic's own UNIMPLEMENTED, passed through.
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/orders.v1.Reports/NoSuchMethod");
    let err = grpc
        .unary::<_, examples::grpc::pb::Report, _>(
            call(SlowReportRequest { millis: 0 }, "hana", None),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
}

/// The client half over a tonic channel: calls that meet RESOURCE_EXHAUSTED are retried after
/// the server's pushback with one generated `idempotency-key` per call, and each call makes one
/// order.
#[tokio::test(flavor = "multi_thread")]
async fn the_retry_client_retries_grpc_calls_with_one_key_and_makes_each_order_once() {
    use retry_client::{GrpcRetryLayer, History, Retrier, RetryPolicy};
    let (_server, addr, channel) = server("2").await;
    let retrier = Retrier::new(RetryPolicy::default().max_attempts(8));
    let retrying = tower::ServiceBuilder::new()
        .layer(GrpcRetryLayer::new(retrier, |bytes| {
            tonic::body::Body::new(http_body_util::Full::new(bytes))
        }))
        .service(channel);
    let mut orders = OrdersClient::new(retrying);
    let mut ids = Vec::new();
    let mut retried = 0;
    for i in 1..=5 {
        let res = orders
            .create_order(call(tea(i), "ivan", None))
            .await
            .expect("each call succeeds, retried past the rate limit");
        let history = res
            .extensions()
            .get::<History>()
            .expect("the attempts' history")
            .clone();
        let key = history.idempotency_key.clone().expect("a generated key");
        assert!(!key.is_empty());
        if history.len() > 1 {
            retried += 1;
        }
        ids.push(res.into_inner().id);
    }
    assert!(retried >= 1, "a burst of 2 cannot admit 5 calls at once");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "five calls, five orders");
    let (_, _, body) = http(addr, &request("GET", "/orders", "judge", None, ""))
        .await
        .unwrap();
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        5,
        "no call made a second order"
    );
}
