//! The layer over HTTP: 428, 412 + ETag, 304, 400, create-only, 50 concurrent writers, a race
//! after the check, the idempotency interplay, and a model of interleaved clients.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use idem_core::{IdempotencyLayer, IdempotencyPolicy, MemoryStore};
use optimistic_lock::{Expected, OptimisticLockLayer, Version, VersionedMap};
use proptest::prelude::*;
use std::sync::Arc;
use tower::ServiceExt;

type Orders = VersionedMap<String, u32>;

async fn read(State(orders): State<Orders>, Path(id): Path<String>) -> Response {
    match orders.get(&id) {
        Some((quantity, _)) => quantity.to_string().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn write(
    State(orders): State<Orders>,
    Path(id): Path<String>,
    Extension(expected): Extension<Expected>,
    body: String,
) -> Response {
    let Ok(quantity) = body.trim().parse::<u32>() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let created = expected == Expected::Absent;
    match orders.compare_and_set(id, &expected, quantity) {
        Ok(v) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (
                status,
                [("etag", v.etag().to_string())],
                quantity.to_string(),
            )
                .into_response()
        }
        Err(conflict) => conflict.into_response(),
    }
}

fn app(orders: &Orders) -> Router {
    let source = orders.source(|parts| {
        parts
            .uri
            .path()
            .strip_prefix("/orders/")
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
    });
    Router::new()
        .route("/orders/{id}", get(read).put(write).patch(write))
        .with_state(orders.clone())
        .layer(OptimisticLockLayer::new(source))
}

fn req(method: &str, id: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("/orders/{id}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::from(body.to_owned())).unwrap()
}

async fn send(app: &Router, r: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let res = app.clone().oneshot(r).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn problem(headers: &http::HeaderMap, body: &str) -> serde_json::Value {
    assert_eq!(headers["content-type"], "application/problem+json");
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn reads_carry_the_etag_and_answer_304() {
    let orders = Orders::new();
    orders
        .compare_and_set("o1".to_owned(), &Expected::Absent, 2)
        .unwrap();
    let app = app(&orders);
    let (status, headers, body) = send(&app, req("GET", "o1", &[], "")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "2"));
    assert_eq!(headers["etag"], "\"1\"");
    assert!(headers.contains_key("last-modified"));
    let (status, headers, body) =
        send(&app, req("GET", "o1", &[("if-none-match", "\"1\"")], "")).await;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_MODIFIED, ""));
    assert_eq!(headers["etag"], "\"1\"");
    let (status, _, _) = send(&app, req("GET", "o1", &[("if-none-match", "\"0\"")], "")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, _) = send(&app, req("GET", "nope", &[], "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!headers.contains_key("etag"));
}

#[tokio::test]
async fn writes_need_a_precondition_and_a_stale_one_gets_412_with_the_current_etag() {
    let orders = Orders::new();
    orders
        .compare_and_set("o1".to_owned(), &Expected::Absent, 2)
        .unwrap();
    let app = app(&orders);

    let (status, headers, body) = send(&app, req("PATCH", "o1", &[], "5")).await;
    assert_eq!(status, StatusCode::PRECONDITION_REQUIRED);
    assert_eq!(problem(&headers, &body)["code"], "precondition_required");

    let (status, headers, body) =
        send(&app, req("PATCH", "o1", &[("if-match", "\"1\"")], "5")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "5"));
    assert_eq!(headers["etag"], "\"2\"");

    let (status, headers, body) =
        send(&app, req("PATCH", "o1", &[("if-match", "\"1\"")], "9")).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(headers["etag"], "\"2\"");
    let p = problem(&headers, &body);
    assert_eq!(p["code"], "precondition_failed");
    assert_eq!(p["current_etag"], "\"2\"");
    assert_eq!(
        orders.get("o1").unwrap().0,
        5,
        "the stale write changed nothing"
    );

    let (status, headers, body) = send(&app, req("PATCH", "o1", &[("if-match", "2")], "9")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem(&headers, &body)["code"], "precondition_malformed");
}

#[tokio::test]
async fn create_only_put_creates_once() {
    let orders = Orders::new();
    let app = app(&orders);
    let (status, headers, _) = send(&app, req("PUT", "new", &[("if-none-match", "*")], "1")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["etag"], "\"1\"");
    let (status, headers, _) = send(&app, req("PUT", "new", &[("if-none-match", "*")], "2")).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(headers["etag"], "\"1\"");
    assert_eq!(orders.get("new").unwrap().0, 1);
}

/// 50 clients hold the same ETag and PATCH at once: exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_patches_with_one_etag_make_one_write() {
    let orders = Orders::new();
    orders
        .compare_and_set("o1".to_owned(), &Expected::Absent, 0)
        .unwrap();
    let app = app(&orders);
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let tasks: Vec<_> = (1..=50u32)
        .map(|q| {
            let (app, barrier) = (app.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let (status, _, _) = send(
                    &app,
                    req("PATCH", "o1", &[("if-match", "\"1\"")], &q.to_string()),
                )
                .await;
                (q, status)
            })
        })
        .collect();
    let mut won = Vec::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            (q, StatusCode::OK) => won.push(q),
            (_, StatusCode::PRECONDITION_FAILED) => refused += 1,
            (_, other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!((won.len(), refused), (1, 49));
    assert_eq!(orders.get("o1").unwrap(), (won[0], Version::number(2)));
}

/// Another write lands between the layer's check and the handler's write: the compare-and-set
/// refuses it with the same 412.
#[tokio::test]
async fn a_write_that_loses_the_race_after_the_check_gets_412() {
    let orders = Orders::new();
    orders
        .compare_and_set("o1".to_owned(), &Expected::Absent, 1)
        .unwrap();
    let sneaky = orders.clone();
    let source =
        orders.source(|parts| parts.uri.path().strip_prefix("/orders/").map(str::to_owned));
    let app = Router::new()
        .route(
            "/orders/{id}",
            get(|| async { "" }).patch(
                move |Path(id): Path<String>, Extension(expected): Extension<Expected>| async move {
                    // Someone else writes after the check passed…
                    sneaky
                        .compare_and_set(id.clone(), &Expected::Unconditional, 100)
                        .unwrap();
                    // …so ours must not.
                    match sneaky.compare_and_set(id, &expected, 7) {
                        Ok(_) => StatusCode::OK.into_response(),
                        Err(c) => c.into_response(),
                    }
                },
            ),
        )
        .layer(OptimisticLockLayer::new(source));
    let (status, headers, _) = send(&app, req("PATCH", "o1", &[("if-match", "\"1\"")], "")).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(headers["etag"], "\"2\"");
    assert_eq!(orders.get("o1").unwrap().0, 100);
}

/// A retried PATCH (same Idempotency-Key, same If-Match) gets the replayed 200 when the
/// idempotency layer is outside; inside-out it would get a 412 caused by its own success.
#[tokio::test]
async fn a_retried_patch_is_replayed_not_refused_by_its_own_success() {
    let orders = Orders::new();
    orders
        .compare_and_set("o1".to_owned(), &Expected::Absent, 1)
        .unwrap();
    let idempotent = app(&orders).layer(IdempotencyLayer::new(
        MemoryStore::new(),
        IdempotencyPolicy::default().methods([http::Method::POST, http::Method::PATCH]),
    ));
    let patch = || {
        req(
            "PATCH",
            "o1",
            &[("if-match", "\"1\""), ("idempotency-key", "k-1")],
            "4",
        )
    };
    let (first, h1, b1) = send(&idempotent, patch()).await;
    let (retry, h2, b2) = send(&idempotent, patch()).await;
    assert_eq!((first, retry), (StatusCode::OK, StatusCode::OK));
    assert_eq!((b1.as_str(), b2.as_str()), ("4", "4"));
    assert_eq!(h2["idempotent-replayed"], "true");
    assert_eq!(h1["etag"], h2["etag"]);
    assert_eq!(orders.get("o1").unwrap(), (4, Version::number(2)));

    // The same retry without the idempotency layer is refused: the replay is what saved it.
    let (bare, _, _) = send(&app(&orders), patch()).await;
    assert_eq!(bare, StatusCode::PRECONDITION_FAILED);
}

#[derive(Debug, Clone)]
enum Step {
    Get(usize),
    Patch(usize, u32),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        prop_oneof![
            (0..4usize).prop_map(Step::Get),
            (0..4usize, 1..1000u32).prop_map(|(c, q)| Step::Patch(c, q)),
        ],
        1..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// Clients GET (remembering the ETag) and PATCH with the ETag they saw, in any interleaving:
    /// a write is accepted exactly when it was based on the latest version, and the stored value
    /// is the last accepted write (no lost update, no stale write).
    #[test]
    fn interleaved_clients_never_lose_an_update(steps in steps()) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let orders = Orders::new();
            orders.compare_and_set("o".to_owned(), &Expected::Absent, 0).unwrap();
            let app = app(&orders);
            let mut seen: [Option<String>; 4] = Default::default();
            let (mut model_version, mut model_value) = (1u64, 0u32);
            for step in steps {
                match step {
                    Step::Get(c) => {
                        let (status, headers, body) = send(&app, req("GET", "o", &[], "")).await;
                        assert_eq!(status, StatusCode::OK);
                        assert_eq!(body, model_value.to_string());
                        seen[c] = Some(headers["etag"].to_str().unwrap().to_owned());
                    }
                    Step::Patch(c, q) => {
                        let Some(tag) = seen[c].clone() else { continue };
                        let (status, headers, _) =
                            send(&app, req("PATCH", "o", &[("if-match", &tag)], &q.to_string())).await;
                        let fresh = tag == format!("\"{model_version}\"");
                        if fresh {
                            assert_eq!(status, StatusCode::OK, "a write on the latest version is accepted");
                            model_version += 1;
                            model_value = q;
                            seen[c] = Some(headers["etag"].to_str().unwrap().to_owned());
                        } else {
                            assert_eq!(status, StatusCode::PRECONDITION_FAILED, "a stale write never succeeds");
                            assert_eq!(headers["etag"], format!("\"{model_version}\"").as_str());
                        }
                    }
                }
            }
            assert_eq!(orders.get("o").unwrap(), (model_value, Version::number(model_version)));
        });
    }
}

/// To a gRPC request (content-type `application/grpc`) the layer's rejections are trailers-only
/// gRPC statuses: 428 and 412 are FAILED_PRECONDITION (412 with the current ETag), a malformed
/// precondition INVALID_ARGUMENT; `Conflict::into_response_for` answers a lost race the same way.
#[tokio::test]
async fn grpc_requests_get_grpc_statuses() {
    use retry_safe_core::grpc::{status_of, Code};
    let orders = Orders::new();
    orders
        .compare_and_set("o1".to_owned(), &Expected::Absent, 2)
        .unwrap();
    let grpc = [("content-type", "application/grpc")];
    let required = OptimisticLockLayer::new(
        orders.source(|parts| parts.uri.path().strip_prefix("/orders/").map(str::to_owned)),
    )
    .require_precondition(true);
    let strict = Router::new()
        .route("/orders/{id}", get(read).put(write).patch(write))
        .with_state(orders.clone())
        .layer(required);
    let (status, headers, body) = send(&strict, req("PUT", "o1", &grpc, "3")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(status_of(&headers), Some(Code::FailedPrecondition));
    assert_eq!(headers["x-error-code"], "precondition_required");

    let app = app(&orders);
    let stale = [("content-type", "application/grpc"), ("if-match", "\"0\"")];
    let (_, headers, _) = send(&app, req("PUT", "o1", &stale, "3")).await;
    assert_eq!(status_of(&headers), Some(Code::FailedPrecondition));
    assert_eq!(headers["x-error-code"], "precondition_failed");
    assert_eq!(headers["etag"], "\"1\"");

    let malformed = [("content-type", "application/grpc"), ("if-match", "nope")];
    let (_, headers, _) = send(&app, req("PUT", "o1", &malformed, "3")).await;
    assert_eq!(status_of(&headers), Some(Code::InvalidArgument));

    // The same request over HTTP: 412 problem+json.
    let (status, headers, body) = send(&app, req("PUT", "o1", &[("if-match", "\"0\"")], "3")).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        problem(&headers, &body)["error_code"],
        "precondition_failed"
    );

    // A handler's lost compare-and-set, answered for the request's transport.
    let mut h = http::HeaderMap::new();
    h.insert("content-type", "application/grpc".parse().unwrap());
    let conflict = optimistic_lock::Conflict::new(Some(Version::number(7)));
    let res: http::Response<bytes::Bytes> = conflict.into_response_for(&h);
    assert_eq!(status_of(res.headers()), Some(Code::FailedPrecondition));
    assert_eq!(res.headers()["etag"], "\"7\"");
}

/// A version source that only answers through the awaited `current` (as a database does).
struct AwaitedOnly<V>(V);

#[async_trait::async_trait]
impl<V: optimistic_lock::VersionSource> optimistic_lock::VersionSource for AwaitedOnly<V> {
    async fn current(
        &self,
        parts: &http::request::Parts,
    ) -> Result<Option<optimistic_lock::Current>, optimistic_lock::BoxError> {
        self.0.current(parts).await
    }
}

fn order_id(parts: &http::request::Parts) -> Option<String> {
    parts
        .uri
        .path()
        .strip_prefix("/orders/")
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

#[tokio::test]
async fn a_version_read_in_place_answers_as_an_awaited_one() {
    let (in_place, awaited) = (Orders::new(), Orders::new());
    for orders in [&in_place, &awaited] {
        orders
            .compare_and_set("o1".to_owned(), &Expected::Absent, 2)
            .unwrap();
    }
    let router = |orders: &Orders| {
        Router::new()
            .route("/orders/{id}", get(read).put(write).patch(write))
            .with_state(orders.clone())
    };
    let a = router(&in_place).layer(OptimisticLockLayer::new(in_place.source(order_id)));
    let b = router(&awaited).layer(OptimisticLockLayer::new(AwaitedOnly(
        awaited.source(order_id),
    )));
    type Step<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let steps: [Step; 7] = [
        ("GET", "o1", &[], ""),
        ("GET", "o1", &[("if-none-match", "\"1\"")], ""),
        ("PATCH", "o1", &[], "3"),
        ("PATCH", "o1", &[("if-match", "\"0\"")], "3"),
        ("PATCH", "o1", &[("if-match", "W/")], "3"),
        ("PATCH", "o1", &[("if-match", "\"1\"")], "3"),
        ("GET", "o1", &[], ""),
    ];
    let mut statuses = Vec::new();
    for (method, id, headers, body) in steps {
        let (sa, ha, ba) = send(&a, req(method, id, headers, body)).await;
        let (sb, hb, bb) = send(&b, req(method, id, headers, body)).await;
        assert_eq!((sa, &ba), (sb, &bb), "{method} {headers:?}");
        for name in ["etag", "content-type", "retry-after"] {
            assert_eq!(ha.get(name), hb.get(name), "{method} {headers:?}: {name}");
        }
        statuses.push(sa.as_u16());
    }
    assert_eq!(statuses, [200, 304, 428, 412, 400, 200, 200]);
}
