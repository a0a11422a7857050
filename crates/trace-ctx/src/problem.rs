//! The error envelope: RFC 9457 problem details with `request_id`, `trace_id`, `error_code` and
//! `latency_ms`.
//!
//! ```json
//! {"type":"urn:problem-type:upstream_timeout","title":"Upstream timed out","status":504,
//!  "detail":"the payment provider did not answer within 1 s","instance":"/v1/charges",
//!  "error_code":"upstream_timeout","request_id":"9f2c…","trace_id":"4bf92f35…","latency_ms":1432}
//! ```
//!
//! A handler returns a [`Problem`]; the [`TraceContextLayer`], outermost, adds the
//! request's ids and latency to it and to every other problem+json body produced inside it.
//!
#![cfg_attr(
    feature = "tower",
    doc = "[`TraceContextLayer`]: crate::TraceContextLayer"
)]
#![cfg_attr(not(feature = "tower"), doc = "[`TraceContextLayer`]: crate#features")]

use http::StatusCode;
use serde_json::Value;

pub use retry_safe_core::{is_problem, Problem, PROBLEM_JSON};

/// Adds the envelope members to a problem body: `request_id`, `trace_id`, `latency_ms`, and
/// `error_code` (from the body's `code`, else `http_<status>`) and `instance` when absent. Members
/// already present that the layer owns (`request_id`, `trace_id`, `latency_ms`) are overwritten,
/// so a body cannot carry another request's ids. Returns `None` if the body is not a JSON object.
pub fn enrich(
    body: &[u8],
    status: StatusCode,
    request_id: &str,
    trace_id: &str,
    latency_ms: u64,
    instance: &str,
) -> Option<Vec<u8>> {
    let Ok(Value::Object(mut members)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    members.insert("request_id".into(), request_id.into());
    members.insert("trace_id".into(), trace_id.into());
    members.insert("latency_ms".into(), latency_ms.into());
    if !members.contains_key("error_code") {
        let code = match members.get("code") {
            Some(Value::String(code)) => code.clone(),
            _ => format!("http_{}", status.as_u16()),
        };
        members.insert("error_code".into(), code.into());
    }
    if !members.contains_key("instance") {
        members.insert("instance".into(), instance.into());
    }
    if !members.contains_key("status") {
        members.insert("status".into(), status.as_u16().into());
    }
    serde_json::to_vec(&Value::Object(members)).ok()
}
