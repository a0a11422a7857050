//! Why a webhook was refused.

/// A verification failure. None of the variants carries a secret or an expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A header the scheme requires is absent.
    #[error("the `{0}` header is missing")]
    MissingHeader(&'static str),
    /// A header is present but does not follow the scheme's grammar.
    #[error("the `{0}` header is malformed")]
    MalformedHeader(&'static str),
    /// The timestamp is not a whole number of seconds since the Unix epoch.
    #[error("the webhook timestamp is not a Unix time in seconds")]
    InvalidTimestamp,
    /// The timestamp is further in the past than the tolerance.
    #[error("the webhook timestamp is {age_secs} s old, more than the tolerance allows")]
    TooOld {
        /// How far in the past it is.
        age_secs: u64,
    },
    /// The timestamp is further in the future than the tolerance.
    #[error(
        "the webhook timestamp is {ahead_secs} s in the future, more than the tolerance allows"
    )]
    TooNew {
        /// How far in the future it is.
        ahead_secs: u64,
    },
    /// No signature in the header matches the payload under any accepted secret.
    #[error("no signature matches the payload")]
    NoMatchingSignature,
    /// No signature matches, and a secret was read for another scheme than the verifier's (for
    /// example a Stripe `whsec_…` secret loaded with `Secret::from_standard`, which decodes it
    /// as base64): fix the configuration with `Secret::for_scheme`.
    #[error(
        "no signature matches, and a secret was loaded for another scheme (use Secret::for_scheme)"
    )]
    SecretSchemeMismatch,
    /// The event id was already processed (or carried another payload before).
    #[error("the webhook event was already received")]
    Replayed,
    /// The event id is being processed by another delivery right now.
    #[error(
        "the webhook event is being processed by another delivery; retry in {retry_after_secs} s"
    )]
    InFlight {
        /// Seconds (rounded up) until the other delivery's claim runs out.
        retry_after_secs: u64,
    },
    /// The replay store could not be reached; the event was not processed.
    #[error("the webhook replay store is unavailable")]
    ReplayStoreUnavailable,
}
