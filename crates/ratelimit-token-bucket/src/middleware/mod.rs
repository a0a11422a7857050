//! The tower integration (feature `tower`): [`KeyedRateLimitLayer`] and its service.
mod future;
mod layer;
mod service;

pub use self::future::KeyedRateLimitFuture;
pub use self::layer::{KeyedRateLimitLayer, MetricsSnapshot};
pub use self::service::KeyedRateLimitService;

pub use retry_safe_core::headers::{RATELIMIT, RATELIMIT_POLICY};
