//! The tower layer: shed requests get a 503 problem body; slots are held while handlers run.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use loadshed_fleet::ManualClock;
use loadshed_fleet::{Class, DefaultClassifier, PriorityShedLayer, Shares, Shedder};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::Notify;
use tower::{Layer, ServiceExt};

type Body = Full<Bytes>;

#[tokio::test]
async fn shed_requests_get_a_503_while_critical_ones_still_pass() {
    let shedder: Shedder<ManualClock> = Shedder::with_shares(2, Shares([50, 50, 50, 100])).unwrap();
    let layer = PriorityShedLayer::new(
        shedder,
        DefaultClassifier::new().critical(http::Method::POST, "/v1/payments/"),
    );
    let release = Arc::new(Notify::new());
    let handler = {
        let release = release.clone();
        tower::service_fn(move |req: Request<Body>| {
            let release = release.clone();
            async move {
                if req.uri().path() == "/slow" {
                    release.notified().await;
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        })
    };
    let svc = layer.layer(handler);
    let req = |m: &str, path: &str| {
        Request::builder()
            .method(m)
            .uri(path)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    // One slow write holds the only non-critical slot (50 % of 2).
    let slow = tokio::spawn(svc.clone().oneshot(req("POST", "/slow")));
    tokio::task::yield_now().await;
    assert_eq!(layer.shedder().snapshot().in_flight, 1);

    let res = svc.clone().oneshot(req("GET", "/v1/orders")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["code"], "overloaded");
    assert_eq!(body["class"], "read");
    assert_eq!(body["reason"], "capacity");

    let res = svc
        .clone()
        .oneshot(req("POST", "/v1/payments/pi_1/capture"))
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the reserved slot serves the critical request"
    );

    release.notify_one();
    assert_eq!(slow.await.unwrap().unwrap().status(), StatusCode::OK);
    let s = layer.shedder().snapshot();
    assert_eq!(s.in_flight, 0, "slots are released with the responses");
    assert_eq!(s.admitted[Class::Critical.index()], 1);
    assert_eq!(s.shed_capacity[Class::Read.index()], 1);
}
