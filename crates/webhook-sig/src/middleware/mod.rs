//! The receiving side as a tower layer: buffer, verify, dedupe, then hand the handler the
mod future;
mod layer;
mod problem;
mod service;

pub use future::WebhookFuture;
pub use layer::EventIdFn;
pub use layer::WebhookLayer;
pub use service::{WebhookService, WEBHOOK_REPLAYED};

use crate::{Scheme, Verified};
use bytes::Bytes;

/// A verified webhook, put into the request's extensions for the handler (with axum:
/// `Extension<VerifiedWebhook>`). The request body holds the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedWebhook {
    /// The scheme it was verified under.
    pub scheme: Scheme,
    /// The event id, when the scheme sends one in a header.
    pub id: Option<String>,
    /// The signed timestamp, when the scheme has one.
    pub timestamp: Option<u64>,
    /// Which accepted secret matched (0 = the first).
    pub secret_index: usize,
    /// The raw payload, exactly as signed.
    pub payload: Bytes,
}

impl VerifiedWebhook {
    fn new(verified: Verified, payload: Bytes) -> Self {
        Self {
            scheme: verified.scheme,
            id: verified.id,
            timestamp: verified.timestamp,
            secret_index: verified.secret_index,
            payload,
        }
    }
}
