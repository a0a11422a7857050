//! The gateway's own metrics (the layers count theirs through the same recorder).

use http::StatusCode;

/// Counts one answered request: `gateway_requests_total{route, status}` (status by class,
/// `2xx`…, so the series stay few).
pub(crate) fn count(route: Option<&str>, status: StatusCode) {
    let class = match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    };
    let route = route.unwrap_or("").to_owned();
    metrics::counter!("gateway_requests_total", "route" => route, "status" => class).increment(1);
}
