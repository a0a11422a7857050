//! The one error of a shared backend (Redis, PostgreSQL), whichever crate asked it.

use crate::{BoxError, Problem};
use http::StatusCode;
use std::time::Duration;

/// A backend call that failed; its cause is the error's [`source`](std::error::Error::source),
/// never repeated in its message.
///
/// A backend call that did not give a usable answer failed in one of three ways, and every crate
/// of the workspace reports them with this one type, maps them to a response with
/// [`BackendError::problem`] and meters them with [`BackendError::label`]:
///
/// | variant | meaning | fail mode | answer |
/// |---|---|---|---|
/// | [`Unavailable`](BackendError::Unavailable) | not reached, timed out, or a transient server state (`LOADING`, `READONLY`, `OOM`, `CLUSTERDOWN`…) | applies | 503 + `Retry-After: 1` |
/// | [`Misconfigured`](BackendError::Misconfigured) | the call went to the wrong place (`MOVED` on a single-node client, `CROSSSLOT`) | never applies | 500 |
/// | [`Corrupt`](BackendError::Corrupt) | the backend holds something this release cannot read | never applies | 500 |
///
/// ```
/// use retry_safe_core::{BackendCodes, BackendError};
///
/// const CODES: BackendCodes = BackendCodes {
///     name: "rate limiter",
///     unavailable: "rate_limit_unavailable",
///     misconfigured: "rate_limit_misconfigured",
///     corrupt: "rate_limit_state_corrupt",
/// };
/// let e = BackendError::Unavailable("connection refused".into());
/// assert_eq!(e.label(), "unavailable");
/// let problem = e.problem(&CODES);
/// assert_eq!((problem.status().as_u16(), problem.code()), (503, "rate_limit_unavailable"));
/// assert_eq!(problem.title(), "Rate limiter unavailable");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend could not be reached, did not answer in time, or answered with a transient
    /// error: the operation may or may not have happened. The fail mode decides.
    #[error("the backend is unavailable")]
    Unavailable(#[source] BoxError),
    /// The backend answered that the call went to the wrong place: a deployment error that no
    /// fail mode turns into a local decision.
    #[error("the backend is misconfigured")]
    Misconfigured(#[source] BoxError),
    /// The backend holds state this release cannot read.
    #[error("the backend's state is unreadable")]
    Corrupt(#[source] BoxError),
}

/// How a component names its backend failures: the `code` of each problem and the component's
/// name in the titles ("Rate limiter unavailable").
#[derive(Debug, Clone, Copy)]
pub struct BackendCodes {
    /// The component, lowercase ("rate limiter", "idempotency store").
    pub name: &'static str,
    /// The code of [`BackendError::Unavailable`].
    pub unavailable: &'static str,
    /// The code of [`BackendError::Misconfigured`].
    pub misconfigured: &'static str,
    /// The code of [`BackendError::Corrupt`].
    pub corrupt: &'static str,
}

impl BackendError {
    /// The metric label of this failure: `unavailable`, `misconfigured` or `corrupt`, the same
    /// in every crate.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Misconfigured(_) => "misconfigured",
            Self::Corrupt(_) => "corrupt",
        }
    }

    /// Whether the fail mode decides (the backend is down), rather than a 500 under any mode.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// A corrupt-state error whose cause is `what`.
    pub fn corrupt(what: impl Into<String>) -> Self {
        Self::Corrupt(what.into().into())
    }

    /// The cause, when it is a `T` (a `redis::RedisError`, a `sqlx::Error`, a decode error…).
    pub fn cause<T: std::error::Error + 'static>(&self) -> Option<&T> {
        let (Self::Unavailable(e) | Self::Misconfigured(e) | Self::Corrupt(e)) = self;
        e.downcast_ref::<T>()
    }

    /// The answer to a request this failure refused: 503 with `Retry-After: 1` when the backend
    /// is unavailable, 500 otherwise; the request was not run.
    pub fn problem(&self, codes: &BackendCodes) -> Problem {
        let (status, code, state, detail) = match self {
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                codes.unavailable,
                "unavailable",
                "cannot be reached",
            ),
            Self::Misconfigured(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                codes.misconfigured,
                "misconfigured",
                "is misconfigured",
            ),
            Self::Corrupt(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                codes.corrupt,
                "state unreadable",
                "holds state that could not be read",
            ),
        };
        let title = format!("{} {state}", capitalized(codes.name));
        let problem = Problem::new(status, code, title).with_detail(format!(
            "the server's {} {detail}; the request was not run",
            codes.name
        ));
        match self {
            Self::Unavailable(_) => problem.with_retry_after(Duration::from_secs(1)),
            _ => problem,
        }
    }
}

pub(crate) fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}
