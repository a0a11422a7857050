//! Replay protection beyond the timestamp window: each event id is processed at most once.
//!
//! The guard keeps one record per event id in any [`IdempotencyStore`] (the in-memory store, or
//! the Redis and PostgreSQL ones for a fleet). [`ReplayGuard::begin`] claims the id; the
//! [`ReplayTicket`] it returns is settled with [`ReplayTicket::processed`] (the id is then refused
//! for the retention) or [`ReplayTicket::failed`] (the sender's retry may run). A ticket dropped
//! unsettled — the handler panicked or the request was cancelled — releases the id in the
//! background, and failing that the lease runs out.

use crate::VerifyError;
use bytes::Bytes;
use idem_core::{
    BeginOutcome, Fence, Fingerprint, IdempotencyKey, IdempotencyStore, StoreError, StoredResponse,
};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// How long a processed event id is remembered by default: 3 days, longer than the retry
/// schedules of the common senders.
pub(crate) const DEFAULT_RETENTION: Duration = Duration::from_secs(3 * 24 * 3600);
/// How long a claim lasts when its holder disappears, by default.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// Refuses event ids that were processed before.
///
/// ```
/// use idem_core::MemoryStore;
/// use webhook_sig::{ReplayGuard, VerifyError};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let guard = ReplayGuard::new(MemoryStore::new());
/// let ticket = guard.begin("evt_1", b"{}").await.unwrap();
/// ticket.processed().await.unwrap();
/// assert_eq!(guard.begin("evt_1", b"{}").await.unwrap_err(), VerifyError::Replayed);
/// # });
/// ```
pub struct ReplayGuard<S> {
    store: Arc<S>,
    scope: Arc<str>,
    lease: Duration,
    retention: Duration,
}

impl<S> Clone for ReplayGuard<S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            scope: self.scope.clone(),
            lease: self.lease,
            retention: self.retention,
        }
    }
}

impl<S> std::fmt::Debug for ReplayGuard<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayGuard")
            .field("scope", &self.scope)
            .field("lease", &self.lease)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl<S: IdempotencyStore> ReplayGuard<S> {
    /// A guard over `store`, in the scope `webhook`, with the default lease and retention.
    pub fn new(store: S) -> Self {
        Self::shared(Arc::new(store))
    }

    /// A guard over a store shared with other users (give each its own [`scope`](Self::scope)).
    pub fn shared(store: Arc<S>) -> Self {
        Self {
            store,
            scope: Arc::from("webhook"),
            lease: DEFAULT_LEASE,
            retention: DEFAULT_RETENTION,
        }
    }

    /// The store scope of this guard's records, e.g. one per sender, so ids of two senders never
    /// meet and never meet idempotency keys of the API.
    pub fn scope(mut self, scope: &str) -> Self {
        self.scope = Arc::from(format!("webhook:{scope}"));
        self
    }

    /// How long a claim lasts if its holder vanishes without settling it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a processed id is refused.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Claims `event_id` carrying `payload`.
    ///
    /// Errors: [`VerifyError::Replayed`] when the id was processed before (or is claimed with
    /// another payload), [`VerifyError::InFlight`] while another delivery of it is being processed,
    /// [`VerifyError::ReplayStoreUnavailable`] when the store fails.
    pub async fn begin(
        &self,
        event_id: &str,
        payload: &[u8],
    ) -> Result<ReplayTicket<S>, VerifyError> {
        match self.claim(event_id, payload).await? {
            Claim::New(ticket) => Ok(ticket),
            Claim::Processed(_) => Err(VerifyError::Replayed),
        }
    }

    /// Claims `event_id` carrying `payload`, or hands back the response recorded when the same
    /// event was processed (see [`ReplayTicket::processed_with`]), so a duplicate delivery can be
    /// acknowledged with the first processing's answer and nothing runs twice.
    ///
    /// Errors: [`VerifyError::Replayed`] when the id was claimed with another payload,
    /// [`VerifyError::InFlight`] while another delivery of it is being processed,
    /// [`VerifyError::ReplayStoreUnavailable`] when the store fails.
    pub async fn claim(&self, event_id: &str, payload: &[u8]) -> Result<Claim<S>, VerifyError> {
        let key = key_of(event_id);
        let fingerprint = Fingerprint::of_request("WEBHOOK", "", payload);
        match self
            .store
            .begin(&self.scope, &key, &fingerprint, self.lease)
            .await
        {
            Ok(BeginOutcome::Acquired { fence }) => Ok(Claim::New(ReplayTicket {
                guard: self.clone(),
                key,
                fence,
                armed: true,
            })),
            Ok(BeginOutcome::Completed(first)) => Ok(Claim::Processed(first)),
            Ok(BeginOutcome::Mismatch) => Err(VerifyError::Replayed),
            Ok(BeginOutcome::InFlight { retry_after }) => Err(VerifyError::InFlight {
                retry_after_secs: retry_safe_core::retry_after_secs(retry_after),
            }),
            // An outcome this version does not know: do not process the event.
            Ok(_) | Err(_) => Err(VerifyError::ReplayStoreUnavailable),
        }
    }
}

/// The store key of an event id: the id itself when it is a valid key (1–255 visible ASCII),
/// otherwise `sha256:` and the hex SHA-256 of the id.
fn key_of(event_id: &str) -> IdempotencyKey {
    if !event_id.starts_with('"') {
        if let Ok(key) = IdempotencyKey::parse(event_id.as_bytes()) {
            return key;
        }
    }
    let digest = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(event_id.as_bytes()))
    );
    match IdempotencyKey::parse(digest.as_bytes()) {
        Ok(key) => key,
        Err(_) => unreachable!("71 visible ASCII characters make a valid key"),
    }
}

/// What [`ReplayGuard::claim`] found.
#[derive(Debug)]
#[non_exhaustive]
pub enum Claim<S: IdempotencyStore> {
    /// The id is new: handle the event, then settle the ticket.
    New(ReplayTicket<S>),
    /// The event was processed before; this is the response recorded then.
    Processed(StoredResponse),
}

/// A claimed event id, to be settled once the event has been handled.
#[must_use = "settle the ticket with `processed` or `failed`; dropping it releases the event id"]
pub struct ReplayTicket<S: IdempotencyStore> {
    guard: ReplayGuard<S>,
    key: IdempotencyKey,
    fence: Fence,
    armed: bool,
}

impl<S: IdempotencyStore> std::fmt::Debug for ReplayTicket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayTicket")
            .field("key", &self.key)
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

impl<S: IdempotencyStore> ReplayTicket<S> {
    /// The event was handled: refuse its id for the retention.
    ///
    /// `Err(StoreError::StaleFence)` means the claim ran out (the lease was shorter than the
    /// handling) and another delivery may have been processed too: make the lease longer.
    pub async fn processed(self) -> Result<(), StoreError> {
        let marker = StoredResponse {
            status: 200,
            headers: Vec::new(),
            body: Bytes::new(),
            trailers: Vec::new(),
        };
        self.processed_with(&marker).await
    }

    /// The event was handled with `response`: refuse its id for the retention, and give
    /// `response` to its duplicates ([`ReplayGuard::claim`]).
    ///
    /// # Errors
    /// As [`processed`](Self::processed).
    pub async fn processed_with(mut self, response: &StoredResponse) -> Result<(), StoreError> {
        self.armed = false;
        let g = &self.guard;
        g.store
            .complete(&g.scope, &self.key, self.fence, response, g.retention)
            .await
    }

    /// The event was not handled: free the id so the sender's retry runs.
    pub async fn failed(mut self) -> Result<(), StoreError> {
        self.armed = false;
        let g = &self.guard;
        g.store.release(&g.scope, &self.key, self.fence).await
    }
}

impl<S: IdempotencyStore> Drop for ReplayTicket<S> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Without a runtime the claim frees when its lease runs out.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (guard, key, fence) = (self.guard.clone(), self.key.clone(), self.fence);
            handle.spawn(async move {
                let _ = guard.store.release(&guard.scope, &key, fence).await;
            });
        }
    }
}
