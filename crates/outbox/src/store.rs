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
    /// The event is not one the outbox can carry (a name with a space or a control character).
    #[error("the event is not valid")]
    Invalid(#[from] crate::EventError),
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
    /// The destination is gone (a webhook receiver's `410 Gone`): a dead letter, and its topic
    /// is paused — `claim` skips the topic's events until [`Outbox::resume_topic`].
    Gone(String),
}

/// What an attempt found beyond its outcome, for stores that keep each attempt (see
/// [`Outbox::attempts`]): the receiver's status and how long the attempt took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct AttemptNote {
    /// The receiver's status, when it answered (an HTTP status, for webhooks).
    pub status: Option<u16>,
    /// From sending to the answer, or to the failure.
    pub latency: Duration,
}

impl AttemptNote {
    /// A note of an attempt answered with `status` (if any) after `latency`.
    pub fn new(status: Option<u16>, latency: Duration) -> Self {
        Self { status, latency }
    }
}

/// One recorded attempt, as [`Outbox::attempts`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptRecord {
    /// Its number (1 = the first).
    pub number: u32,
    /// When the outbox recorded it (its own clock).
    pub at: std::time::SystemTime,
    /// What it found.
    pub note: AttemptNote,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// One claimed event and what became of it, for [`Outbox::settle`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settlement<'a> {
    /// The claim.
    pub claimed: &'a Claimed,
    /// Its outcome.
    pub outcome: Outcome,
    /// The attempt, to record (`None`: only the outcome is kept, as the relay does).
    pub attempt: Option<AttemptNote>,
}

impl<'a> Settlement<'a> {
    /// `claimed` settled with `outcome`.
    pub fn new(claimed: &'a Claimed, outcome: Outcome) -> Self {
        Self {
            claimed,
            outcome,
            attempt: None,
        }
    }

    /// Records the attempt too (see [`Outbox::attempts`]).
    pub fn with_attempt(mut self, note: AttemptNote) -> Self {
        self.attempt = Some(note);
        self
    }
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
    /// Paused topics.
    pub paused_topics: u64,
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
/// - `replay` makes a dead letter pending again, its attempts reset, due at once;
/// - [`Outcome::Gone`] makes the event dead and pauses its topic in one step; `claim` skips a
///   paused topic's events until `resume_topic`;
/// - a settlement with an [`AttemptNote`] is recorded, and `attempts` lists them.
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

    /// The recorded attempts of event `id` of `topic`, oldest first.
    async fn attempts(&self, topic: &str, id: &str) -> Result<Vec<AttemptRecord>, OutboxError>;

    /// Lets the events of `topic` be claimed again; `false` when it was not paused.
    async fn resume_topic(&self, topic: &str) -> Result<bool, OutboxError>;

    /// The paused topics, by name.
    async fn paused_topics(&self) -> Result<Vec<String>, OutboxError>;

    /// Counts by state and the lag.
    async fn stats(&self) -> Result<OutboxStats, OutboxError>;

    /// Deletes published events that were published more than `older_than` ago; returns how
    /// many. Dead letters stay until replayed. Run it from a periodic task.
    async fn purge_published(&self, older_than: Duration) -> Result<u64, OutboxError>;
}
