//! The tower integration (feature `tower`): [`OptimisticLockLayer`] and its service.
//!
//! | request | response |
//! |---|---|
//! | covered write (PUT, PATCH, DELETE) without `If-Match` / `If-None-Match`, policy requires one | 428 `precondition_required` |
//! | `If-Match` / `If-None-Match` malformed | 400 `precondition_malformed` |
//! | version source unreachable | 503 `version_source_unavailable` + `Retry-After: 1` (the handler does not run) |
//! | a precondition false (RFC 9110 §13.2.2) | 412 `precondition_failed` + the current `ETag` |
//! | GET/HEAD whose `If-None-Match` / `If-Modified-Since` says the client's copy is current | 304 + `ETag` |
//! | otherwise | the handler's response, with the request extension [`Expected`](crate::Expected); reads get `ETag` and `Last-Modified` when the handler set none |
//!
//! Other methods (POST) pass through untouched.

mod future;
mod layer;
mod service;

pub use self::future::OptimisticLockFuture;
pub use self::layer::OptimisticLockLayer;
pub use self::service::OptimisticLockService;
