//! The tower integration (feature `tower`): [`OptimisticLockLayer`] and its service.
mod future;
mod layer;
mod service;

pub use self::future::OptimisticLockFuture;
pub use self::layer::OptimisticLockLayer;
pub use self::service::OptimisticLockService;
