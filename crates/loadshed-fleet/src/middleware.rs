//! The tower layer (feature `tower`): [`LoadShedLayer`].
//!
//! Classifies each request ([`Classify`]), asks the [`Shedder`] for a slot, and holds it until
//! the inner service's response future completes. A shed request gets 503 `overloaded` with
//! `Retry-After` and an RFC 9457 problem+json body naming its class and the reason
//! (`capacity`: its class's share is full; `overload`: the controller is shedding its class).
//! Counters per class: [`Shedder::snapshot`]; pressure changes are logged as `tracing` events.
//!
//! With a fleet shedder (`LoadShedLayer::with_fleet`, feature `redis`) a request the server
//! admits must also find room in the fleet's share for its class (`fleet_capacity`); the
//! per-server shedder stays the last line of defence. When the fleet's Redis is down the server
//! decides alone (or, failing closed, answers 503 `fleet_shedder_unavailable`); a misconfigured
//! fleet shedder answers 500 `fleet_shedder_misconfigured`.

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
    #[cfg(feature = "redis")]
    fleet: Option<crate::FleetShedder>,
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
            #[cfg(feature = "redis")]
            fleet: None,
        }
    }

    /// Also admits every request through the fleet usage shedder `fleet` (after this server's
    /// shedder admitted it): the fleet's share for its class must have room too.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn with_fleet(mut self, fleet: crate::FleetShedder) -> Self {
        self.fleet = Some(fleet);
        self
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
            #[cfg(feature = "redis")]
            fleet: self.fleet.clone(),
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
    type Future = LoadShedFuture<S::Future, ResB, S::Error, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let class = self.layer.classifier.classify(&parts);
        let grpc = retry_safe_core::grpc::is_grpc(&parts.headers);
        let req = Request::from_parts(parts, body);
        let shedder = &self.layer.shedder;
        let admitted = shedder.admit_owned(class);
        #[cfg(feature = "metrics")]
        record(
            class,
            admitted.as_ref().err().map(|shed| shed.reason),
            shedder.pressure(),
        );
        let guard = match admitted {
            Ok(guard) => guard,
            Err(shed) => {
                return LoadShedFuture::ready(refusal(class, shed.reason, shed.retry_after, grpc))
            }
        };
        #[cfg(feature = "redis")]
        if let Some(fleet) = self.layer.fleet.clone() {
            // The fleet is asked over the network: the inner service is called later, so the
            // clone that was made ready goes into the future and a fresh clone stays here.
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            #[cfg(feature = "metrics")]
            let shedder = shedder.clone();
            return LoadShedFuture::boxed(Box::pin(async move {
                let fleet_guard = match fleet.admit(class).await {
                    Ok(g) => g,
                    Err(crate::FleetError::Shed(shed)) => {
                        #[cfg(feature = "metrics")]
                        record(class, Some(shed.reason), shedder.pressure());
                        return Ok(refusal(class, shed.reason, shed.retry_after, grpc));
                    }
                    Err(e) => return Ok(fleet_failed(&e, grpc)),
                };
                let res = inner.call(req).await;
                drop(guard);
                drop(fleet_guard);
                res
            }));
        }
        LoadShedFuture::admitted(self.inner.call(req), guard)
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`LoadShedService`]: a refusal at once, or the inner service's
    /// future holding the request's slot until it completes (the slot is freed when the future
    /// completes or is dropped). Only the fleet shedder's network admission is boxed.
    pub struct LoadShedFuture<F, B, E, C: Clock> {
        #[pin]
        state: FutureState<F, B, E, C>,
    }
}

pin_project_lite::pin_project! {
    #[project = FutureStateProj]
    enum FutureState<F, B, E, C: Clock> {
        Ready { res: Option<Response<B>> },
        Admitted {
            #[pin]
            fut: F,
            guard: Option<crate::OwnedGuard<C>>,
        },
        Boxed { fut: BoxFuture<Result<Response<B>, E>> },
    }
}

impl<F, B, E, C: Clock> LoadShedFuture<F, B, E, C> {
    fn ready(res: Response<B>) -> Self {
        Self {
            state: FutureState::Ready { res: Some(res) },
        }
    }

    fn admitted(fut: F, guard: crate::OwnedGuard<C>) -> Self {
        Self {
            state: FutureState::Admitted {
                fut,
                guard: Some(guard),
            },
        }
    }

    #[cfg(feature = "redis")]
    fn boxed(fut: BoxFuture<Result<Response<B>, E>>) -> Self {
        Self {
            state: FutureState::Boxed { fut },
        }
    }
}

impl<F, B, E, C: Clock> std::fmt::Debug for LoadShedFuture<F, B, E, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadShedFuture").finish_non_exhaustive()
    }
}

impl<F, B, E, C> Future for LoadShedFuture<F, B, E, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    C: Clock,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            FutureStateProj::Ready { res } => match res.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => Poll::Pending, // polled after completion
            },
            FutureStateProj::Admitted { fut, guard } => {
                let out = std::task::ready!(fut.poll(cx));
                // The request is done: its slot is free before the response leaves.
                drop(guard.take());
                Poll::Ready(out)
            }
            FutureStateProj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}

/// One admission decision to the `metrics` facade: `loadshed_requests_total{class, outcome,
/// reason}` and the controller's pressure as the gauge `loadshed_level` (0 = nothing shed,
/// 3 = everything but critical shed).
#[cfg(feature = "metrics")]
fn record(class: Class, shed: Option<ShedReason>, pressure: f64) {
    let (outcome, reason) = match shed {
        None => ("admitted", ""),
        Some(reason) => ("shed", reason.name()),
    };
    metrics::counter!("loadshed_requests_total", "class" => class.name(), "outcome" => outcome, "reason" => reason)
        .increment(1);
    metrics::gauge!("loadshed_level").set(pressure);
}

fn refusal<B: From<Bytes>>(
    class: Class,
    reason: ShedReason,
    retry: std::time::Duration,
    grpc: bool,
) -> Response<B> {
    let reason = reason.name();
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
    .into_response_if_grpc(grpc)
}

/// The answer when the fleet shedder could not decide: 503 when its Redis is down and it fails
/// closed, 500 when it is misconfigured.
#[cfg(feature = "redis")]
fn fleet_failed<B: From<Bytes>>(e: &crate::FleetError, grpc: bool) -> Response<B> {
    tracing::error!(error = %e, source = ?std::error::Error::source(e), "fleet shedder failed; refusing the request");
    match e {
        crate::FleetError::Misconfigured(_) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "fleet_shedder_misconfigured",
            "Fleet load shedder misconfigured",
        )
        .with_detail("the server's fleet load shedder is misconfigured; the request was not run")
        .into_response_if_grpc(grpc),
        _ => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "fleet_shedder_unavailable",
            "Fleet load shedder unavailable",
        )
        .with_detail("the fleet's admission counter cannot be reached; the request was not run")
        .with_retry_after(std::time::Duration::from_secs(1))
        .into_response_if_grpc(grpc),
    }
}
