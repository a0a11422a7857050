//! `GET /metrics` after the demo's scenarios: the counters of every layer moved.

use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// The sum of every series of `name` whose labels include all of `labels` (`k="v"` pairs).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && labels
                    .iter()
                    .all(|(k, val)| rest.contains(&format!("{k}=\"{val}\""))))
            .then(|| v.parse::<f64>().ok())?
        })
        .sum()
}

async fn scrape(router: &axum::Router) -> String {
    let res = router
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_moves_the_replay_429_shed_and_webhook_rejection_counters() {
    let router = examples::OrdersApi::in_memory().router();
    let before = scrape(&router).await;
    let series: [(&str, &[(&str, &str)]); 4] = [
        ("idempotency_requests_total", &[("outcome", "replayed")]),
        ("ratelimit_requests_total", &[("outcome", "limited")]),
        ("loadshed_requests_total", &[("outcome", "shed")]),
        ("webhook_verifications_total", &[("outcome", "rejected")]),
    ];
    for (name, labels) in series {
        assert_eq!(
            value(&before, name, labels),
            0.0,
            "{name} {labels:?} before the demo"
        );
    }

    let outcomes = examples::demo::run(|_, _, _| {}).await;
    assert!(outcomes.iter().all(|o| o.ok));

    let after = scrape(&router).await;
    for (name, labels) in series {
        let moved = value(&after, name, labels);
        assert!(moved >= 1.0, "{name} {labels:?} did not move:\n{after}");
    }
    // Requests that passed are counted too, with the quota that decided them.
    assert!(
        value(
            &after,
            "ratelimit_requests_total",
            &[("outcome", "allowed")]
        ) >= 1.0
    );
    assert!(
        value(
            &after,
            "idempotency_requests_total",
            &[("outcome", "executed")]
        ) >= 1.0
    );
    assert!(
        value(
            &after,
            "loadshed_requests_total",
            &[("outcome", "admitted"), ("class", "critical")]
        ) >= 1.0
    );
}
