//! The tower layer (feature `tower`): [`LoadShedLayer`].
//!
//! Classifies each request ([`Classify`]), asks the [`Shedder`] for a slot, and holds it until
//! the inner service's response future completes. A shed request gets 503 `overloaded` with
//! `Retry-After` and an RFC 9457 problem+json body naming its class and the reason
//! (`capacity`: its class's share is full; `overload`: the controller is shedding its class).
//! Counters per class: [`Shedder::snapshot`]; pressure changes are logged as `tracing` events.

use crate::Clock;
use crate::{Class, Classify, ShedReason, Shedder};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use retry_safe_core::Problem;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// Sheds low-priority requests in front of an HTTP service.
///
/// ```
/// use loadshed_fleet::{DefaultClassifier, LoadShedLayer, Shedder};
/// use tower::ServiceBuilder;
/// # use bytes::Bytes; use http_body_util::Full;
/// # let handler = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
/// # });
///
/// let classifier = DefaultClassifier::new().critical(http::Method::POST, "/v1/payments/");
/// let layer = LoadShedLayer::new(Shedder::new(64).unwrap(), classifier);
/// let service = ServiceBuilder::new().layer(layer).service(handler);
/// ```
pub struct LoadShedLayer<C, K> {
    shedder: Arc<Shedder<C>>,
    classifier: Arc<K>,
}

impl<C: Clock, K: Classify> LoadShedLayer<C, K> {
    /// A layer admitting through `shedder`, classifying with `classifier`.
    pub fn new(shedder: Shedder<C>, classifier: K) -> Self {
        Self::from_shared(Arc::new(shedder), classifier)
    }

    /// A layer on a shedder the application also reads (metrics) or shares.
    pub fn from_shared(shedder: Arc<Shedder<C>>, classifier: K) -> Self {
        Self {
            shedder,
            classifier: Arc::new(classifier),
        }
    }

    /// The shedder, for [`Shedder::snapshot`].
    pub fn shedder(&self) -> &Arc<Shedder<C>> {
        &self.shedder
    }
}

impl<C, K> Clone for LoadShedLayer<C, K> {
    fn clone(&self) -> Self {
        Self {
            shedder: self.shedder.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<C, K> std::fmt::Debug for LoadShedLayer<C, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadShedLayer").finish_non_exhaustive()
    }
}

impl<C, K, S> Layer<S> for LoadShedLayer<C, K> {
    type Service = LoadShedService<S, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShedService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`LoadShedLayer`].
pub struct LoadShedService<S, C, K> {
    inner: S,
    layer: LoadShedLayer<C, K>,
}

impl<S: Clone, C, K> Clone for LoadShedService<S, C, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, C, K> std::fmt::Debug for LoadShedService<S, C, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadShedService").finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, C, K, ReqB, ResB> Service<Request<ReqB>> for LoadShedService<S, C, K>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    C: Clock,
    K: Classify,
    ReqB: Send + 'static,
    ResB: From<Bytes> + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<ResB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let class = self.layer.classifier.classify(&parts);
        let req = Request::from_parts(parts, body);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shedder = self.layer.shedder.clone();
        Box::pin(async move {
            let admitted = shedder.admit(class);
            #[cfg(feature = "metrics")]
            record(
                class,
                admitted.as_ref().err().map(|shed| shed.reason),
                shedder.pressure(),
            );
            let guard = match admitted {
                Ok(guard) => guard,
                Err(shed) => return Ok(refusal(class, shed.reason, shed.retry_after)),
            };
            let res = inner.call(req).await;
            drop(guard);
            res
        })
    }
}

/// One admission decision to the `metrics` facade: `loadshed_requests_total{class, outcome,
/// reason}` and the controller's pressure as the gauge `loadshed_level` (0 = nothing shed,
/// 3 = everything but critical shed).
#[cfg(feature = "metrics")]
fn record(class: Class, shed: Option<ShedReason>, pressure: f64) {
    let (outcome, reason) = match shed {
        None => ("admitted", ""),
        Some(ShedReason::Capacity) => ("shed", "capacity"),
        Some(ShedReason::Overload) => ("shed", "overload"),
    };
    metrics::counter!("loadshed_requests_total", "class" => class.name(), "outcome" => outcome, "reason" => reason)
        .increment(1);
    metrics::gauge!("loadshed_level").set(pressure);
}

fn refusal<B: From<Bytes>>(
    class: Class,
    reason: ShedReason,
    retry: std::time::Duration,
) -> Response<B> {
    let reason = match reason {
        ShedReason::Capacity => "capacity",
        ShedReason::Overload => "overload",
    };
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "Server overloaded",
    )
    .with_detail(format!(
        "the server is shedding {} requests ({reason}); retry later",
        class.name()
    ))
    .with("class", class.name())
    .with("reason", reason)
    .with_retry_after(retry)
    .into_response()
}
