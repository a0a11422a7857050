//! The tower layer (feature `tower`): [`PriorityShedLayer`].
mod future;
mod layer;
mod service;

pub use self::future::PriorityShedFuture;
pub use self::layer::PriorityShedLayer;
pub use self::service::PriorityShedService;
