use super::service::PriorityShedService;
use crate::{Classify, Clock, Shedder};
use std::sync::Arc;
use tower_layer::Layer;

/// Sheds low-priority requests in front of an HTTP service.
///
/// ```
/// use loadshed_fleet::{DefaultClassifier, PriorityShedLayer, Shedder};
/// use tower::ServiceBuilder;
/// # use bytes::Bytes; use http_body_util::Full;
/// # let handler = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
/// # });
///
/// let classifier = DefaultClassifier::new().critical(http::Method::POST, "/v1/payments/");
/// let layer = PriorityShedLayer::new(Shedder::new(64).unwrap(), classifier);
/// let service = ServiceBuilder::new().layer(layer).service(handler);
/// ```
///
/// | outcome | response |
/// |---|---|
/// | admitted (by the server, and by the fleet when there is one) | the inner service's response |
/// | shed: its class's share is full, or the controller sheds its class | 503 `overloaded` + `Retry-After`, `class` and `reason` in the body |
/// | the fleet's Redis unreachable, fleet failing closed | 503 `fleet_shedder_unavailable` + `Retry-After: 1` |
/// | fleet shedder misconfigured, any fail mode | 500 `fleet_shedder_misconfigured` |
/// | the fleet's lease set unreadable, any fail mode | 500 `fleet_shedder_state_corrupt` |
///
/// Classifies each request ([`Classify`](crate::Classify)), asks the [`Shedder`](crate::Shedder) for a slot, and holds it until
/// the inner service's response future completes. A shed request gets 503 `overloaded` with
/// `Retry-After` and an RFC 9457 problem+json body naming its class and the reason
/// (`capacity`: its class's share is full; `overload`: the controller is shedding its class).
/// Counters per class: [`Shedder::snapshot`](crate::Shedder::snapshot); pressure changes are logged as `tracing` events.
///
/// With a fleet shedder (`PriorityShedLayer::with_fleet`, feature `redis`) a request the server
/// admits must also find room in the fleet's share for its class (`fleet_capacity`); the
/// per-server shedder stays the last line of defence. When the fleet's Redis is down the server
/// decides alone (or, failing closed, answers 503 `fleet_shedder_unavailable`); a misconfigured
/// fleet shedder answers 500 `fleet_shedder_misconfigured`.
pub struct PriorityShedLayer<C, K> {
    pub(crate) shedder: Arc<Shedder<C>>,
    pub(crate) classifier: Arc<K>,
    #[cfg(feature = "redis")]
    pub(crate) fleet: Option<crate::FleetShedder>,
    #[cfg(feature = "metrics")]
    pub(crate) hot: Arc<HotMetrics>,
}

impl<C: Clock, K: Classify> PriorityShedLayer<C, K> {
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
            #[cfg(feature = "metrics")]
            hot: Arc::default(),
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

impl<C, K> Clone for PriorityShedLayer<C, K> {
    fn clone(&self) -> Self {
        Self {
            shedder: self.shedder.clone(),
            classifier: self.classifier.clone(),
            #[cfg(feature = "redis")]
            fleet: self.fleet.clone(),
            #[cfg(feature = "metrics")]
            hot: self.hot.clone(),
        }
    }
}

impl<C, K> std::fmt::Debug for PriorityShedLayer<C, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriorityShedLayer").finish_non_exhaustive()
    }
}

impl<C, K, S> Layer<S> for PriorityShedLayer<C, K> {
    type Service = PriorityShedService<S, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        PriorityShedService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The `metrics` handles of the common outcomes, looked up in the recorder on first use and kept:
/// an admitted request costs an increment, not a registry lookup by name and labels.
#[cfg(feature = "metrics")]
#[derive(Default)]
pub(crate) struct HotMetrics {
    /// `loadshed_requests_total{class, outcome="admitted", reason=""}`, by class.
    admitted: [std::sync::OnceLock<metrics::Counter>; 4],
    /// `loadshed_level`.
    level: std::sync::OnceLock<metrics::Gauge>,
}

#[cfg(feature = "metrics")]
impl HotMetrics {
    /// One admission decision: `loadshed_requests_total{class, outcome, reason}` and the
    /// controller's pressure as the gauge `loadshed_level` (0 = nothing shed, 3 = everything but
    /// critical shed).
    pub(crate) fn record(
        &self,
        class: crate::Class,
        shed: Option<crate::ShedReason>,
        pressure: f64,
    ) {
        match shed {
            None => self.admitted[class as usize]
                .get_or_init(|| {
                    metrics::counter!("loadshed_requests_total", "class" => class.name(), "outcome" => "admitted", "reason" => "")
                })
                .increment(1),
            Some(reason) => metrics::counter!("loadshed_requests_total", "class" => class.name(), "outcome" => "shed", "reason" => reason.name())
                .increment(1),
        }
        self.level
            .get_or_init(|| metrics::gauge!("loadshed_level"))
            .set(pressure);
    }
}
