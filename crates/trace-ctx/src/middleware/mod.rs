//! The tower layer (feature `tower`): [`TraceContextLayer`].
mod future;
mod layer;
mod service;

pub use self::future::TraceContextFuture;
pub use self::layer::TraceContextLayer;
pub use self::service::TraceContextService;
