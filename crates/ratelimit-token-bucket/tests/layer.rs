//! The tower layer: headers, 429 problem bodies, weighted and unkeyed requests.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use ratelimit_token_bucket::{KeyedLimiter, KeyedRateLimitLayer, ManualClock, Quota, Quotas};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::{Layer, Service, ServiceExt};

type Body = Full<Bytes>;

fn handler(
    runs: Arc<AtomicUsize>,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone
{
    tower::service_fn(move |_req: Request<Body>| {
        let runs = runs.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    })
}

fn request(user: Option<&str>, cost: Option<u32>) -> Request<Body> {
    let mut b = Request::post("/v1/orders");
    if let Some(user) = user {
        b = b.header("x-user", user);
    }
    if let Some(cost) = cost {
        b = b.header("x-cost", cost);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

fn user_key(parts: &http::request::Parts) -> Option<String> {
    parts
        .headers
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn header<'a>(res: &'a Response<Body>, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

async fn json(res: Response<Body>) -> serde_json::Value {
    serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

#[tokio::test]
async fn allowed_responses_carry_the_ratelimit_headers_and_the_excess_gets_a_429() {
    let clock = ManualClock::at(Duration::from_secs(50));
    let limiter = KeyedLimiter::with_clock(
        Quotas::new([Quota::per_second(2).burst(3).named("api")]).unwrap(),
        clock.clone(),
    );
    let layer = KeyedRateLimitLayer::new(limiter, user_key);
    let runs = Arc::new(AtomicUsize::new(0));
    let mut svc = layer.layer(handler(runs.clone()));

    for (remaining, reset) in [(2, 1), (1, 1), (0, 2)] {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(request(Some("ann"), None))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "ratelimit-policy"), Some("\"api\";q=3;w=2"));
        let expected = format!("\"api\";r={remaining};t={reset}");
        assert_eq!(header(&res, "ratelimit"), Some(expected.as_str()));
    }

    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request(Some("ann"), None))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after"), Some("1")); // 500 ms, rounded up
    assert_eq!(header(&res, "ratelimit"), Some("\"api\";r=0;t=2"));
    assert_eq!(header(&res, "ratelimit-policy"), Some("\"api\";q=3;w=2"));
    assert_eq!(
        header(&res, "content-type"),
        Some("application/problem+json")
    );
    let body = json(res).await;
    assert_eq!(body["status"], 429);
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(body["type"], "urn:problem-type:rate_limited");
    assert_eq!(body["retry_after_ms"], 500);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "the limited request never ran"
    );

    // Another user has their own bucket; and after the wait, ann passes again.
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request(Some("bo"), None))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    clock.advance(Duration::from_millis(500));
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request(Some("ann"), None))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let m = layer.metrics();
    assert_eq!((m.allowed, m.limited), (5, 1));
}

#[tokio::test]
async fn requests_without_a_key_are_not_limited() {
    let limiter = KeyedLimiter::with_clock(
        Quotas::new([Quota::per_hour(1)]).unwrap(),
        ManualClock::new(),
    );
    let runs = Arc::new(AtomicUsize::new(0));
    let layer = KeyedRateLimitLayer::new(limiter, user_key);
    let svc = layer.layer(handler(runs.clone()));
    for _ in 0..5 {
        let res = svc.clone().oneshot(request(None, None)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get("ratelimit").is_none());
    }
    assert_eq!(runs.load(Ordering::SeqCst), 5);
    assert_eq!(layer.metrics().unkeyed, 5);
}

#[tokio::test]
async fn weighted_requests_spend_their_cost_and_impossible_costs_get_a_400() {
    let limiter = KeyedLimiter::with_clock(
        Quotas::new([Quota::per_minute(10)]).unwrap(),
        ManualClock::new(),
    );
    let runs = Arc::new(AtomicUsize::new(0));
    let layer = KeyedRateLimitLayer::new(limiter, user_key).cost(|parts| {
        parts
            .headers
            .get("x-cost")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(1)
    });
    let svc = layer.layer(handler(runs.clone()));

    let res = svc
        .clone()
        .oneshot(request(Some("u"), Some(7)))
        .await
        .unwrap();
    assert_eq!(header(&res, "ratelimit"), Some("\"default\";r=3;t=42"));
    let res = svc
        .clone()
        .oneshot(request(Some("u"), Some(4)))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "retry-after"), Some("6"));

    let res = svc
        .clone()
        .oneshot(request(Some("u"), Some(11)))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body = json(res).await;
    assert_eq!(body["code"], "rate_limit_cost_exceeds_burst");
    assert!(body["detail"].as_str().unwrap().contains("11"), "{body}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(layer.metrics().rejected, 1);
}

/// An inner service that counts its clones: a layer that decides in place must call the clone
/// `poll_ready` made ready, never clone it.
struct CountsClones(Arc<AtomicUsize>);

impl Clone for CountsClones {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, Ordering::SeqCst);
        Self(self.0.clone())
    }
}

impl Service<Request<Body>> for CountsClones {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<Body>) -> Self::Future {
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
    }
}

/// A limiter that only answers through the awaited `check` (as a network backend does).
struct AwaitedOnly(KeyedLimiter<String, ManualClock>);

#[async_trait::async_trait]
impl ratelimit_token_bucket::Limiter<String> for AwaitedOnly {
    async fn check(
        &self,
        key: &String,
        cost: u32,
    ) -> Result<ratelimit_token_bucket::Decision, ratelimit_token_bucket::Error> {
        Ok(self.0.check(key, cost)?)
    }

    fn quotas(&self) -> &Quotas {
        self.0.quotas()
    }
}

#[tokio::test]
async fn an_in_memory_decision_neither_clones_the_inner_service_nor_changes_the_answers() {
    let quotas = || Quotas::new([Quota::per_second(1).burst(1).named("api")]).unwrap();
    let clock = ManualClock::at(Duration::from_secs(50));
    let in_memory = KeyedLimiter::with_clock(quotas(), clock.clone());
    let awaited = AwaitedOnly(KeyedLimiter::with_clock(quotas(), clock.clone()));

    let clones = Arc::new(AtomicUsize::new(0));
    let mut svc = KeyedRateLimitLayer::new(in_memory, user_key).layer(CountsClones(clones.clone()));
    let first = svc
        .ready()
        .await
        .unwrap()
        .call(request(Some("u1"), None))
        .await
        .unwrap();
    let second = svc
        .ready()
        .await
        .unwrap()
        .call(request(Some("u1"), None))
        .await
        .unwrap();
    let unkeyed = svc
        .ready()
        .await
        .unwrap()
        .call(request(None, None))
        .await
        .unwrap();
    assert_eq!(
        clones.load(Ordering::SeqCst),
        0,
        "decided in place: no clone of the inner service"
    );

    let awaited_clones = Arc::new(AtomicUsize::new(0));
    let mut awaited_svc =
        KeyedRateLimitLayer::new(awaited, user_key).layer(CountsClones(awaited_clones.clone()));
    let a_first = awaited_svc
        .ready()
        .await
        .unwrap()
        .call(request(Some("u1"), None))
        .await
        .unwrap();
    let a_second = awaited_svc
        .ready()
        .await
        .unwrap()
        .call(request(Some("u1"), None))
        .await
        .unwrap();
    assert_eq!(
        awaited_clones.load(Ordering::SeqCst),
        2,
        "an awaited decision takes the ready clone"
    );

    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(unkeyed.status(), StatusCode::OK);
    assert_eq!(
        header(&unkeyed, "ratelimit"),
        None,
        "an unkeyed request is not limited"
    );
    for (a, b) in [(&first, &a_first), (&second, &a_second)] {
        assert_eq!(a.status(), b.status());
        for name in [
            "ratelimit",
            "ratelimit-policy",
            "retry-after",
            "content-type",
        ] {
            assert_eq!(header(a, name), header(b, name), "{name}");
        }
    }
    assert_eq!(header(&first, "ratelimit"), Some("\"api\";r=0;t=1"));
}
