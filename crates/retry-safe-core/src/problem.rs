//! RFC 9457 problem details: the one error body of every layer.
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use std::borrow::Cow;
use std::time::Duration;

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The members a [`Problem`] writes itself; [`Problem::with`] cannot replace them.
pub const RESERVED_MEMBERS: [&str; 7] = [
    "type",
    "title",
    "status",
    "detail",
    "instance",
    "code",
    "error_code",
];

/// An RFC 9457 problem, rendered as `application/problem+json`.
///
/// ```
/// use retry_safe_core::Problem;
/// use http::StatusCode;
/// use std::time::Duration;
///
/// let res: http::Response<bytes::Bytes> =
///     Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Too many requests")
///         .with_detail("20 requests per second, burst 40")
///         .with_retry_after(Duration::from_millis(1500))
///         .with("retry_after_ms", 1500)
///         .into_response();
/// assert_eq!(res.status(), 429);
/// assert_eq!(res.headers()["content-type"], "application/problem+json");
/// assert_eq!(res.headers()["retry-after"], "2");
/// let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
/// assert_eq!(body["type"], "urn:problem-type:rate_limited");
/// assert_eq!(body["code"], "rate_limited");
/// assert_eq!(body["error_code"], "rate_limited");
/// assert_eq!(body["retry_after_ms"], 1500);
/// ```
///
/// RFC 9457 problem details: the one error body of every layer.
///
/// Every rejection a layer of this workspace produces is an [`application/problem+json`](PROBLEM_JSON)
/// body with the RFC's members and a stable machine-readable `code`:
///
/// ```json
/// {"type":"urn:problem-type:rate_limited","title":"Too many requests","status":429,
///  "detail":"…","code":"rate_limited","error_code":"rate_limited","retry_after_ms":1500}
/// ```
///
/// - `type` is `urn:problem-type:<code>` unless set with [`Problem::with_type`];
/// - `code` and `error_code` both carry the code (`code` is what the layers always sent,
///   `error_code` is the member of the workspace's error envelope), so clients switch on either;
/// - extension members come after the standard ones, in insertion order; an extension may not
///   replace a standard member (it is left out of the body).
///
/// When a problem carries a wait ([`Problem::with_retry_after`]), the response also has a
/// `Retry-After` header in whole seconds, rounded up, at least 1 ([`retry_after_secs`]).
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Problem {
    status: StatusCode,
    code: Cow<'static, str>,
    title: Cow<'static, str>,
    detail: Option<String>,
    retry_after: Option<Duration>,
    /// The members most problems do without, boxed to keep `Result<_, Problem>` small.
    rare: Option<Box<Rare>>,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct Rare {
    type_uri: Option<Cow<'static, str>>,
    instance: Option<String>,
    extensions: Vec<(String, Value)>,
}

impl Problem {
    /// A problem with a stable machine-readable `code` (snake_case by convention, such as
    /// `idempotency_key_reused`) and a short human `title`, the same for every occurrence.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        title: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            title: title.into(),
            detail: None,
            retry_after: None,
            rare: None,
        }
    }

    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// This occurrence's explanation (`detail`). It is shown to clients: never put a secret in it.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The URI of this occurrence (`instance`).
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.rare_mut().instance = Some(instance.into());
        self
    }

    /// A `type` URI other than the default `urn:problem-type:<code>`.
    pub fn with_type(mut self, uri: impl Into<Cow<'static, str>>) -> Self {
        self.rare_mut().type_uri = Some(uri.into());
        self
    }

    /// [`with_retry_after`](Self::with_retry_after), and the wait in the body as the
    /// `retry_after_ms` extension (whole milliseconds) for clients that want more than seconds.
    pub fn with_retry_after_ms(self, after: Duration) -> Self {
        let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        self.with_retry_after(after).with("retry_after_ms", ms)
    }

    /// How long the client should wait before it tries again: sent as `Retry-After`.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// An extension member. A name of [`RESERVED_MEMBERS`] is ignored; a name given twice keeps
    /// the last value.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let name = name.into();
        if RESERVED_MEMBERS.contains(&name.as_str()) {
            return self;
        }
        let value = value.into();
        let extensions = &mut self.rare_mut().extensions;
        match extensions.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => extensions.push((name, value)),
        }
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The title.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The `type` URI.
    pub fn type_uri(&self) -> Cow<'_, str> {
        match self.rare.as_ref().and_then(|r| r.type_uri.as_ref()) {
            Some(uri) => Cow::Borrowed(uri),
            None => Cow::Owned(format!("urn:problem-type:{}", self.code)),
        }
    }

    /// The detail, if set.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The instance, if set.
    pub fn instance(&self) -> Option<&str> {
        self.rare.as_ref().and_then(|r| r.instance.as_deref())
    }

    /// The wait sent as `Retry-After`, if set.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// An extension member, if set.
    pub fn extension(&self, name: &str) -> Option<&Value> {
        self.rare
            .as_ref()?
            .extensions
            .iter()
            .find_map(|(n, v)| (n == name).then_some(v))
    }

    /// The extension members, in insertion order.
    pub fn extensions(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.rare
            .iter()
            .flat_map(|r| r.extensions.iter().map(|(n, v)| (n.as_str(), v)))
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        // Serializing strings, numbers and JSON values into a Vec cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
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

impl Serialize for Problem {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", &self.type_uri())?;
        map.serialize_entry("title", &self.title)?;
        map.serialize_entry("status", &self.status.as_u16())?;
        if let Some(detail) = &self.detail {
            map.serialize_entry("detail", detail)?;
        }
        if let Some(instance) = self.instance() {
            map.serialize_entry("instance", instance)?;
        }
        map.serialize_entry("code", &self.code)?;
        map.serialize_entry("error_code", &self.code)?;
        if let Some(rare) = &self.rare {
            for (name, value) in &rare.extensions {
                map.serialize_entry(name, value)?;
            }
        }
        map.end()
    }
}

impl<B: From<Bytes>> From<Problem> for Response<B> {
    fn from(problem: Problem) -> Self {
        problem.into_response()
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.title)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum_core::response::IntoResponse for Problem {
    fn into_response(self) -> axum_core::response::Response {
        Problem::into_response(self)
    }
}

/// `Retry-After` seconds for a wait: rounded up (a client that obeys never comes back early),
/// at least 1 (`Retry-After: 0` invites an immediate retry storm).
///
/// ```
/// use retry_safe_core::retry_after_secs;
/// use std::time::Duration;
///
/// assert_eq!(retry_after_secs(Duration::ZERO), 1);
/// assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
/// assert_eq!(retry_after_secs(Duration::from_secs(60)), 60);
/// ```
pub fn retry_after_secs(after: Duration) -> u64 {
    ceil_secs(after).max(1)
}

/// A duration in whole seconds, rounded up (`0` stays `0`).
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Whether a response's `Content-Type` is `application/problem+json` (parameters and case
/// ignored).
pub fn is_problem(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(PROBLEM_JSON))
}
