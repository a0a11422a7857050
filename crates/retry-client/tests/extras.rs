//! Adaptive throttling, and a new span per attempt (feature `trace-ctx`).

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use retry_client::{AdaptiveThrottle, Retrier, RetryError, RetryPolicy, SafeRetryLayer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::{ServiceBuilder, ServiceExt};

/// A backend that refuses everything: the throttle soon rejects most requests locally, so the
/// backend sees about k × its accepts (here: almost nothing) instead of every request.
#[tokio::test(start_paused = true)]
async fn adaptive_throttling_stops_sending_to_a_backend_that_refuses_everything() {
    let sent = Arc::new(AtomicUsize::new(0));
    let seen = sent.clone();
    let server = tower::service_fn(move |_req: Request<Full<Bytes>>| {
        seen.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, std::io::Error>(Response::builder().status(503).body(()).unwrap()) }
    });
    let throttle = AdaptiveThrottle::new(2.0, Duration::from_secs(120))
        .with_clock(retry_safe_core::TokioClock::new(), 3);
    let retrier = Retrier::new(RetryPolicy::default().max_attempts(1))
        .budget(None)
        .throttle(throttle.clone());
    let client = ServiceBuilder::new()
        .layer(SafeRetryLayer::new(retrier))
        .service(server);
    let mut throttled = 0;
    for _ in 0..1_000 {
        let req = Request::get("/").body(Full::new(Bytes::new())).unwrap();
        if let Err(RetryError::Throttled { .. }) = client.clone().oneshot(req).await {
            throttled += 1;
        }
    }
    let sent = sent.load(Ordering::SeqCst);
    assert_eq!(sent + throttled, 1_000);
    assert!(sent < 100, "the backend still got {sent} of 1000 requests");
    assert!(throttle.rejection_probability() > 0.9);

    // Accepted traffic brings the probability back to zero.
    let healthy = AdaptiveThrottle::new(2.0, Duration::from_secs(120));
    for _ in 0..100 {
        assert!(healthy.admit());
        healthy.accepted();
    }
    assert_eq!(healthy.rejection_probability(), 0.0);
}

#[cfg(feature = "trace-ctx")]
#[tokio::test(start_paused = true)]
async fn every_attempt_is_a_new_child_span_of_the_same_trace() {
    use parking_lot::Mutex;
    let parents = Arc::new(Mutex::new(Vec::new()));
    let seen = parents.clone();
    let server = tower::service_fn(move |req: Request<Full<Bytes>>| {
        let tp = req.headers()["traceparent"].to_str().unwrap().to_owned();
        let n = {
            let mut p = seen.lock();
            p.push(tp);
            p.len()
        };
        async move {
            let status = if n < 3 { 503 } else { 200 };
            Ok::<_, std::io::Error>(Response::builder().status(status).body(()).unwrap())
        }
    });
    let client = ServiceBuilder::new()
        .layer(SafeRetryLayer::new(
            Retrier::new(RetryPolicy::default()).budget(None),
        ))
        .service(server);
    let ctx = trace_ctx::TraceContext::new_root();
    let mut req = Request::get("/").body(Full::new(Bytes::new())).unwrap();
    req.extensions_mut().insert(ctx.clone());
    client.oneshot(req).await.unwrap();
    let parents = parents.lock().clone();
    assert_eq!(parents.len(), 3);
    let trace = ctx.trace_id().to_string();
    assert!(parents.iter().all(|tp| tp.contains(&trace)), "{parents:?}");
    let spans: std::collections::HashSet<_> = parents.iter().map(|tp| &tp[36..52]).collect();
    assert_eq!(spans.len(), 3, "one new span id per attempt: {parents:?}");
}
