//! The tower integration (feature `tower`): [`RateLimitLayer`] and its service.
//!
//! The application supplies a key extractor (header, client IP, authenticated principal) and,
//! optionally, a cost per request. A request without a key is not limited. Then:
//!
//! | outcome | response |
//! |---|---|
//! | allowed | the inner service's response + `RateLimit-Policy` + `RateLimit` |
//! | limited | 429 `rate_limited` + `Retry-After` + `RateLimit-Policy` + `RateLimit` (`r=0`) |
//! | cost larger than a quota's burst | 400 `rate_limit_cost_exceeds_burst` (it could never pass) |
//! | backend unreachable (fail-closed) | 503 `rate_limit_unavailable` + `Retry-After: 1` |
//! | backend state unreadable | 500 `rate_limit_state_corrupt` |
//!
//! The headers follow the IETF draft *RateLimit header fields for HTTP*
//! (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy` lists every quota as
//! `"name";q=<burst>;w=<seconds to refill the burst>`, and `RateLimit` reports the tightest quota
//! as `"name";r=<remaining>;t=<seconds until full>`. Bodies are RFC 9457 problem+json.

mod future;
mod layer;
mod service;

pub use self::future::RateLimitFuture;
pub use self::layer::{MetricsSnapshot, RateLimitLayer};
pub use self::service::RateLimitService;

pub use retry_safe_core::headers::{RATELIMIT, RATELIMIT_POLICY};
pub use retry_safe_core::PROBLEM_JSON;
