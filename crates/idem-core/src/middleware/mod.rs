//! The tower integration (feature `tower`): [`IdempotencyLayer`] and its service.
//!
//! For each request of a covered method that carries an `Idempotency-Key`:
//! 1. the body is buffered (up to [`max_request_bytes`](crate::IdempotencyPolicy::max_request_bytes))
//!    and fingerprinted with the method and path;
//! 2. `begin` runs on the store; the inner service runs only on `Acquired`;
//! 3. a response whose status the policy stores is buffered and `complete`d; any other outcome
//!    (5xx, an inner error, a panic, a cancelled request) `release`s the key so a retry may run.
//!
//! | outcome | response |
//! |---|---|
//! | key missing on a route that requires one, or invalid | 400 `idempotency_key_missing` / `idempotency_key_invalid` |
//! | request body over the limit | 413 `request_body_too_large` |
//! | another attempt in flight | 409 `idempotency_request_in_flight` + `Retry-After` |
//! | same key, other request | 422 `idempotency_key_reused` |
//! | already completed | the stored response, byte for byte, + `Idempotent-Replayed: true` |
//! | store unreachable, fail-closed | 503 `idempotency_store_unavailable` + `Retry-After` |
//! | the handler panicked | 500 `internal_error` (the key is released) |
//!
//! Every rejection is an RFC 9457 `application/problem+json` body; see [`Problem`](crate::Problem).
//!
//! The handler finds its [`IdempotencyAttempt`] in the request's extensions; a response marked
//! [`CompletedByHandler`] (see [`handler_completed`]) is passed through without `complete`, the
//! handler having completed the record in its own transaction.

mod body;
mod future;
mod layer;
mod service;

pub use self::body::IdempotencyBody;
pub use self::future::IdempotencyFuture;
pub use self::layer::{IdempotencyLayer, MetricsSnapshot};
pub use self::service::IdempotencyService;

pub use retry_safe_core::headers::IDEMPOTENT_REPLAYED;

pub use crate::attempt::{
    handler_completed, CompletedByHandler, IdempotencyAttempt, PendingAttempt,
};
