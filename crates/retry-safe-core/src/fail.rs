//! What a layer does when its backend fails, and the error type backends report.

/// A boxed error of a backend's transport (Redis, PostgreSQL, an inner service).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a component backed by a shared server (Redis, PostgreSQL) does when the server does not
/// answer. Chosen per layer; every crate documents what "open" means for it.
///
/// ```
/// use retry_safe_core::FailMode;
/// assert_eq!(FailMode::default(), FailMode::Closed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FailMode {
    /// Report the outage: the layer answers 503 with `Retry-After` and the request does not run.
    /// The default: a payment API would rather refuse than run a request unprotected.
    #[default]
    Closed,
    /// Go on without the shared server (no idempotency protection, or local limits only),
    /// counted and logged by the component so operators see it.
    Open,
}
