//! The attempt a handler runs under, and the transactional completion handshake.

/// The attempt a handler runs under, put into the request's extensions by the layer (with axum:
/// `Extension<IdempotencyAttempt>`).
///
/// A handler that writes to the same database as the store can complete the record itself, in
/// its own transaction, so that its writes and the record commit or roll back together (see
/// `idem-store-postgres`'s transactional mode); it then answers with
/// [`handler_completed`] so the layer does not complete the record again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyAttempt {
    /// The scope the layer computed for this request.
    pub scope: String,
    /// The request's key.
    pub key: crate::IdempotencyKey,
    /// The fence of this attempt's lease.
    pub fence: crate::Fence,
}

/// Response marker: the handler completed the record itself (see [`IdempotencyAttempt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedByHandler;

/// The response of `stored` (status, headers, body), marked [`CompletedByHandler`]: what a handler
/// returns after completing the record with `stored` in its own transaction. Headers that are not
/// valid HTTP are skipped.
pub fn handler_completed<B: From<bytes::Bytes>>(
    stored: &crate::StoredResponse,
) -> http::Response<B> {
    let mut res = stored.to_response();
    if http::StatusCode::from_u16(stored.status).is_err() {
        *res.status_mut() = http::StatusCode::OK;
    }
    res.extensions_mut().insert(CompletedByHandler);
    res
}
