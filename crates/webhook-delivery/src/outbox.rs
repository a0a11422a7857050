//! The queue seam: what a dispatcher needs of an outbox, whichever store keeps it.

use crate::WebhookEvent;
use async_trait::async_trait;
use retry_safe_core::BackendError;
use std::time::{Duration, SystemTime};

/// An outbox could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The store failed: unavailable (nothing was changed by this call) or holding a row this
    /// release cannot read.
    #[error("the webhook outbox's store failed")]
    Backend(#[from] BackendError),
    /// The in-memory outbox holds as many events as it may.
    #[error("the webhook outbox is full ({capacity} events)")]
    Full {
        /// Its capacity.
        capacity: usize,
    },
}

/// An event a dispatcher holds a claim on: nobody else delivers it until the claim's lease runs
/// out, and only this claim can settle it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Claimed {
    /// The event.
    pub event: WebhookEvent,
    /// Attempts made before this one.
    pub attempts: u32,
    /// The outbox's row id.
    pub row: i64,
    /// The claim's fence: settling with an older claim of the same row is refused.
    pub claim: i64,
    /// How long ago the event was enqueued (the queue lag, at its first attempt).
    pub age: Duration,
}

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryAttempt {
    /// Its number (1 = the first).
    pub number: u32,
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    /// From sending the request to the end of the answer's head (or to the failure).
    pub latency: Duration,
    /// Why it failed, when it did (no secret ever appears here).
    pub error: Option<String>,
}

impl DeliveryAttempt {
    /// An attempt record.
    pub fn new(number: u32, status: Option<u16>, latency: Duration, error: Option<String>) -> Self {
        Self {
            number,
            status,
            latency,
            error,
        }
    }
}

/// An attempt as the outbox recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptRecord {
    /// What the attempt found.
    pub attempt: DeliveryAttempt,
    /// When the outbox recorded it (its own clock).
    pub at: SystemTime,
}

/// What happens to a claimed event after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NextStep {
    /// The receiver answered 2xx: done.
    Delivered,
    /// Attempt again after this delay.
    RetryIn(Duration),
    /// The last scheduled attempt failed: give up.
    Exhausted,
    /// The receiver answered 410 Gone: give up on this event, and hold the endpoint's other
    /// events until it is enabled again.
    DisableEndpoint,
}

/// Where an event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventState {
    /// Waiting for its next attempt (or being attempted).
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Every scheduled attempt failed.
    Exhausted,
    /// Its endpoint answered 410 Gone.
    EndpointDisabled,
}

/// An event's state and its attempts, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventStatus {
    /// Its state.
    pub state: EventState,
    /// Every attempt made, oldest first.
    pub attempts: Vec<AttemptRecord>,
}

/// Counts over the whole outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxStats {
    /// Events waiting (including those being attempted).
    pub pending: u64,
    /// Events delivered (until purged).
    pub delivered: u64,
    /// Events exhausted (until purged).
    pub exhausted: u64,
    /// Events whose endpoint answered 410 (until purged).
    pub disabled: u64,
    /// The age of the oldest pending event: the queue lag.
    pub oldest_pending: Option<Duration>,
}

/// A store of events to deliver. Implemented by [`MemoryOutbox`](crate::MemoryOutbox) and, with
/// the `postgres` feature, by `PostgresOutbox`; the [`Dispatcher`](crate::Dispatcher) runs on
/// either.
///
/// The contract, which both implementations pass the same tests for:
/// - `enqueue` of an (endpoint, id) already queued queues nothing and returns `false`;
/// - `claim` hands out due, pending events of enabled endpoints, oldest due first, each to one
///   claimant at a time; a claimed event is due again once `lease` has passed without a settle
///   (so a dispatcher that dies leaves its events to the next one: at-least-once delivery);
/// - `settle` records the attempt and moves the event on, but only for the newest claim of its
///   row (`false` otherwise: the lease ran out and someone else holds it now);
/// - [`NextStep::DisableEndpoint`] marks the event and disables the endpoint in one step: `claim`
///   skips its events until [`enable_endpoint`](Outbox::enable_endpoint).
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Queues `event`, due at once. `false` when the same (endpoint, id) is already queued.
    async fn enqueue(&self, event: &WebhookEvent) -> Result<bool, OutboxError>;

    /// Claims up to `max` due events for `lease`.
    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Claimed>, OutboxError>;

    /// Records `attempt` of `claimed` and applies `next`; `false` when the claim was lost.
    async fn settle(
        &self,
        claimed: &Claimed,
        attempt: &DeliveryAttempt,
        next: NextStep,
    ) -> Result<bool, OutboxError>;

    /// Lets the events of `endpoint` be claimed again; `false` when it was not disabled.
    async fn enable_endpoint(&self, endpoint: &str) -> Result<bool, OutboxError>;

    /// The endpoints disabled by a 410, by name.
    async fn disabled_endpoints(&self) -> Result<Vec<String>, OutboxError>;

    /// The state and attempts of event `id` for `endpoint`, if it is in the outbox.
    async fn status(&self, endpoint: &str, id: &str) -> Result<Option<EventStatus>, OutboxError>;

    /// Counts by state and the queue lag.
    async fn stats(&self) -> Result<OutboxStats, OutboxError>;

    /// Deletes finished events (delivered, exhausted, disabled) that finished more than
    /// `older_than` ago, with their attempts; returns how many. Run it from a periodic task.
    async fn purge_finished(&self, older_than: Duration) -> Result<u64, OutboxError>;
}
