//! The store contract: one record per (scope, key), driven by three atomic operations.
#![cfg_attr(
    feature = "conformance",
    doc = "[conformance suite]: crate::conformance"
)]
#![cfg_attr(
    not(feature = "conformance"),
    doc = "[conformance suite]: crate#features"
)]

use crate::{Fingerprint, IdempotencyKey};
use async_trait::async_trait;
use bytes::Bytes;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use retry_safe_core::TimeOffset;
pub use retry_safe_core::{BackendError, BoxError};

/// The lease token of one attempt: larger means later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fence(pub u64);

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What `begin` found, and so what the caller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BeginOutcome {
    /// A new attempt holds the lease: run the handler, then `complete` or `release` with `fence`.
    Acquired {
        /// The token that `complete` and `release` must present.
        fence: Fence,
    },
    /// Another attempt holds a live lease; it runs out after `retry_after`.
    InFlight {
        /// Time left on the other attempt's lease.
        retry_after: Duration,
    },
    /// The request already completed: replay this response.
    Completed(StoredResponse),
    /// The key is bound to another request (other method, path or body).
    Mismatch,
}

/// A response kept for replay: status, the kept headers, the body byte for byte, and the
/// trailers (a gRPC response's `grpc-status` is one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status code.
    pub status: u16,
    /// Kept headers in order, names in lowercase; values are raw bytes.
    pub headers: Vec<(String, Bytes)>,
    /// The body.
    pub body: Bytes,
    /// Trailers in order, names in lowercase (empty for most HTTP responses; records written
    /// before trailers were kept read back with none).
    pub trailers: Vec<(String, Bytes)>,
}

/// Faults of a store. Normal outcomes are [`BeginOutcome`]s, not errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed: unavailable (the operation may or may not have happened; the fail
    /// mode decides), misconfigured, or holding a record this release cannot read
    /// ([`DecodeError`] as its cause).
    #[error("the idempotency store failed")]
    Backend(#[from] BackendError),
    /// The fence does not hold a live lease on the record (it expired, was taken over, released
    /// or completed).
    #[error("fence {fence} no longer holds the lease")]
    StaleFence {
        /// The fence that was presented.
        fence: Fence,
    },
    /// The store holds as many records (or bytes) as it is allowed to and none has expired.
    #[error("the idempotency store is full")]
    CapacityExceeded,
    /// This scope (tenant) holds its whole share of the store: its new keys are refused while
    /// other scopes keep working.
    #[error("this scope's share of the idempotency store is used up")]
    ScopeFull,
    /// `complete` stored the response on the primary, but fewer replicas than required
    /// acknowledged it in time: a failover before they catch up could lose the record (and a
    /// retry then run again).
    #[error("the completed record reached {acknowledged} of {wanted} replicas in time")]
    Unreplicated {
        /// Replicas that acknowledged the write.
        acknowledged: u32,
        /// Replicas required.
        wanted: u32,
    },
}

impl From<DecodeError> for StoreError {
    fn from(e: DecodeError) -> Self {
        Self::Backend(BackendError::Corrupt(Box::new(e)))
    }
}

impl StoreError {
    /// A [`BackendError::Unavailable`] caused by `e`.
    pub fn unavailable(e: impl Into<BoxError>) -> Self {
        Self::Backend(BackendError::Unavailable(e.into()))
    }

    /// Whether this is a backend outage (the case the fail mode decides).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Backend(e) if e.is_unavailable())
    }

    /// The [`DecodeError`] of an unreadable record.
    pub fn decode_error(&self) -> Option<&DecodeError> {
        match self {
            Self::Backend(e) => e.cause::<DecodeError>(),
            _ => None,
        }
    }
}

/// The store contract: `begin`, `complete`, `release`, `purge_expired`.
///
/// Each method is one atomic operation of the backend. Time (leases, retention) is the store's
/// own: the in-memory store reads its injected [`Clock`](crate::Clock), server stores read the
/// server's clock, so clock skew between application servers cannot break leases.
///
/// The store contract: one record per (scope, key), driven by three atomic operations.
///
/// | call | on no record / a record whose lease ran out | on an in-flight record | on a completed record |
/// |---|---|---|---|
/// | `begin` same fingerprint | `Acquired { fence }` (new, larger fence) | `InFlight { retry_after }` | `Completed(response)` |
/// | `begin` other fingerprint | `Acquired { fence }` | `Mismatch` | `Mismatch` |
/// | `complete(fence)` | `Err(StaleFence)` | stores the response if `fence` holds a live lease | `Err(StaleFence)` |
/// | `release(fence)` | `Err(StaleFence)` | deletes the record if `fence` holds a live lease | `Err(StaleFence)` |
///
/// Rules every store keeps (the [conformance suite] checks them):
/// - `begin` is one atomic step: of any number of concurrent callers, at most one gets `Acquired`.
/// - Fences of one (scope, key) strictly increase over the store's life, also across releases
///   and takeovers, so a holder that lost its lease can never write over its successor.
/// - A lease that ran out is lost, whether or not someone took over: `complete` and `release`
///   with it fail with [`StoreError::StaleFence`].
/// - A completed record is kept for the retention given to `complete`, then it is as if absent.
/// - Scopes never meet: equal keys in two scopes are two records.
///
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Looks up `(scope, key)` and, when nothing live holds it, takes a lease of `lease` on it.
    async fn begin(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Result<BeginOutcome, StoreError>;

    /// The same [`begin`](IdempotencyStore::begin) when it needs no I/O (the in-memory store
    /// answers in place), so the layer boxes no future for it; `None` (the default) when it must
    /// be awaited through `begin`.
    fn begin_now(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Option<Result<BeginOutcome, StoreError>> {
        let _ = (scope, key, fingerprint, lease);
        None
    }

    /// Stores `response` as the result of the attempt holding `fence`, kept for `retention`.
    async fn complete(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
        response: &StoredResponse,
        retention: Duration,
    ) -> Result<(), StoreError>;

    /// The same [`complete`](IdempotencyStore::complete) when it needs no I/O; `None` (the
    /// default) when it must be awaited through `complete`.
    fn complete_now(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
        response: &StoredResponse,
        retention: Duration,
    ) -> Option<Result<(), StoreError>> {
        let _ = (scope, key, fence, response, retention);
        None
    }

    /// Drops the record of the attempt holding `fence`, so a retry can run.
    async fn release(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
    ) -> Result<(), StoreError>;

    /// Extends the live lease held by `fence` to `lease` from now (the heartbeat of a running
    /// attempt). [`StoreError::StaleFence`] when `fence` no longer holds a live lease (it ran out,
    /// was taken over, released or completed): the attempt has lost the key.
    async fn renew(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
        lease: Duration,
    ) -> Result<(), StoreError>;

    /// Deletes expired records; returns how many. Stores that expire records by themselves
    /// (key TTLs) keep the default, which does nothing.
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

#[async_trait]
impl<S: IdempotencyStore + ?Sized> IdempotencyStore for Arc<S> {
    async fn begin(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Result<BeginOutcome, StoreError> {
        (**self).begin(scope, key, fingerprint, lease).await
    }
    fn begin_now(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Option<Result<BeginOutcome, StoreError>> {
        (**self).begin_now(scope, key, fingerprint, lease)
    }
    async fn complete(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
        response: &StoredResponse,
        retention: Duration,
    ) -> Result<(), StoreError> {
        (**self)
            .complete(scope, key, fence, response, retention)
            .await
    }
    fn complete_now(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
        response: &StoredResponse,
        retention: Duration,
    ) -> Option<Result<(), StoreError>> {
        (**self).complete_now(scope, key, fence, response, retention)
    }
    async fn release(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
    ) -> Result<(), StoreError> {
        (**self).release(scope, key, fence).await
    }
    async fn renew(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
        lease: Duration,
    ) -> Result<(), StoreError> {
        (**self).renew(scope, key, fence, lease).await
    }
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        (**self).purge_expired().await
    }
}

/// Why stored bytes are not a [`StoredResponse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes end before the structure does.
    #[error("the stored response is truncated")]
    Truncated,
    /// The format version is one this build does not know (written by a newer release).
    #[error("the stored response has format version {0}, this build reads version {v}", v = StoredResponse::FORMAT_VERSION)]
    UnknownVersion(u8),
    /// A field holds a value no encoder writes (a status outside 100–999, a header name that is
    /// not UTF-8, bytes after the end).
    #[error("the stored response is malformed: {0}")]
    Malformed(&'static str),
}

impl StoredResponse {
    /// One header or trailer as a record keeps it: the lowercase name and the raw value.
    pub fn field(name: &http::HeaderName, value: &http::HeaderValue) -> (String, Bytes) {
        (
            name.as_str().to_owned(),
            Bytes::copy_from_slice(value.as_bytes()),
        )
    }

    /// Every field of `map` as a record keeps them, in order.
    pub fn fields_of(map: &http::HeaderMap) -> Vec<(String, Bytes)> {
        map.iter().map(|(n, v)| Self::field(n, v)).collect()
    }

    /// The newest format version: the one [`encode`](Self::encode) writes for a response with
    /// trailers. A response without trailers is written in version 1, which earlier releases read.
    pub const FORMAT_VERSION: u8 = 2;

    /// The response again: status (500 if it is not a valid status), the stored headers (those
    /// that are not valid HTTP skipped) and the body — what a replay sends.
    pub fn to_response<B: From<Bytes>>(&self) -> http::Response<B> {
        let mut res = http::Response::new(B::from(self.body.clone()));
        *res.status_mut() = http::StatusCode::from_u16(self.status)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        for (name, value) in &self.headers {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_maybe_shared(value.clone()),
            ) {
                res.headers_mut().append(name, value);
            }
        }
        res
    }

    /// The trailers as a header map (those that are not valid HTTP skipped); `None` when there
    /// are none.
    pub fn trailer_map(&self) -> Option<http::HeaderMap> {
        if self.trailers.is_empty() {
            return None;
        }
        let mut map = http::HeaderMap::with_capacity(self.trailers.len());
        for (name, value) in &self.trailers {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_maybe_shared(value.clone()),
            ) {
                map.append(name, value);
            }
        }
        Some(map)
    }

    /// The total size of status, headers, body and trailers, used for size caps.
    pub fn size(&self) -> usize {
        let fields =
            |f: &[(String, Bytes)]| f.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();
        2 + fields(&self.headers) + self.body.len() + fields(&self.trailers)
    }

    /// A compact, versioned binary form for server stores. Version 1 (no trailers):
    /// `1 u8 | status u16 | fields | body`; version 2: `2 u8 | status u16 | fields (headers) |
    /// fields (trailers) | body`, where `fields` is `count u16 | (name_len u16, name, value_len
    /// u32, value)*`. All integers big-endian. Counts and lengths beyond their width are not
    /// representable and are cut off by callers' size caps long before.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(7 + self.size() + 6 * (self.headers.len() + self.trailers.len()));
        out.push(if self.trailers.is_empty() { 1 } else { 2 });
        out.extend_from_slice(&self.status.to_be_bytes());
        put_fields(&mut out, &self.headers);
        if !self.trailers.is_empty() {
            put_fields(&mut out, &self.trailers);
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// Reads the form written by [`encode`](Self::encode). Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        let version = r.take(1)?[0];
        if !(1..=Self::FORMAT_VERSION).contains(&version) {
            return Err(DecodeError::UnknownVersion(version));
        }
        let status = r.u16()?;
        if !(100..=999).contains(&status) {
            return Err(DecodeError::Malformed("status outside 100-999"));
        }
        let headers = r.fields()?;
        let trailers = if version >= 2 {
            r.fields()?
        } else {
            Vec::new()
        };
        Ok(Self {
            status,
            headers,
            body: Bytes::copy_from_slice(r.0),
            trailers,
        })
    }
}

fn put_fields(out: &mut Vec<u8>, fields: &[(String, Bytes)]) {
    let count = fields.len().min(u16::MAX as usize);
    out.extend_from_slice(&(count as u16).to_be_bytes());
    for (name, value) in fields.iter().take(count) {
        let name = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name);
        let value = &value[..value.len().min(u32::MAX as usize)];
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn fields(&mut self) -> Result<Vec<(String, Bytes)>, DecodeError> {
        let count = self.u16()? as usize;
        let mut fields = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            let len = self.u16()? as usize;
            let name = std::str::from_utf8(self.take(len)?)
                .map_err(|_| DecodeError::Malformed("field name is not UTF-8"))?
                .to_owned();
            let len = self.u32()? as usize;
            fields.push((name, Bytes::copy_from_slice(self.take(len)?)));
        }
        Ok(fields)
    }
}
