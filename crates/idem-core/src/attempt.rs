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

/// A request the handler begins itself: what the layer puts into the request's extensions
/// instead of an [`IdempotencyAttempt`] under
/// [`IdempotencyPolicy::single_commit`](crate::IdempotencyPolicy::single_commit).
///
/// The layer has read and checked the key and fingerprinted the request, but has not begun:
/// the handler runs `begin`, its own writes and `complete` in **one** transaction
/// (`idem-store-postgres`: `PostgresStore::begin_in`, then `complete_in` with
/// [`acquired`](Self::acquired)), and answers any other outcome with [`answer`](Self::answer).
/// Nothing of the request is visible to others before the commit: a concurrent duplicate waits
/// on the record's row lock (bounded by the store's lock timeout, then `409`) and then replays;
/// a rollback or a crash leaves no record behind, so a retry simply runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingAttempt {
    /// The scope the layer computed for this request.
    pub scope: String,
    /// The request's key.
    pub key: crate::IdempotencyKey,
    /// The request's fingerprint.
    pub fingerprint: crate::Fingerprint,
    /// The lease of the record while the transaction runs (it only matters to readers once
    /// committed, which is when it is already completed).
    pub lease: std::time::Duration,
    /// How long the completed response is kept (the policy's retention).
    pub retention: std::time::Duration,
}

impl PendingAttempt {
    /// A pending attempt (the layer makes them; stores' tests and custom integrations too).
    pub fn new(
        scope: impl Into<String>,
        key: crate::IdempotencyKey,
        fingerprint: crate::Fingerprint,
        lease: std::time::Duration,
        retention: std::time::Duration,
    ) -> Self {
        Self {
            scope: scope.into(),
            key,
            fingerprint,
            lease,
            retention,
        }
    }

    /// The attempt to complete once `begin` acquired the record with `fence`.
    pub fn acquired(&self, fence: crate::Fence) -> IdempotencyAttempt {
        IdempotencyAttempt {
            scope: self.scope.clone(),
            key: self.key.clone(),
            fence,
        }
    }

    /// The answer to an outcome other than `Acquired` (then `None`): the stored response again
    /// with `Idempotent-Replayed: true`, `422 idempotency_key_reused`, or `409
    /// idempotency_request_in_flight` with `Retry-After`. The transaction of such an outcome has
    /// nothing to commit: roll it back.
    pub fn answer<B: From<bytes::Bytes>>(
        &self,
        outcome: &crate::BeginOutcome,
    ) -> Option<http::Response<B>> {
        match outcome {
            crate::BeginOutcome::Acquired { .. } => None,
            crate::BeginOutcome::Completed(stored) => {
                let mut res: http::Response<B> = stored.to_response();
                res.headers_mut().insert(
                    retry_safe_core::headers::IDEMPOTENT_REPLAYED,
                    http::HeaderValue::from_static("true"),
                );
                Some(res)
            }
            crate::BeginOutcome::Mismatch => Some(key_reused().into_response()),
            crate::BeginOutcome::InFlight { retry_after } => {
                Some(in_flight(*retry_after).into_response())
            }
        }
    }
}

/// `422 idempotency_key_reused`.
pub(crate) fn key_reused() -> crate::Problem {
    crate::Problem::new(
        http::StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "Idempotency-Key reused with another request",
    )
    .with_detail("this key was already used with a different method, path or body")
}

/// `409 idempotency_request_in_flight`, come back after `hint`.
pub(crate) fn in_flight(hint: std::time::Duration) -> crate::Problem {
    crate::Problem::new(
        http::StatusCode::CONFLICT,
        "idempotency_request_in_flight",
        "A request with this Idempotency-Key is in progress",
    )
    .with_detail("retry after the original request has finished")
    .with_retry_after_ms(hint)
}
