//! Traffic classes and the classifier that assigns them.

use http::request::Parts;
use http::{HeaderName, Method};

/// A request's importance, lowest first: the shedder drops `TestMode` first and `Critical` never
/// (by its controller) — critical work only ever meets the capacity limit itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Class {
    /// Traffic of test-mode keys and test environments.
    TestMode = 0,
    /// Reads (GET, HEAD…): retrying them later costs nothing.
    Read = 1,
    /// Writes (POST, PUT, PATCH, DELETE…).
    Write = 2,
    /// Routes the application names critical (capturing a payment, health checks of the fleet).
    Critical = 3,
}

impl Class {
    /// Every class, lowest first.
    pub const ALL: [Class; 4] = [Class::TestMode, Class::Read, Class::Write, Class::Critical];

    /// The class's index (0 = test-mode … 3 = critical).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A short name: `test`, `read`, `write`, `critical`.
    pub const fn name(self) -> &'static str {
        match self {
            Class::TestMode => "test",
            Class::Read => "read",
            Class::Write => "write",
            Class::Critical => "critical",
        }
    }
}

/// Maps a request to its [`Class`].
pub trait Classify: Send + Sync + 'static {
    /// The request's class.
    fn classify(&self, parts: &Parts) -> Class;
}

impl<F: Fn(&Parts) -> Class + Send + Sync + 'static> Classify for F {
    fn classify(&self, parts: &Parts) -> Class {
        self(parts)
    }
}

/// The default classifier: critical routes first, then test mode, then the method.
///
/// - a route the application named critical (method, path prefix) → [`Class::Critical`];
/// - a test-mode marker — the header `x-test-mode: true`, or an `Authorization: Bearer` key with
///   the test-key prefix (`sk_test_` by default) → [`Class::TestMode`];
/// - `GET`, `HEAD`, `OPTIONS` → [`Class::Read`]; any other method → [`Class::Write`].
///
/// ```
/// use loadshed_fleet::{Class, Classify, DefaultClassifier};
/// use http::Method;
///
/// let classifier = DefaultClassifier::new().critical(Method::POST, "/v1/payments/");
/// let parts = |m: Method, path: &str| http::Request::builder().method(m).uri(path).body(()).unwrap().into_parts().0;
/// assert_eq!(classifier.classify(&parts(Method::POST, "/v1/payments/pi_1/capture")), Class::Critical);
/// assert_eq!(classifier.classify(&parts(Method::POST, "/v1/orders")), Class::Write);
/// assert_eq!(classifier.classify(&parts(Method::GET, "/v1/orders")), Class::Read);
/// ```
#[derive(Debug, Clone)]
pub struct DefaultClassifier {
    critical: Vec<(Option<Method>, String)>,
    test_header: HeaderName,
    test_key_prefix: String,
}

impl DefaultClassifier {
    /// No critical route; test mode by `x-test-mode: true` or a `sk_test_` bearer key.
    pub fn new() -> Self {
        Self {
            critical: Vec::new(),
            test_header: HeaderName::from_static("x-test-mode"),
            test_key_prefix: "sk_test_".into(),
        }
    }

    /// Marks requests of `method` whose path starts with `prefix` critical.
    pub fn critical(mut self, method: Method, prefix: &str) -> Self {
        self.critical.push((Some(method), prefix.into()));
        self
    }

    /// Marks every request whose path starts with `prefix` critical.
    pub fn critical_path(mut self, prefix: &str) -> Self {
        self.critical.push((None, prefix.into()));
        self
    }

    /// The bearer-key prefix of test-mode keys.
    pub fn test_key_prefix(mut self, prefix: &str) -> Self {
        self.test_key_prefix = prefix.into();
        self
    }
}

impl Default for DefaultClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Classify for DefaultClassifier {
    fn classify(&self, parts: &Parts) -> Class {
        let path = parts.uri.path();
        if self.critical.iter().any(|(m, prefix)| {
            m.as_ref().is_none_or(|m| *m == parts.method) && path.starts_with(prefix.as_str())
        }) {
            return Class::Critical;
        }
        let test_header = parts
            .headers
            .get(&self.test_header)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let test_key = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|key| key.starts_with(self.test_key_prefix.as_str()));
        if test_header || test_key {
            return Class::TestMode;
        }
        match parts.method {
            Method::GET | Method::HEAD | Method::OPTIONS => Class::Read,
            _ => Class::Write,
        }
    }
}
