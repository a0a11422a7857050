//! RFC 9457 problem bodies of the webhook layer.

use crate::VerifyError;
use bytes::Bytes;
use http::{Response, StatusCode};
use retry_safe_core::Problem;
use std::time::Duration;

/// The response for a refused webhook. The detail names what failed, never the secret, the
/// expected signature or the body.
pub(crate) fn refused<B: From<Bytes>>(error: &VerifyError) -> Response<B> {
    // The sender is not told about this server's configuration.
    let detail = match error {
        VerifyError::SecretSchemeMismatch => VerifyError::NoMatchingSignature.to_string(),
        other => other.to_string(),
    };
    let (status, code, title, retry) = match error {
        VerifyError::MissingHeader(_) => (
            StatusCode::UNAUTHORIZED,
            "webhook_signature_missing",
            "Webhook signature missing",
            None,
        ),
        VerifyError::MalformedHeader(_) => (
            StatusCode::UNAUTHORIZED,
            "webhook_signature_malformed",
            "Webhook signature header malformed",
            None,
        ),
        VerifyError::InvalidTimestamp => (
            StatusCode::UNAUTHORIZED,
            "webhook_timestamp_invalid",
            "Webhook timestamp invalid",
            None,
        ),
        VerifyError::TooOld { .. } => (
            StatusCode::UNAUTHORIZED,
            "webhook_timestamp_too_old",
            "Webhook timestamp outside the tolerance",
            None,
        ),
        VerifyError::TooNew { .. } => (
            StatusCode::UNAUTHORIZED,
            "webhook_timestamp_too_new",
            "Webhook timestamp outside the tolerance",
            None,
        ),
        VerifyError::SecretSchemeMismatch => {
            tracing::error!("webhook secret loaded for another scheme; every delivery will fail");
            (
                StatusCode::UNAUTHORIZED,
                "webhook_signature_invalid",
                "Webhook signature invalid",
                None,
            )
        }
        VerifyError::NoMatchingSignature => (
            StatusCode::UNAUTHORIZED,
            "webhook_signature_invalid",
            "Webhook signature invalid",
            None,
        ),
        VerifyError::Replayed => (
            StatusCode::CONFLICT,
            "webhook_replayed",
            "Webhook already received",
            None,
        ),
        VerifyError::InFlight { retry_after_secs } => (
            StatusCode::CONFLICT,
            "webhook_in_flight",
            "Webhook being processed",
            // Short: the first delivery usually finishes in milliseconds.
            Some((*retry_after_secs).min(1)),
        ),
        VerifyError::ReplayStoreUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook_replay_store_unavailable",
            "Webhook replay store unavailable",
            Some(1),
        ),
    };
    super::service::record("rejected", code);
    let problem = Problem::new(status, code, title).with_detail(detail);
    match retry {
        Some(secs) => problem.with_retry_after(Duration::from_secs(secs)),
        None => problem,
    }
    .into_response()
}
