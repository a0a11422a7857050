//! The gateway's own metrics (the layers count theirs through the same recorder).

use http::StatusCode;

/// `gateway_requests_total{route, status}` of one route, one counter per status class (`2xx`…,
/// so the series stay few), registered once when the config is built: counting a request is an
/// atomic add, no label lookup.
pub(crate) struct StatusCounters([metrics::Counter; 5]);

impl StatusCounters {
    /// The counters of `route` (`""` for requests no route took).
    pub(crate) fn new(route: &str) -> Self {
        Self(["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| {
            metrics::counter!("gateway_requests_total", "route" => route.to_owned(), "status" => class)
        }))
    }

    /// Counts one answered request.
    pub(crate) fn count(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.0[class].increment(1);
    }
}
