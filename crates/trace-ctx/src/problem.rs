//! The error envelope: RFC 9457 problem details with `request_id`, `trace_id`, `error_code` and
//! `latency_ms`.
//!
//! ```json
//! {"type":"urn:problem-type:upstream_timeout","title":"Upstream timed out","status":504,
//!  "detail":"the payment provider did not answer within 1 s","instance":"/v1/charges",
//!  "error_code":"upstream_timeout","request_id":"9f2c…","trace_id":"4bf92f35…","latency_ms":1432}
//! ```
//!
//! A handler returns a [`Problem`]; the [`TraceLayer`](crate::TraceLayer), outermost, adds the
//! request's ids and latency to it and to every other problem+json body produced inside it.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{Map, Value};

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem, built by a handler and rendered as `application/problem+json`.
///
/// ```
/// use trace_ctx::Problem;
/// use http::StatusCode;
///
/// let res: http::Response<bytes::Bytes> = Problem::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "Upstream timed out")
///     .detail("the payment provider did not answer within 1 s")
///     .with("provider", "acme-pay")
///     .into_response();
/// assert_eq!(res.status(), 504);
/// assert_eq!(res.headers()["content-type"], "application/problem+json");
/// let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
/// assert_eq!(body["error_code"], "upstream_timeout");
/// assert_eq!(body["type"], "urn:problem-type:upstream_timeout");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    status: StatusCode,
    members: Map<String, Value>,
}

impl Problem {
    /// A problem with a stable machine-readable `error_code` (also its `type`,
    /// `urn:problem-type:<code>`, and its `code` member) and a short human `title`.
    pub fn new(status: StatusCode, error_code: &str, title: &str) -> Self {
        let mut members = Map::new();
        members.insert(
            "type".into(),
            format!("urn:problem-type:{error_code}").into(),
        );
        members.insert("title".into(), title.into());
        members.insert("status".into(), status.as_u16().into());
        members.insert("error_code".into(), error_code.into());
        members.insert("code".into(), error_code.into());
        Self { status, members }
    }

    /// This occurrence's explanation.
    pub fn detail(self, detail: impl Into<String>) -> Self {
        self.with("detail", detail.into())
    }

    /// The URI of this occurrence (the layer fills in the request path when absent).
    pub fn instance(self, instance: impl Into<String>) -> Self {
        self.with("instance", instance.into())
    }

    /// An extension member.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.members.insert(key.into(), value.into());
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON members.
    pub fn members(&self) -> &Map<String, Value> {
        &self.members
    }

    /// The response, with any body type made from bytes.
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let body = Value::Object(self.members).to_string();
        let mut res = Response::new(B::from(Bytes::from(body)));
        *res.status_mut() = self.status;
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        res
    }
}

/// Whether a response carries a problem+json body.
pub fn is_problem(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(PROBLEM_JSON))
}

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
