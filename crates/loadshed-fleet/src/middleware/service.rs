use super::future::PriorityShedFuture;
use super::layer::PriorityShedLayer;
use crate::Clock;
use crate::{Class, Classify, ShedReason};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use retry_safe_core::Problem;
use std::task::{Context, Poll};
use tower_service::Service;

/// The service made by [`PriorityShedLayer`].
pub struct PriorityShedService<S, C, K> {
    pub(crate) inner: S,
    pub(crate) layer: PriorityShedLayer<C, K>,
}

impl<S, C, K> PriorityShedService<S, C, K> {
    retry_safe_core::inner_service!(S);
}

impl<S: Clone, C, K> Clone for PriorityShedService<S, C, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, C, K> std::fmt::Debug for PriorityShedService<S, C, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriorityShedService")
            .finish_non_exhaustive()
    }
}

impl<S, C, K, ReqB, ResB> Service<Request<ReqB>> for PriorityShedService<S, C, K>
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
    type Future = PriorityShedFuture<S::Future, ResB, S::Error, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let class = self.layer.classifier.classify(&parts);
        let req = Request::from_parts(parts, body);
        // Only a refusal needs to know whether it answers a gRPC call.
        let grpc = |req: &Request<ReqB>| retry_safe_core::grpc::is_grpc(req.headers());
        let shedder = &self.layer.shedder;
        let admitted = shedder.admit_owned(class);
        #[cfg(feature = "metrics")]
        self.layer.hot.record(
            class,
            admitted.as_ref().err().map(|shed| shed.reason),
            shedder.pressure(),
        );
        let guard = match admitted {
            Ok(guard) => guard,
            Err(shed) => {
                return PriorityShedFuture::ready(refusal(
                    class,
                    shed.reason,
                    shed.retry_after,
                    grpc(&req),
                ))
            }
        };
        #[cfg(feature = "redis")]
        if let Some(fleet) = self.layer.fleet.clone() {
            // The fleet is asked over the network: the inner service is called later, so the
            // clone that was made ready goes into the future and a fresh clone stays here.
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            #[cfg(feature = "metrics")]
            let (shedder, hot) = (shedder.clone(), self.layer.hot.clone());
            return PriorityShedFuture::boxed(Box::pin(async move {
                let fleet_guard = match fleet.admit(class).await {
                    Ok(g) => g,
                    Err(crate::FleetError::Shed(shed)) => {
                        #[cfg(feature = "metrics")]
                        hot.record(class, Some(shed.reason), shedder.pressure());
                        return Ok(refusal(class, shed.reason, shed.retry_after, grpc(&req)));
                    }
                    Err(e) => return Ok(fleet_failed(&e, grpc(&req))),
                };
                let res = inner.call(req).await;
                drop(guard);
                drop(fleet_guard);
                res
            }));
        }
        PriorityShedFuture::admitted(self.inner.call(req), guard)
    }
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

/// The codes of the fleet shedder's backend failures.
#[cfg(feature = "redis")]
const FLEET_CODES: retry_safe_core::BackendCodes = retry_safe_core::BackendCodes {
    name: "fleet load shedder",
    unavailable: "fleet_shedder_unavailable",
    misconfigured: "fleet_shedder_misconfigured",
    corrupt: "fleet_shedder_state_corrupt",
};

/// The answer when the fleet shedder could not decide: 503 when its Redis is down and it fails
/// closed, 500 when it is misconfigured or its state unreadable.
#[cfg(feature = "redis")]
fn fleet_failed<B: From<Bytes>>(e: &crate::FleetError, grpc: bool) -> Response<B> {
    tracing::error!(error = %e, source = ?std::error::Error::source(e), "fleet shedder failed; refusing the request");
    let backend;
    let backend = match e {
        crate::FleetError::Backend(b) => b,
        other => {
            backend = retry_safe_core::BackendError::Misconfigured(other.to_string().into());
            &backend
        }
    };
    backend.problem(&FLEET_CODES).into_response_if_grpc(grpc)
}
