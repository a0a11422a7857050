//! [`IdempotencyPolicy`]: what the layer does, per route group.

use crate::FailMode;
use http::{HeaderName, Method, StatusCode};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The scope function: from a request's head to the tenant/principal its keys belong to.
pub type ScopeFn = Arc<dyn Fn(&http::request::Parts) -> String + Send + Sync>;

/// How the layer treats requests, built fluently from [`IdempotencyPolicy::default`].
///
/// ```
/// use idem_core::{FailMode, IdempotencyPolicy};
/// use std::time::Duration;
///
/// let policy = IdempotencyPolicy::default()
///     .require_key(true)
///     .scope_with(|parts| {
///         parts.headers.get("x-tenant").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
///     })
///     .lease(Duration::from_secs(30))
///     .wait_for_result(Some(Duration::from_secs(2)))
///     .fail_mode(FailMode::Closed);
/// assert_eq!(policy.retention_period(), Duration::from_secs(24 * 3600));
/// ```
#[derive(Clone)]
pub struct IdempotencyPolicy {
    pub(crate) key_required: bool,
    pub(crate) methods: Vec<Method>,
    pub(crate) scope: ScopeFn,
    pub(crate) lease: Duration,
    pub(crate) retention: Duration,
    pub(crate) max_request_bytes: usize,
    pub(crate) body_timeout: Duration,
    pub(crate) max_response_bytes: usize,
    pub(crate) store_status: Arc<dyn Fn(StatusCode) -> bool + Send + Sync>,
    pub(crate) replay_headers: Vec<HeaderName>,
    pub(crate) wait_for_result: Option<Duration>,
    pub(crate) poll_interval: Duration,
    pub(crate) in_flight_hint: Duration,
    pub(crate) fail_mode: FailMode,
    pub(crate) single_commit: bool,
}

impl Default for IdempotencyPolicy {
    /// Key optional, methods POST and PATCH, one global scope, lease 10 s (renewed while the
    /// handler runs), retention 24 h,
    /// request and stored response capped at 1 MiB, statuses 200–499 stored, no waiting for an
    /// in-flight attempt, fail closed, and the headers `content-type`, `content-language`,
    /// `content-location`, `location`, `etag` and `last-modified` kept for replay.
    fn default() -> Self {
        Self {
            key_required: false,
            methods: vec![Method::POST, Method::PATCH],
            scope: Arc::new(|_| String::new()),
            lease: Duration::from_secs(10),
            retention: Duration::from_secs(24 * 3600),
            max_request_bytes: 1 << 20,
            body_timeout: Duration::from_secs(10),
            max_response_bytes: 1 << 20,
            store_status: Arc::new(|s| (200..500).contains(&s.as_u16())),
            replay_headers: [
                "content-type",
                "content-language",
                "content-location",
                "location",
                "etag",
                "last-modified",
            ]
            .into_iter()
            .map(HeaderName::from_static)
            .collect(),
            wait_for_result: None,
            poll_interval: Duration::from_millis(25),
            in_flight_hint: Duration::from_secs(1),
            fail_mode: FailMode::Closed,
            single_commit: false,
        }
    }
}

impl IdempotencyPolicy {
    /// Whether a request of a covered method without a key is refused (400) or passed through.
    pub fn require_key(mut self, required: bool) -> Self {
        self.key_required = required;
        self
    }

    /// The methods the layer covers; others pass through untouched.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// The scope of a request's key: the authenticated tenant or principal, so that two tenants'
    /// equal keys never meet. Runs after inner authentication layers have set request extensions.
    pub fn scope_with(
        mut self,
        f: impl Fn(&http::request::Parts) -> String + Send + Sync + 'static,
    ) -> Self {
        self.scope = Arc::new(f);
        self
    }

    /// How long an attempt holds the key without a heartbeat (default 10 s). While the handler
    /// runs the layer renews the lease every third of it, so a slow handler keeps its key however
    /// long it runs; an attempt whose server died (or whose `begin` reply was lost) stops renewing
    /// and its key frees within one lease. Keep it a few seconds: long enough to ride out a store
    /// hiccup between beats, short enough that an orphaned key does not block retries for long.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a completed response is kept for replay.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The configured retention.
    pub fn retention_period(&self) -> Duration {
        self.retention
    }

    /// How long reading a covered request's whole body may take (default 10 s); a slower body
    /// gets 408 `request_body_timeout` before any key is taken, so a client trickling bytes
    /// cannot hold the request — and the slots the layers outside gave it — for ever.
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// The largest request body buffered for fingerprinting; larger ones get 413.
    pub fn max_request_bytes(mut self, n: usize) -> Self {
        self.max_request_bytes = n;
        self
    }

    /// The largest response kept for replay. A larger response still reaches its client, and the
    /// key is completed with a 409 `idempotency_response_not_stored` marker, so a retry learns the
    /// request ran without running it again.
    pub fn max_response_bytes(mut self, n: usize) -> Self {
        self.max_response_bytes = n;
        self
    }

    /// Which statuses complete the key; the others release it so a retry runs again.
    pub fn store_status(mut self, f: impl Fn(StatusCode) -> bool + Send + Sync + 'static) -> Self {
        self.store_status = Arc::new(f);
        self
    }

    /// The response headers kept and replayed (replaces the default list).
    pub fn replay_headers(mut self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        self.replay_headers = headers.into_iter().collect();
        self
    }

    /// When another attempt is in flight, wait up to this long for its result instead of
    /// answering 409 at once.
    pub fn wait_for_result(mut self, bound: Option<Duration>) -> Self {
        self.wait_for_result = bound;
        self
    }

    /// How often a waiting request asks the store again (default 25 ms).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every.max(Duration::from_millis(1));
        self
    }

    /// The longest `Retry-After` of a `409` for a key in flight (default 1 s). The answer says
    /// `min(remaining lease, this)`, rounded up to whole seconds and at least 1: the first attempt
    /// usually ends in milliseconds, so an obeying client comes back about as soon as it could
    /// get its replay, instead of waiting out a lease of up to a minute (a second `409` costs it
    /// one cheap round trip). The body's `retry_after_ms` carries the same wait in milliseconds.
    pub fn in_flight_retry_after(mut self, at_most: Duration) -> Self {
        self.in_flight_hint = at_most.max(Duration::from_millis(1));
        self
    }

    /// What happens when the store is unreachable.
    pub fn fail_mode(mut self, mode: FailMode) -> Self {
        self.fail_mode = mode;
        self
    }

    /// Single-commit mode (default off): the layer reads and checks the key and fingerprints the
    /// request, then hands the handler a [`PendingAttempt`](crate::PendingAttempt) instead of
    /// beginning; the handler writes the record in its own database transaction — one commit per
    /// request instead of one for `begin` and one for the work and `complete`. Either last
    /// (`idem-store-postgres`'s `record_in` after its writes: a duplicate loses the key at the
    /// end, rolls back and replays the winner) or first (`begin_in` … `complete_in`: a duplicate
    /// waits on the record's row lock, bounded by the store's lock timeout, then `409`, and then
    /// replays). A rollback or crash leaves no record. Only for handlers whose effects are all in
    /// that database: an external side effect (a payment provider's API, an email) cannot be
    /// rolled back with the transaction, and a duplicate may run it again — use the default mode
    /// there. Every route under a layer in this mode must record itself (mount other routes
    /// under a layer in the default mode).
    pub fn single_commit(mut self, on: bool) -> Self {
        self.single_commit = on;
        self
    }
}

impl fmt::Debug for IdempotencyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyPolicy")
            .field("key_required", &self.key_required)
            .field("methods", &self.methods)
            .field("lease", &self.lease)
            .field("retention", &self.retention)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("replay_headers", &self.replay_headers)
            .field("wait_for_result", &self.wait_for_result)
            .field("fail_mode", &self.fail_mode)
            .field("single_commit", &self.single_commit)
            .finish_non_exhaustive()
    }
}
