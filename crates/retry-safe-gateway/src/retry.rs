//! The innermost service of a route: its upstream, with retries of safe failures when the route
//! asks for them (retry-client's engine and budget), every failure answered as a problem.

use crate::proxy::{Upstream, UpstreamError};
use crate::stack::RouteService;
use http::StatusCode;
use retry_client::{Retrier, RetryBudget, RetryError, RetryPolicy, SafeRetryLayer};
use retry_safe_core::Problem;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tower::{Layer, ServiceExt};

/// `upstream` as a route's innermost service; with `retry`, its connect errors (and, for safe
/// methods and keyed requests only, its timeouts and 5xx) are retried within the budget.
pub(crate) fn upstream_service(
    upstream: Upstream,
    retry: Option<&crate::config::Retry>,
    timeout: Duration,
) -> RouteService {
    let name: Arc<str> = upstream.name.clone();
    match retry.filter(|r| r.attempts > 1) {
        None => answered(upstream, move |e: UpstreamError| e.problem(&name)),
        Some(r) => {
            let policy = RetryPolicy::default()
                .max_attempts(r.attempts)
                .attempt_timeout(timeout)
                .generate_keys(None);
            let budget = RetryBudget::new(
                Duration::from_secs(10),
                r.budget_min_per_sec,
                r.budget_ratio,
            );
            let retrier = Retrier::new(policy).budget(Some(budget));
            let svc = SafeRetryLayer::new(retrier).layer(upstream.untimed());
            answered(svc, move |e| retry_problem(e, &name, timeout))
        }
    }
}

/// `svc` with its errors answered as `problem` says.
fn answered<S, E>(svc: S, problem: impl Fn(E) -> Problem + Send + Sync + 'static) -> RouteService
where
    S: tower_service::Service<
            http::Request<crate::Body>,
            Response = http::Response<crate::Body>,
            Error = E,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    E: Send + 'static,
{
    let problem = Arc::new(problem);
    RouteService::new(move |req| {
        let (problem, call) = (problem.clone(), svc.clone().oneshot(req));
        Box::pin(async move {
            Ok::<_, Infallible>(call.await.unwrap_or_else(|e| problem(e).into_response()))
        })
    })
}

/// The answer when every attempt failed.
fn retry_problem(e: RetryError<UpstreamError>, upstream: &str, timeout: Duration) -> Problem {
    match e {
        RetryError::Failed { source, .. } => source.problem(upstream),
        RetryError::TimedOut { .. } | RetryError::Deadline { .. } => {
            UpstreamError::Timeout(timeout).problem(upstream)
        }
        RetryError::BodyUnreadable { .. } => Problem::new(
            StatusCode::BAD_REQUEST,
            "request_unreadable",
            "Request body unreadable",
        ),
        _ => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_unavailable",
            "Upstream unavailable",
        )
        .with_detail(format!(
            "the upstream `{upstream}` failed and the retry budget is spent"
        ))
        .with_retry_after(Duration::from_secs(1)),
    }
}
