//! The tower integration (feature `tower`): [`IdempotencyLayer`] and its service.
mod body;
mod future;
mod layer;
mod service;

pub use self::body::IdempotencyBody;
pub use self::future::IdempotencyFuture;
pub use self::layer::{IdempotencyLayer, MetricsSnapshot};
pub use self::service::IdempotencyService;

pub use retry_safe_core::headers::IDEMPOTENT_REPLAYED;
