//! The consumer half on an idempotency store (memory, Redis, Redis Cluster): the message id as
//! the idempotency key.

use idem_core::{
    BeginOutcome, Fingerprint, IdempotencyKey, IdempotencyStore, StoreError, StoredResponse,
};
use std::time::Duration;

pub use crate::inbox_outcome::Handled;

/// A message could not be handled: do not acknowledge it (the broker redelivers it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreInboxError<E> {
    /// The message id is not usable as a key (empty, over 255 bytes, or not visible ASCII).
    #[error("the message id is not a valid key")]
    BadMessageId,
    /// Another delivery of this message id is running its effect now (another consumer
    /// instance): redeliver after `retry_after`.
    #[error("another delivery of this message is being handled")]
    InFlight {
        /// Time left on the other delivery's lease.
        retry_after: Duration,
    },
    /// The store failed.
    #[error("the inbox's store failed")]
    Store(#[source] StoreError),
    /// The effect failed; the message id is free again, so the redelivery runs it.
    #[error("the message's handler failed")]
    Handler(#[source] E),
}

/// The inbox of one consumer on an idempotency store: `begin` with the message id as the key
/// (the consumer's name as the scope) takes a lease, the effect runs, `complete` records it for
/// the retention. A redelivery after that runs nothing ([`Handled::Duplicate`]); one while the
/// first still runs is refused ([`StoreInboxError::InFlight`]); a failed effect releases the
/// key for the redelivery.
///
/// **Where this stops**: the effect and the record are two writes. A consumer that dies after
/// its effect and before `complete` leaves the lease to run out, and the redelivery runs the
/// effect again: the effect must itself be idempotent (a write keyed by the message id) for
/// exactly once. With PostgreSQL, `PgInbox` (feature `postgres`) commits the
/// effect and the record in one transaction and has no such gap.
///
/// ```
/// use idem_core::MemoryStore;
/// use outbox::{Handled, StoreInbox};
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let inbox = StoreInbox::new(MemoryStore::new(), "read-model");
/// let first = inbox.handle("evt_1", async || Ok::<_, std::io::Error>(1)).await.unwrap();
/// let again = inbox.handle("evt_1", async || Ok::<_, std::io::Error>(2)).await.unwrap();
/// assert_eq!((first, again), (Handled::Applied(1), Handled::Duplicate));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct StoreInbox<S> {
    store: S,
    consumer: String,
    lease: Duration,
    retention: Duration,
}

/// The answer recorded for a handled message (the store keeps a response; an inbox needs none).
fn handled_record() -> StoredResponse {
    StoredResponse {
        status: 200,
        headers: Vec::new(),
        body: bytes::Bytes::new(),
        trailers: Vec::new(),
    }
}

impl<S: IdempotencyStore> StoreInbox<S> {
    /// The inbox of `consumer` on `store`: a 60 s lease for the effect, message ids kept 7 days
    /// (longer than any broker's redelivery and JetStream's duplicate window).
    pub fn new(store: S, consumer: impl Into<String>) -> Self {
        Self {
            store,
            consumer: consumer.into(),
            lease: Duration::from_secs(60),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// How long an effect may run before another delivery may take the message over.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a handled message id is remembered.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Runs `effect` unless this consumer handled `message_id` already.
    pub async fn handle<T, E, F>(
        &self,
        message_id: &str,
        effect: F,
    ) -> Result<Handled<T>, StoreInboxError<E>>
    where
        F: AsyncFnOnce() -> Result<T, E>,
    {
        let key = IdempotencyKey::parse(message_id.as_bytes())
            .map_err(|_| StoreInboxError::BadMessageId)?;
        let fingerprint = Fingerprint::of_request("MESSAGE", &self.consumer, message_id.as_bytes());
        let store = |e| StoreInboxError::Store(e);
        let begun = self
            .store
            .begin(&self.consumer, &key, &fingerprint, self.lease);
        let fence = match begun.await.map_err(store)? {
            BeginOutcome::Acquired { fence } => fence,
            BeginOutcome::InFlight { retry_after } => {
                return Err(StoreInboxError::InFlight { retry_after })
            }
            // The fingerprint is the message id's own: a record of it is this message's.
            _ => return Ok(Handled::Duplicate),
        };
        match effect().await {
            Ok(value) => {
                let record = handled_record();
                let done =
                    self.store
                        .complete(&self.consumer, &key, fence, &record, self.retention);
                done.await.map_err(store)?;
                Ok(Handled::Applied(value))
            }
            Err(e) => {
                // A failed release leaves the lease to run out: the redelivery waits for it.
                let _ = self.store.release(&self.consumer, &key, fence).await;
                Err(StoreInboxError::Handler(e))
            }
        }
    }
}
