//! The tower integration (feature `tower`): [`SafeRetryLayer`] around any client
//! `Service<http::Request<B>>` (hyper-util's client, a tonic channel, an axum router in tests), and
//! [`GrpcRetryLayer`] for clients whose request body cannot be made from bytes.

mod grpc;
mod layer;

pub use grpc::{GrpcRetryLayer, GrpcRetryService, ToTransport};
pub use layer::{SafeRetryLayer, SafeRetryService};
