//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process answers),
//! `/readyz` (its stores answer too).

use crate::stack::Runtime;
use crate::Body;
use arc_swap::ArcSwap;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::PrometheusHandle;
use retry_safe_core::Problem;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

pub(crate) async fn serve(
    listener: TcpListener,
    current: Arc<ArcSwap<Runtime>>,
    prometheus: PrometheusHandle,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        let (current, prometheus) = (current.clone(), prometheus.clone());
        let answers = tower::service_fn(move |req: Request<Body>| {
            let (current, prometheus) = (current.clone(), prometheus.clone());
            async move {
                Ok::<_, std::convert::Infallible>(
                    answer(req.uri().path(), &current.load_full(), &prometheus).await,
                )
            }
        });
        // The admin's refusals (`/readyz` not ready, no such path) carry the envelope too.
        let traced = tower::Layer::layer(&trace_ctx::TraceContextLayer::new(), answers)
            .map_request(|req: Request<hyper::body::Incoming>| req.map(Body::new));
        let service = hyper_util::service::TowerToHyperService::new(traced);
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(path: &str, rt: &Runtime, prometheus: &PrometheusHandle) -> Response<Body> {
    match path {
        "/metrics" => {
            let mut res = Response::new(Body::from(prometheus.render()));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            res
        }
        "/healthz" => json(r#"{"status":"ok"}"#),
        "/readyz" => match ready(rt).await {
            Ok(()) => json(r#"{"status":"ready"}"#),
            Err(why) => crate::server::unavailable(why),
        },
        _ => Problem::new(StatusCode::NOT_FOUND, "route_not_found", "No route")
            .with_detail("the admin listener serves /metrics, /healthz and /readyz")
            .into_response(),
    }
}

fn json(text: &'static str) -> Response<Body> {
    let mut res = Response::new(Body::from(text));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Whether every store of the running config answers within a second.
async fn ready(rt: &Runtime) -> Result<(), String> {
    let limit = Duration::from_secs(1);
    if let Some(redis) = &rt.backends.redis {
        let cmd = redis::cmd("PING");
        match tokio::time::timeout(limit, redis.query::<String>(&cmd)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("redis: {e}")),
            Err(_) => return Err("redis: no answer within 1s".into()),
        }
    }
    if let Some(pool) = &rt.backends.postgres {
        match tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(pool)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("postgres: {e}")),
            Err(_) => return Err("postgres: no answer within 1s".into()),
        }
    }
    Ok(())
}
