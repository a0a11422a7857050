//! Conditional requests: the preconditions of a request and their evaluation in the order of
//! RFC 9110 §13.2.2, as plain code over the current state of the target resource.

use crate::etag::{ETagError, TagList};
use crate::Version;
use http::{header, HeaderMap, Method};
use std::time::SystemTime;

/// The current state of the target resource, as a [`VersionSource`](crate::VersionSource) reports
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Current {
    /// Its version (rendered as the strong `ETag`).
    pub version: Version,
    /// Its last modification, for `If-Unmodified-Since` / `If-Modified-Since` and the
    /// `Last-Modified` header (whole seconds are compared, as HTTP dates carry no more).
    pub last_modified: Option<SystemTime>,
}

impl Current {
    /// A current state with no modification date.
    pub fn new(version: Version) -> Self {
        Self {
            version,
            last_modified: None,
        }
    }

    /// The same, modified last at `at`.
    pub fn modified_at(mut self, at: SystemTime) -> Self {
        self.last_modified = Some(at);
        self
    }
}

/// What the write must expect to find, handed to the handler as a request extension: the write
/// itself is a compare-and-set on it, so no other write can slip between the check and the write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expected {
    /// The request was conditional and the resource was at this version when it was checked:
    /// write only if it still is (`UPDATE … WHERE version = $expected`).
    Version(Version),
    /// The request was conditional on the resource not existing (`If-None-Match: *`, create-only):
    /// write only if it still does not (`INSERT … ON CONFLICT DO NOTHING`).
    Absent,
    /// The request carried no precondition (allowed by the policy): the write is unconditional.
    Unconditional,
}

/// The preconditions a request carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Conditions {
    /// `If-Match`.
    pub if_match: Option<TagList>,
    /// `If-None-Match`.
    pub if_none_match: Option<TagList>,
    /// `If-Unmodified-Since`, when it is one valid HTTP-date.
    pub if_unmodified_since: Option<SystemTime>,
    /// `If-Modified-Since`, when it is one valid HTTP-date.
    pub if_modified_since: Option<SystemTime>,
}

/// A precondition header that cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PreconditionError {
    /// `If-Match` is malformed.
    #[error("If-Match: {0}")]
    IfMatch(#[source] ETagError),
    /// `If-None-Match` is malformed.
    #[error("If-None-Match: {0}")]
    IfNoneMatch(#[source] ETagError),
}

/// A date field: `None` unless it is exactly one valid HTTP-date (RFC 9110 §13.1.3, §13.1.4:
/// anything else is ignored).
fn date(headers: &HeaderMap, name: &http::HeaderName) -> Option<SystemTime> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()
}

impl Conditions {
    /// Reads the four precondition fields. Malformed entity-tag lists are errors (answered 400);
    /// invalid dates are ignored, as RFC 9110 requires.
    ///
    /// # Errors
    /// [`PreconditionError`] for a malformed `If-Match` or `If-None-Match`.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, PreconditionError> {
        Ok(Self {
            if_match: TagList::from_headers(headers, &header::IF_MATCH)
                .map_err(PreconditionError::IfMatch)?,
            if_none_match: TagList::from_headers(headers, &header::IF_NONE_MATCH)
                .map_err(PreconditionError::IfNoneMatch)?,
            if_unmodified_since: date(headers, &header::IF_UNMODIFIED_SINCE),
            if_modified_since: date(headers, &header::IF_MODIFIED_SINCE),
        })
    }

    /// Whether the request is conditional on an entity tag (`If-Match` or `If-None-Match`), which
    /// is what a policy that requires preconditions asks for: a date alone has one-second
    /// resolution and cannot tell two writes within a second apart.
    pub fn has_etag_condition(&self) -> bool {
        self.if_match.is_some() || self.if_none_match.is_some()
    }

    /// Whether any precondition is present.
    pub fn is_conditional(&self) -> bool {
        self.has_etag_condition()
            || self.if_unmodified_since.is_some()
            || self.if_modified_since.is_some()
    }
}

/// The result of evaluating a request's preconditions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Evaluation {
    /// Perform the method; the write must expect this.
    Proceed(Expected),
    /// `304 Not Modified` (GET/HEAD whose cached representation is current).
    NotModified,
    /// `412 Precondition Failed`.
    Failed,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Evaluates `conditions` for `method` on a target whose current state is `current` (`None`: it
/// has no current representation), in the order of RFC 9110 §13.2.2:
///
/// 1. `If-Match` present: false → 412;
/// 2. else `If-Unmodified-Since` present (and the resource has a date): false → 412;
/// 3. `If-None-Match` present: false → 304 for GET/HEAD, else 412;
/// 4. else, for GET/HEAD, `If-Modified-Since` present (and a date): false → 304;
/// 5. perform the method.
///
/// ```
/// use optimistic_lock::{evaluate, Conditions, Current, Evaluation, Expected, TagList, Version};
/// use http::Method;
///
/// let current = Current::new(Version::number(3));
/// let mut stale = Conditions::default();
/// stale.if_match = Some(TagList::parse("\"2\"").unwrap());
/// assert_eq!(evaluate(&Method::PATCH, &stale, Some(&current)), Evaluation::Failed);
///
/// let mut fresh = Conditions::default();
/// fresh.if_match = Some(TagList::parse("\"3\"").unwrap());
/// assert_eq!(
///     evaluate(&Method::PATCH, &fresh, Some(&current)),
///     Evaluation::Proceed(Expected::Version(Version::number(3)))
/// );
/// ```
pub fn evaluate(method: &Method, conditions: &Conditions, current: Option<&Current>) -> Evaluation {
    let etag = current.map(|c| c.version.etag());
    let modified = current.and_then(|c| c.last_modified).map(secs);
    let safe = *method == Method::GET || *method == Method::HEAD;

    // Step 1 and 2.
    if let Some(list) = &conditions.if_match {
        if !list.matches_strong(etag) {
            return Evaluation::Failed;
        }
    } else if let (Some(since), Some(modified)) = (conditions.if_unmodified_since, modified) {
        if modified > secs(since) {
            return Evaluation::Failed;
        }
    }
    // Step 3 and 4.
    if let Some(list) = &conditions.if_none_match {
        if list.matches_weak(etag) {
            return if safe {
                Evaluation::NotModified
            } else {
                Evaluation::Failed
            };
        }
    } else if safe {
        if let (Some(since), Some(modified)) = (conditions.if_modified_since, modified) {
            if modified <= secs(since) {
                return Evaluation::NotModified;
            }
        }
    }
    let conditional = conditions.if_match.is_some()
        || conditions.if_none_match.is_some()
        || conditions.if_unmodified_since.is_some();
    Evaluation::Proceed(match (conditional, current) {
        (false, _) => Expected::Unconditional,
        (true, Some(c)) => Expected::Version(c.version.clone()),
        (true, None) => Expected::Absent,
    })
}
