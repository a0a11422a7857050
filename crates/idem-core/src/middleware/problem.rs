//! RFC 9457 problem details produced by the idempotency layer.
//!
//! Each body carries `type`, `title`, `status`, `detail` and a stable machine-readable `code`.
//! `type` is `urn:problem-type:<code>`, so clients may switch on either member.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use std::time::Duration;

/// The media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One problem response, before it is rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, such as `idempotency_key_reused`.
    pub code: &'static str,
    /// Short summary, the same for every occurrence of the code.
    pub title: &'static str,
    /// Explanation of this occurrence.
    pub detail: String,
    /// Sent as `Retry-After` (whole seconds, rounded up, at least 1) when set.
    pub retry_after: Option<Duration>,
}

impl Problem {
    /// A problem without `Retry-After`.
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            title,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// The same problem with a `Retry-After`.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        serde_json::json!({
            "type": format!("urn:problem-type:{}", self.code),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        })
        .to_string()
        .into()
    }

    /// The complete response, with any body type that can be made from bytes.
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let mut res = Response::new(B::from(self.body()));
        *res.status_mut() = self.status;
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(after) = self.retry_after {
            headers.insert(header::RETRY_AFTER, retry_after_secs(after).into());
        }
        res
    }
}

/// `Retry-After` seconds for a wait: rounded up, at least 1.
pub fn retry_after_secs(after: Duration) -> u64 {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    secs.max(1)
}
