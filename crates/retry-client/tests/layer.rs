//! The tower layer on tokio's paused time: what is retried, what never is, keys, server hints,
//! the deadline, the budget, and bodies that cannot be resent.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use parking_lot::Mutex;
use retry_client::{
    History, KeyFormat, Retrier, RetryBudget, RetryError, RetryPolicy, SafeRetryLayer, Stop,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

type Body = Full<Bytes>;

/// What the fake server does for each attempt, in order; records what it received.
#[derive(Clone)]
enum Script {
    Status(u16, Vec<(&'static str, String)>),
    Refused,
    Reset,
    Hang,
}

/// (method, Idempotency-Key, body) of one received attempt.
type Seen = (http::Method, Option<String>, Bytes);

#[derive(Clone, Default)]
struct Server {
    script: Arc<Mutex<VecDeque<Script>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn new(script: impl IntoIterator<Item = Script>) -> Self {
        Self {
            script: Arc::new(Mutex::new(script.into_iter().collect())),
            seen: Arc::default(),
        }
    }
    fn calls(&self) -> usize {
        self.seen.lock().len()
    }
    fn keys(&self) -> Vec<Option<String>> {
        self.seen.lock().iter().map(|s| s.1.clone()).collect()
    }
}

impl Service<Request<Body>> for Server {
    type Response = Response<Body>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Body>, std::io::Error>> + Send>,
    >;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let step = self
            .script
            .lock()
            .pop_front()
            .unwrap_or(Script::Status(200, vec![]));
        let seen = self.seen.clone();
        Box::pin(async move {
            let key = req
                .headers()
                .get("idempotency-key")
                .map(|v| v.to_str().unwrap().to_owned());
            let method = req.method().clone();
            let body = http_body_util::BodyExt::collect(req.into_body())
                .await
                .unwrap()
                .to_bytes();
            seen.lock().push((method, key, body));
            match step {
                Script::Status(s, headers) => {
                    let mut res = Response::builder().status(s);
                    for (k, v) in headers {
                        res = res.header(k, v);
                    }
                    Ok(res.body(Full::new(Bytes::new())).unwrap())
                }
                Script::Refused => Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
                Script::Reset => Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
                Script::Hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    unreachable!()
                }
            }
        })
    }
}

fn st(code: u16) -> Script {
    Script::Status(code, vec![])
}

fn client(
    server: &Server,
    policy: RetryPolicy,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = RetryError<std::io::Error>> + Clone
{
    ServiceBuilder::new()
        .layer(SafeRetryLayer::new(
            Retrier::new(policy).budget(None).seed(7),
        ))
        .service(server.clone())
}

fn post(body: &'static str) -> Request<Body> {
    Request::post("http://api/orders")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

fn get() -> Request<Body> {
    Request::get("http://api/orders")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn one_generated_key_is_sent_on_every_attempt_with_the_same_body() {
    let server = Server::new([st(503), Script::Reset, st(201)]);
    let res = client(&server, RetryPolicy::default().max_attempts(5))
        .oneshot(post("{\"sku\":\"tea\"}"))
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let keys = server.keys();
    assert_eq!(keys.len(), 3);
    assert!(keys[0].is_some());
    assert!(keys.iter().all(|k| k == &keys[0]), "{keys:?}");
    assert!(server
        .seen
        .lock()
        .iter()
        .all(|s| s.2 == "{\"sku\":\"tea\"}"));
    let history = res.extensions().get::<History>().unwrap();
    assert_eq!(history.idempotency_key, keys[0]);
    let outcomes: Vec<_> = history
        .attempts
        .iter()
        .map(|a| a.outcome.to_string())
        .collect();
    assert_eq!(outcomes, ["status_503", "maybe_sent", "status_201"]);
    assert_eq!(history.stop, Some(Stop::Done));
}

#[tokio::test(start_paused = true)]
async fn a_key_set_by_the_caller_is_kept_and_idempotent_methods_get_none() {
    let server = Server::new([st(503), st(200)]);
    let mut req = post("x");
    req.headers_mut()
        .insert("idempotency-key", "mine-1".parse().unwrap());
    client(&server, RetryPolicy::default())
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(
        server.keys(),
        [Some("mine-1".to_owned()), Some("mine-1".to_owned())]
    );

    let server = Server::new([st(503), st(200)]);
    client(&server, RetryPolicy::default())
        .oneshot(get())
        .await
        .unwrap();
    assert_eq!(server.keys(), [None, None]);

    let server = Server::new([st(200)]);
    let policy = RetryPolicy::default().generate_keys(Some(KeyFormat::SfStringUuidV4));
    client(&server, policy).oneshot(post("x")).await.unwrap();
    let key = server.keys()[0].clone().unwrap();
    assert!(
        key.starts_with('"') && key.ends_with('"') && key.len() == 38,
        "{key}"
    );
}

#[tokio::test(start_paused = true)]
async fn statuses_the_client_must_fix_are_never_retried() {
    for code in [400, 401, 403, 404, 412, 413, 422] {
        let server = Server::new([st(code), st(201)]);
        let res = client(&server, RetryPolicy::default().max_attempts(5))
            .oneshot(post("x"))
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), code);
        assert_eq!(server.calls(), 1, "{code} must not be retried");
    }
    // A 2xx replay is success as any 2xx.
    let server = Server::new([Script::Status(
        201,
        vec![("idempotent-replayed", "true".into())],
    )]);
    let res = client(&server, RetryPolicy::default())
        .oneshot(post("x"))
        .await
        .unwrap();
    assert_eq!((res.status().as_u16(), server.calls()), (201, 1));
}

#[tokio::test(start_paused = true)]
async fn an_unkeyed_post_is_resent_only_when_it_never_left() {
    let no_keys = || RetryPolicy::default().generate_keys(None).max_attempts(4);
    // Written, then the connection broke: the server may have acted. Not resent.
    let server = Server::new([Script::Reset, st(201)]);
    let err = client(&server, no_keys())
        .oneshot(post("x"))
        .await
        .unwrap_err();
    assert!(matches!(err, RetryError::Failed { .. }));
    assert_eq!(err.history().stop, Some(Stop::NotSafe));
    assert_eq!(server.calls(), 1);
    // A 500 or 502 may hide an effect too.
    for code in [500, 502, 504] {
        let server = Server::new([st(code), st(201)]);
        let res = client(&server, no_keys()).oneshot(post("x")).await.unwrap();
        assert_eq!((res.status().as_u16(), server.calls()), (code, 1));
    }
    // Never connected: safe to resend.
    let server = Server::new([Script::Refused, st(201)]);
    let res = client(&server, no_keys()).oneshot(post("x")).await.unwrap();
    assert_eq!((res.status().as_u16(), server.calls()), (201, 2));
    // 429 and 503 were refused before any work: safe to resend.
    let server = Server::new([st(429), st(503), st(201)]);
    let res = client(&server, no_keys()).oneshot(post("x")).await.unwrap();
    assert_eq!((res.status().as_u16(), server.calls()), (201, 3));
    // With the generated key the broken write is resent.
    let server = Server::new([Script::Reset, st(201)]);
    let res = client(&server, RetryPolicy::default())
        .oneshot(post("x"))
        .await
        .unwrap();
    assert_eq!((res.status().as_u16(), server.calls()), (201, 2));
}

#[tokio::test(start_paused = true)]
async fn retry_after_and_ratelimit_are_honoured_exactly() {
    // delta-seconds
    let server = Server::new([
        Script::Status(503, vec![("retry-after", "7".into())]),
        st(200),
    ]);
    let t0 = Instant::now();
    client(&server, RetryPolicy::default())
        .oneshot(get())
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(7));

    // HTTP-date, against the retrier's wall clock.
    let clock = retry_safe_core::ManualClock::at_unix_secs(1_700_000_000);
    let date = httpdate_of(1_700_000_012);
    let server = Server::new([Script::Status(429, vec![("retry-after", date)]), st(200)]);
    let svc = ServiceBuilder::new()
        .layer(SafeRetryLayer::new(
            Retrier::new(RetryPolicy::default())
                .budget(None)
                .clock(clock),
        ))
        .service(server.clone());
    let t0 = Instant::now();
    svc.oneshot(get()).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(12));

    // RateLimit t= of the exhausted quota.
    let server = Server::new([
        Script::Status(
            429,
            vec![(
                "ratelimit",
                "\"burst\";r=0;t=4, \"daily\";r=900;t=40000".into(),
            )],
        ),
        st(200),
    ]);
    let t0 = Instant::now();
    client(&server, RetryPolicy::default())
        .oneshot(get())
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(4));

    // A hint longer than the client accepts ends the call with the last answer.
    let server = Server::new([
        Script::Status(503, vec![("retry-after", "3600".into())]),
        st(200),
    ]);
    let res = client(&server, RetryPolicy::default().deadline(None))
        .oneshot(get())
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.extensions().get::<History>().unwrap().stop,
        Some(Stop::HintTooLong)
    );
}

fn httpdate_of(secs: u64) -> String {
    // Written by hand, so the test does not depend on the parser under test.
    assert_eq!(secs, 1_700_000_012);
    "Tue, 14 Nov 2023 22:13:32 GMT".to_owned()
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_the_deadline_ends_the_call_at_once_with_the_last_answer() {
    let server = Server::new([
        Script::Status(503, vec![("retry-after", "5".into())]),
        st(200),
    ]);
    let t0 = Instant::now();
    let res = client(
        &server,
        RetryPolicy::default().deadline(Duration::from_secs(3)),
    )
    .oneshot(get())
    .await
    .unwrap();
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "no time spent waiting for nothing"
    );
    // The caller gets the server's own answer and hint, not an opaque error.
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "5");
    let history = res.extensions().get::<History>().unwrap();
    assert_eq!(history.stop, Some(Stop::Deadline));
    assert_eq!(history.len(), 1);
    assert_eq!(server.calls(), 1);

    // A hanging attempt is cut by the attempt timeout, and the deadline bounds the whole call.
    let server = Server::new([Script::Hang, Script::Hang, Script::Hang, Script::Hang]);
    let t0 = Instant::now();
    let policy = RetryPolicy::default()
        .max_attempts(10)
        .attempt_timeout(Duration::from_secs(2))
        .deadline(Duration::from_secs(5))
        .backoff(Duration::from_millis(10), Duration::from_millis(10));
    let err = client(&server, policy).oneshot(get()).await.unwrap_err();
    assert!(t0.elapsed() <= Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(
        matches!(
            err,
            RetryError::TimedOut { .. } | RetryError::Deadline { .. }
        ),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_is_full_jitter_under_the_exponential_ceiling() {
    let server = Server::new([st(503), st(503), st(503), st(503), st(200)]);
    let policy = RetryPolicy::default()
        .max_attempts(5)
        .backoff(Duration::from_millis(100), Duration::from_millis(250));
    let res = client(&server, policy).oneshot(get()).await.unwrap();
    let h = res.extensions().get::<History>().unwrap();
    let ceilings = [100, 200, 250, 250];
    for (a, ceiling) in h.attempts[1..].iter().zip(ceilings) {
        assert!(
            a.waited <= Duration::from_millis(ceiling),
            "{:?} > {ceiling} ms",
            a.waited
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_shared_budget_stops_retries_when_everything_fails() {
    let server = Server::new(std::iter::repeat_n(st(503), 10_000));
    let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.2);
    let retrier = Retrier::new(RetryPolicy::default().max_attempts(5)).budget(Some(budget));
    let svc = ServiceBuilder::new()
        .layer(SafeRetryLayer::new(retrier))
        .service(server.clone());
    for _ in 0..100 {
        svc.clone().oneshot(get()).await.unwrap();
    }
    let amplification = server.calls() as f64 / 100.0;
    assert!(
        amplification <= 1.25,
        "offered load amplified {amplification}×"
    );
}

#[tokio::test(start_paused = true)]
async fn a_streaming_or_large_body_is_sent_once() {
    let server = Server::new([st(503), st(201)]);
    let svc = ServiceBuilder::new()
        .layer(SafeRetryLayer::new(
            Retrier::new(RetryPolicy::default().max_body(4)).budget(None),
        ))
        .service(server.clone());
    let res = svc.oneshot(post("too long for the cap")).await.unwrap();
    assert_eq!((res.status().as_u16(), server.calls()), (503, 1));
    assert_eq!(
        res.extensions().get::<History>().unwrap().stop,
        Some(Stop::BodyNotReplayable)
    );

    // A streaming body (no exact size): axum's body from a stream.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let server = tower::service_fn(move |_req: Request<axum::body::Body>| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { Ok::<_, std::io::Error>(Response::builder().status(503).body(()).unwrap()) }
    });
    let svc = ServiceBuilder::new()
        .layer(SafeRetryLayer::new(
            Retrier::new(RetryPolicy::default()).budget(None),
        ))
        .service(server);
    let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from("a"))]);
    let req = Request::post("/upload")
        .body(axum::body::Body::from_stream(chunks))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(
        res.extensions().get::<History>().unwrap().stop,
        Some(Stop::BodyNotReplayable)
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}
