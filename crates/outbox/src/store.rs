//! The outbox seam: what a relay needs of the store that keeps the events.

use crate::Event;
use async_trait::async_trait;
use retry_safe_core::BackendError;
use std::time::Duration;

/// An outbox could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The store failed: unavailable (nothing was changed by this call) or holding a row this
    /// release cannot read.
    #[error("the outbox's store failed")]
    Backend(#[from] BackendError),
    /// The in-memory outbox holds as many events as it may.
    #[error("the outbox is full ({capacity} events)")]
    Full {
        /// Its capacity.
        capacity: usize,
    },
}

/// An event a relay holds a claim on: nobody else publishes it until the claim's lease runs out,
/// and only this claim can settle it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Claimed {
    /// The event.
    pub event: Event,
    /// Attempts made before this one.
    pub attempts: u32,
    /// The outbox's row id.
    pub row: i64,
    /// The claim's fence: settling with an older claim of the same row is refused.
    pub claim: i64,
    /// How long ago the event was enqueued (commit-to-publish lag, at its first attempt).
    pub age: Duration,
}

/// What an attempt to publish a claimed event found, and so what happens to it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The broker confirmed it: done.
    Published,
    /// Attempt again after this delay; the error is recorded.
    RetryIn(Duration, String),
    /// Give up: a dead letter, kept until replayed or purged; the error is recorded.
    Dead(String),
}

/// One claimed event and what became of it, for [`Outbox::settle`].
#[derive(Debug, Clone)]
pub struct Settlement<'a> {
    /// The claim.
    pub claimed: &'a Claimed,
    /// Its outcome.
    pub outcome: Outcome,
}

/// Where an event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventState {
    /// Waiting for its next attempt (or being attempted).
    Pending,
    /// The broker confirmed it.
    Published,
    /// Every scheduled attempt failed, or the broker refused it for good: a dead letter.
    Dead,
}

/// An event's state, as [`Outbox::status`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventStatus {
    /// Its state.
    pub state: EventState,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
}

/// A dead letter, as [`Outbox::dead_letters`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The event's topic.
    pub topic: String,
    /// The event's id.
    pub id: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last one failed.
    pub last_error: Option<String>,
}

/// Counts over the whole outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxStats {
    /// Events waiting (including those being attempted).
    pub pending: u64,
    /// Events published (until purged).
    pub published: u64,
    /// Dead letters.
    pub dead: u64,
    /// The age of the oldest pending event: the relay's lag.
    pub oldest_pending: Option<Duration>,
}

/// A store of events to publish. Implemented by [`MemoryOutbox`](crate::MemoryOutbox) and, with
/// the `postgres` feature, by `PostgresOutbox`; the [`Relay`](crate::Relay) runs on either.
///
/// The contract, which both pass the same tests for:
/// - `enqueue` of a (topic, id) already in the outbox adds nothing and returns `false`;
/// - `claim` hands out due, pending events, oldest due first, each to one claimant at a time;
///   of an aggregate only its oldest pending event (the next waits until it is published or
///   dead); a claimed event is due again once `lease` has passed without a settle, so a relay
///   that dies leaves its events to the next one (at-least-once publishing);
/// - `settle` applies each outcome, but only for the newest claim of its row; it returns how
///   many it applied (the others' leases ran out and someone else holds them now);
/// - `replay` makes a dead letter pending again, its attempts reset, due at once.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Adds `event`. `false` when the same (topic, id) is already in the outbox.
    async fn enqueue(&self, event: &Event) -> Result<bool, OutboxError>;

    /// Claims up to `max` due events for `lease`.
    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Claimed>, OutboxError>;

    /// Applies the outcomes; returns how many still held their claim.
    async fn settle(&self, settlements: &[Settlement<'_>]) -> Result<usize, OutboxError>;

    /// The state of event `id` of `topic`, if it is in the outbox.
    async fn status(&self, topic: &str, id: &str) -> Result<Option<EventStatus>, OutboxError>;

    /// Up to `limit` dead letters, oldest first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, OutboxError>;

    /// Makes the dead letter (`topic`, `id`) pending again; `false` when it is not dead.
    async fn replay(&self, topic: &str, id: &str) -> Result<bool, OutboxError>;

    /// Makes every dead letter (of `topic`, when given) pending again; returns how many.
    async fn replay_dead(&self, topic: Option<&str>) -> Result<u64, OutboxError>;

    /// Counts by state and the lag.
    async fn stats(&self) -> Result<OutboxStats, OutboxError>;

    /// Deletes published events that were published more than `older_than` ago; returns how
    /// many. Dead letters stay until replayed. Run it from a periodic task.
    async fn purge_published(&self, older_than: Duration) -> Result<u64, OutboxError>;
}
