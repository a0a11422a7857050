//! Retry storms: offered-load amplification (attempts ÷ logical requests) and success rate when a
//! server fails a share of its requests, for this crate's defaults (3 attempts, retry budget of
//! 20 % + 1/s) against a naive "3 retries" policy (4 attempts, no budget), in the same run.
//!
//! A seeded simulation on tokio's paused time: 10,000 logical requests at 1,000 per second through
//! the real `SafeRetryLayer` over a server that answers 503 with probability f, independently per
//! attempt. Run: `cargo xtask bench retries` (writes `docs/retry-amplification.svg` and prints the
//! table). Under `cargo test` it runs a smoke version and writes nothing.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use parking_lot::Mutex;
use retry_client::{Retrier, RetryBudget, RetryPolicy, SafeRetryLayer};
use std::sync::Arc;
use std::time::Duration;
use tower::{ServiceBuilder, ServiceExt};

const SEED: u64 = 0x5eed_2026;
const FAILURE_RATES: [f64; 7] = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0];

struct Row {
    amplification: f64,
    success: f64,
}

async fn simulate(retrier: Retrier, failure: f64, logical: usize) -> Row {
    let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(SEED)));
    let attempts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (r, a) = (rng.clone(), attempts.clone());
    let server = tower::service_fn(move |_req: Request<Full<Bytes>>| {
        a.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fail = r.lock().f64() < failure;
        async move {
            let status = if fail {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            Ok::<_, std::io::Error>(Response::builder().status(status).body(()).unwrap())
        }
    });
    let client = ServiceBuilder::new()
        .layer(SafeRetryLayer::new(retrier))
        .service(server);
    let mut tasks = Vec::with_capacity(logical);
    for _ in 0..logical {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let req = Request::get("/").body(Full::new(Bytes::new())).unwrap();
            matches!(client.oneshot(req).await, Ok(res) if res.status().is_success())
        }));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut ok = 0usize;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    Row {
        amplification: attempts.load(std::sync::atomic::Ordering::Relaxed) as f64 / logical as f64,
        success: ok as f64 / logical as f64,
    }
}

fn ours() -> Retrier {
    Retrier::new(RetryPolicy::default()).seed(SEED)
}

fn naive() -> Retrier {
    Retrier::new(RetryPolicy::default().max_attempts(4))
        .budget(None)
        .seed(SEED)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let logical = if full { 10_000 } else { 500 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for f in FAILURE_RATES {
        let (a, b) = rt.block_on(async {
            // A fresh budget per run: the budget's clock is tokio's, paused here.
            let a = simulate(ours().budget(Some(RetryBudget::default())), f, logical).await;
            let b = simulate(naive(), f, logical).await;
            (a, b)
        });
        rows.push((f, a, b));
    }
    println!("| server failure rate | retry-client: amplification | retry-client: success | naive 3 retries: amplification | naive: success |");
    println!("|---|---|---|---|---|");
    for (f, a, b) in &rows {
        println!(
            "| {:.0} % | {:.2}× | {:.2} % | {:.2}× | {:.2} % |",
            f * 100.0,
            a.amplification,
            a.success * 100.0,
            b.amplification,
            b.success * 100.0
        );
    }
    let at = |f: f64| rows.iter().find(|r| (r.0 - f).abs() < 1e-9).unwrap();
    let goals = [
        ("success at 10 % ≥ 99 %", at(0.1).1.success >= 0.99),
        (
            "amplification at 50 % ≤ 1.25×",
            at(0.5).1.amplification <= 1.25,
        ),
        (
            "amplification at 90 % ≤ 1.25×",
            at(0.9).1.amplification <= 1.25,
        ),
    ];
    for (goal, met) in goals {
        println!("goal {goal}: {}", if met { "met" } else { "MISSED" });
    }
    if full {
        plot(&rows);
        println!("wrote docs/retry-amplification.svg");
    }
}

fn plot(rows: &[(f64, Row, Row)]) {
    use plotters::prelude::*;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/retry-amplification.svg"
    );
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Offered load ÷ logical load vs server failure rate",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..100.0, 0.9..4.1)
        .unwrap();
    chart
        .configure_mesh()
        .x_desc("server failure rate (%)")
        .y_desc("attempts per logical request")
        .draw()
        .unwrap();
    let ours: Vec<_> = rows
        .iter()
        .map(|(f, a, _)| (f * 100.0, a.amplification))
        .collect();
    let naive: Vec<_> = rows
        .iter()
        .map(|(f, _, b)| (f * 100.0, b.amplification))
        .collect();
    chart
        .draw_series(LineSeries::new(ours.clone(), &BLUE))
        .unwrap()
        .label("retry-client (budget 20 % + 1/s, 3 attempts)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(ours.iter().map(|p| Circle::new(*p, 3, BLUE.filled())))
        .unwrap();
    chart
        .draw_series(LineSeries::new(naive.clone(), &RED))
        .unwrap()
        .label("naive: 3 retries, no budget")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .draw_series(naive.iter().map(|p| Circle::new(*p, 3, RED.filled())))
        .unwrap();
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .unwrap();
    root.present().unwrap();
}
