//! RFC 9457 problem bodies of the webhook layer.

use crate::VerifyError;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// The media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem response: `type` is `urn:problem-type:<code>`, and `code` is repeated as a member.
pub(crate) fn response<B: From<Bytes>>(
    status: StatusCode,
    code: &str,
    title: &str,
    detail: &str,
    retry_after_secs: Option<u64>,
) -> Response<B> {
    let body = serde_json::json!({
        "type": format!("urn:problem-type:{code}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
    })
    .to_string();
    let mut res = Response::new(B::from(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if let Some(secs) = retry_after_secs {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    res
}

/// The response for a refused webhook. The detail names what failed, never the secret, the
/// expected signature or the body.
pub(crate) fn refused<B: From<Bytes>>(error: &VerifyError) -> Response<B> {
    let detail = error.to_string();
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
            Some(*retry_after_secs),
        ),
        VerifyError::ReplayStoreUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook_replay_store_unavailable",
            "Webhook replay store unavailable",
            Some(1),
        ),
    };
    response(status, code, title, &detail, retry)
}
