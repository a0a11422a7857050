//! What the client retries, how long it waits, and which key it sends.

use http::{HeaderMap, Method, StatusCode};
use std::time::Duration;

/// How a failed attempt failed, as far as the transport can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Failure {
    /// The request never reached the server (connection refused, DNS, TLS handshake): safe to
    /// resend whatever the method.
    NotSent,
    /// The request may have been written (timeout, reset, EOF while waiting for the answer): the
    /// server may have acted on it.
    MaybeSent,
    /// A local error that no retry can fix (an invalid request, a body that failed to read).
    Fatal,
}

/// The class of an attempt's outcome, which decides whether another attempt may follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// A response the client keeps (2xx, 3xx, or a status that a retry cannot change).
    Done,
    /// A response or failure after which a retry is safe and may succeed.
    Retry(Reason),
    /// A failure after which a retry is not safe (or cannot help): give up.
    GiveUp(Reason),
}

/// Why an attempt is retried or given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The request never reached the server.
    NotSent,
    /// No answer in time, or the connection broke after the request was written.
    MaybeSent,
    /// A local error no retry can fix.
    Fatal,
    /// No answer within the attempt timeout (the request may have been acted on).
    TimedOut,
    /// An answer with this status.
    Status(StatusCode),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::NotSent => f.write_str("not_sent"),
            Reason::MaybeSent => f.write_str("maybe_sent"),
            Reason::Fatal => f.write_str("fatal"),
            Reason::TimedOut => f.write_str("timeout"),
            Reason::Status(s) => write!(f, "status_{}", s.as_u16()),
        }
    }
}

impl Reason {
    /// A short label (`not_sent`, `maybe_sent`, `fatal`, `timeout`, `status_503`), for logs
    /// and metrics (the same as its `Display`).
    pub fn label(&self) -> String {
        self.to_string()
    }
}

/// Whether `method` is idempotent (RFC 9110 §9.2.2): resending it cannot add an effect.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// The default classification — the rules every caller gets unless it supplies its own
/// [`Classifier`]:
///
/// | outcome | idempotent method or keyed request | other (an unkeyed POST) |
/// |---|---|---|
/// | 2xx, 3xx (a replay with `Idempotent-Replayed: true` included) | done | done |
/// | not sent (refused, DNS, TLS) | retry | retry |
/// | timeout, reset, EOF after writing | retry | give up |
/// | 409 (an attempt with the same key still in flight) | retry if keyed | done |
/// | 429, 503 (refused before any work) | retry | retry |
/// | 500, 502, 504 (may have acted) | retry | done |
/// | 400, 401, 403, 404, 412, 413, 422 and every other status | done — the request must change first | done |
pub fn default_classification(
    method: &Method,
    keyed: bool,
    attempt: Result<StatusCode, Failure>,
) -> Outcome {
    let repeatable = keyed || is_idempotent(method);
    match attempt {
        Ok(status) if status.is_success() || status.is_redirection() => Outcome::Done,
        Ok(status) => match status.as_u16() {
            429 | 503 => Outcome::Retry(Reason::Status(status)),
            409 if keyed => Outcome::Retry(Reason::Status(status)),
            500 | 502 | 504 if repeatable => Outcome::Retry(Reason::Status(status)),
            _ => Outcome::Done,
        },
        Err(Failure::NotSent) => Outcome::Retry(Reason::NotSent),
        Err(Failure::MaybeSent) if repeatable => Outcome::Retry(Reason::MaybeSent),
        Err(Failure::MaybeSent) => Outcome::GiveUp(Reason::MaybeSent),
        Err(Failure::Fatal) => Outcome::GiveUp(Reason::Fatal),
    }
}

/// A classification other than [`default_classification`].
pub type Classifier = fn(&Method, bool, Result<StatusCode, Failure>) -> Outcome;

/// The form of a generated `Idempotency-Key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KeyFormat {
    /// A UUID v4 as plain text (`8e03978e-40d5-43e8-bc93-6894a57f9324`), as Stripe takes it.
    #[default]
    UuidV4,
    /// A UUID v7 (time-ordered: friendlier to B-tree indexes of key stores).
    UuidV7,
    /// A UUID v4 as a structured-field string (`"8e03978e-…"`), the form of
    /// draft-ietf-httpapi-idempotency-key-header.
    SfStringUuidV4,
}

impl KeyFormat {
    /// A new key in this form.
    pub fn generate(self) -> String {
        match self {
            KeyFormat::UuidV4 => uuid::Uuid::new_v4().to_string(),
            KeyFormat::UuidV7 => uuid::Uuid::now_v7().to_string(),
            KeyFormat::SfStringUuidV4 => format!("\"{}\"", uuid::Uuid::new_v4()),
        }
    }
}

/// How the client retries. Build it from [`RetryPolicy::default`].
///
/// ```
/// use retry_client::RetryPolicy;
/// use std::time::Duration;
///
/// let policy = RetryPolicy::default()
///     .max_attempts(4)
///     .backoff(Duration::from_millis(50), Duration::from_secs(2))
///     .deadline(Duration::from_secs(10))
///     .attempt_timeout(Duration::from_secs(3));
/// assert_eq!(policy.attempts(), 4);
/// ```
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) base: Duration,
    pub(crate) cap: Duration,
    pub(crate) deadline: Option<Duration>,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) max_body: usize,
    pub(crate) key: Option<KeyFormat>,
    pub(crate) classify: Classifier,
    pub(crate) max_hint: Duration,
}

impl Default for RetryPolicy {
    /// 3 attempts, backoff from 100 ms capped at 5 s with full jitter, a 30 s overall deadline,
    /// no per-attempt timeout, bodies up to 1 MiB replayable, UUID v4 keys for POST and PATCH,
    /// server hints (`Retry-After`, `RateLimit`) honoured up to 60 s.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
            deadline: Some(Duration::from_secs(30)),
            attempt_timeout: None,
            max_body: 1 << 20,
            key: Some(KeyFormat::UuidV4),
            classify: default_classification,
            max_hint: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The most attempts per logical request, the first included (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The configured number of attempts.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Exponential backoff with full jitter: before retry `n` (1, 2, …) the client waits a
    /// uniformly random time in `[0, min(cap, base × 2^(n−1))]`.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.base = base;
        self.cap = cap.max(base);
        self
    }

    /// The time a logical request may take, all attempts and waits included (`None`: no bound).
    pub fn deadline(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.deadline = deadline.into();
        self
    }

    /// The time one attempt may take before it counts as timed out.
    pub fn attempt_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.attempt_timeout = timeout.into();
        self
    }

    /// The largest request body kept for resending; a larger or streaming body is sent once.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The form of the `Idempotency-Key` generated for POST and PATCH without one (`None`: never
    /// generate; such requests are then resent only when they never reached the server).
    pub fn generate_keys(mut self, format: Option<KeyFormat>) -> Self {
        self.key = format;
        self
    }

    /// A classification other than [`default_classification`].
    pub fn classifier(mut self, classify: Classifier) -> Self {
        self.classify = classify;
        self
    }

    /// The longest server hint (`Retry-After`, `RateLimit` `t=`) the client waits for; a longer
    /// one ends the call (the server asks for more patience than this client has).
    pub fn max_server_hint(mut self, max: Duration) -> Self {
        self.max_hint = max;
        self
    }

    /// The full-jitter ceiling before retry `n` (1-based).
    pub(crate) fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Whether a request with these headers and this method gets a generated key.
    pub(crate) fn wants_key(&self, method: &Method, headers: &HeaderMap) -> Option<KeyFormat> {
        let needs = !is_idempotent(method)
            && !headers.contains_key(retry_safe_core::headers::IDEMPOTENCY_KEY);
        self.key.filter(|_| needs)
    }
}
