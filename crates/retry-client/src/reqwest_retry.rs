//! The `reqwest-middleware` integration (feature `reqwest`).

use crate::engine::{classify_error, History, Retrier, RetryError, Sent};
use crate::policy::Failure;
use http::Extensions;
use reqwest_middleware::{Middleware, Next};

/// The retry middleware for a `reqwest_middleware::ClientWithMiddleware`: the same rules as
/// `SafeRetryLayer` (feature `tower`). The response carries the [`History`] in its extensions; a
/// request that ends without a response is a `reqwest_middleware::Error::Middleware` wrapping a
/// [`RetryError`].
///
/// ```no_run
/// use retry_client::{Retrier, RetryMiddleware, RetryPolicy};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(RetryMiddleware::new(Retrier::new(RetryPolicy::default())))
///     .build();
/// let res = client.post("http://127.0.0.1:3000/orders").body("{\"sku\":\"tea\",\"quantity\":1}").send().await?;
/// # let _ = res; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RetryMiddleware {
    retrier: Retrier,
}

impl RetryMiddleware {
    /// A middleware retrying with `retrier`.
    pub fn new(retrier: Retrier) -> Self {
        Self { retrier }
    }
}

fn failure(e: &reqwest_middleware::Error) -> Failure {
    match e {
        reqwest_middleware::Error::Reqwest(e) if e.is_connect() => Failure::NotSent,
        reqwest_middleware::Error::Reqwest(e) if e.is_builder() => Failure::Fatal,
        reqwest_middleware::Error::Reqwest(e) => classify_error(e),
        reqwest_middleware::Error::Middleware(_) => Failure::Fatal,
    }
}

#[async_trait::async_trait]
impl Middleware for RetryMiddleware {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let method = req.method().clone();
        let history = History {
            idempotency_key: self.retrier.key_request(&method, req.headers_mut()),
            ..History::default()
        };
        let keyed = history.idempotency_key.is_some();
        let replayable = req.try_clone().is_some()
            && req
                .body()
                .and_then(|b| b.as_bytes())
                .is_none_or(|b| b.len() <= self.retrier.policy.max_body);
        let mut once = Some(req);
        let template = once.as_ref().and_then(reqwest::Request::try_clone);
        let extensions: &mut Extensions = extensions;
        let ext = std::sync::Arc::new(parking_lot::Mutex::new(std::mem::take(extensions)));
        let result = self
            .retrier
            .run(
                &method,
                keyed,
                replayable,
                history,
                |r: &reqwest::Response| (r.status(), r.headers()),
                |_n, timeout| {
                    let req = match (once.take(), &template) {
                        (Some(r), _) => Some(r),
                        (None, Some(t)) => t.try_clone(),
                        (None, None) => None,
                    };
                    attempt(next.clone(), req, ext.clone(), timeout)
                },
            )
            .await;
        *extensions = std::mem::take(&mut *ext.lock());
        match result {
            Ok((mut res, history)) => {
                res.extensions_mut().insert(history);
                Ok(res)
            }
            Err(RetryError::Failed { source, .. }) => Err(source),
            Err(e) => Err(reqwest_middleware::Error::middleware(
                ErasedRetryError::from(e),
            )),
        }
    }
}

/// One attempt through the rest of the middleware chain, with the extensions of the logical
/// request and `timeout`; `req` is `None` when the request could not be cloned for it.
async fn attempt(
    next: Next<'_>,
    req: Option<reqwest::Request>,
    ext: std::sync::Arc<parking_lot::Mutex<Extensions>>,
    timeout: Option<std::time::Duration>,
) -> Sent<reqwest::Response, reqwest_middleware::Error> {
    let Some(mut req) = req else {
        return Sent::Error(
            reqwest_middleware::Error::middleware(std::io::Error::other(
                "the request could not be cloned for another attempt",
            )),
            Failure::Fatal,
        );
    };
    if let Some(t) = timeout {
        *req.timeout_mut() = Some(t);
    }
    let mut local = ext.lock().clone();
    match next.run(req, &mut local).await {
        Ok(res) => Sent::Response(res),
        Err(reqwest_middleware::Error::Reqwest(e)) if e.is_timeout() => Sent::TimedOut,
        Err(e) => {
            let f = failure(&e);
            Sent::Error(e, f)
        }
    }
}

/// A [`RetryError`] without its transport error type, as `reqwest-middleware` wants errors.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ErasedRetryError {
    message: String,
    /// The attempts.
    pub history: History,
}

impl From<RetryError<reqwest_middleware::Error>> for ErasedRetryError {
    fn from(e: RetryError<reqwest_middleware::Error>) -> Self {
        Self {
            message: e.to_string(),
            history: e.history().clone(),
        }
    }
}
