//! One transactional outbox for events, and the consumer half that applies each message once.
//!
//! An event is enqueued in the business transaction (PostgreSQL), so it exists exactly when the
//! write that caused it committed. Relays — any number, in any process — claim due events in
//! batches with `FOR UPDATE SKIP LOCKED` under a lease, publish them to a broker (NATS
//! JetStream, RabbitMQ, or a channel of this process) and settle each: published, due again on
//! a backoff schedule, or a dead letter to replay later. Publishing is at-least-once (a relay
//! that dies after the broker's ack and before its settle leaves the event to be published
//! again); the event id travels as the broker's message id, so JetStream's duplicate window and
//! the consumer's inbox (`PgInbox`, feature `postgres`) turn that into one effect.
//!
//! ```
//! use outbox::{ChannelSink, Event, EventState, MemoryOutbox, Outbox, Relay};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let outbox = MemoryOutbox::new();
//! let (sink, mut published) = ChannelSink::new();
//! let relay = Relay::new(outbox.clone(), sink);
//!
//! for (id, body) in [("evt_1", "created"), ("evt_2", "paid")] {
//!     let event = Event::new("orders", id, body)?.aggregate("order:ord_1")?;
//!     outbox.enqueue(&event).await?;
//! }
//! // An aggregate's events go out one after the other, in order.
//! assert_eq!(relay.run_once().await?.published, 1);
//! assert_eq!(relay.run_once().await?.published, 1);
//! assert_eq!(published.recv().await.unwrap().id, "evt_1");
//! assert_eq!(published.recv().await.unwrap().id, "evt_2");
//! assert_eq!(outbox.status("orders", "evt_2").await?.unwrap().state, EventState::Published);
//! # Ok(()) }
//! ```
//!
//! The pieces:
//! - [`Event`]: id (the broker's message id), topic, optional aggregate (order key), payload,
//!   headers, optional delay (a not-before time).
//! - [`Outbox`]: the store seam, with [`MemoryOutbox`] (embedded, not durable) and
//!   `PostgresOutbox` (feature `postgres`: `enqueue_in` the caller's transaction).
//! - [`Relay`]: claim, publish, settle; [`Schedule`] for the backoff; dead letters after the
//!   last attempt, or at once when the broker refuses a message for good.
//! - [`Sink`]: `NatsSink` (feature `nats`), `RabbitSink` (feature `rabbitmq`), [`ChannelSink`].
//! - `PgInbox` (feature `postgres`): the consumer's effect and its "seen" row in one
//!   transaction; [`StoreInbox`] on any idempotency store (memory, Redis, Redis Cluster);
//!   `NatsConsumer` and `RabbitConsumer` answer the broker and dead-letter poison messages.
//! - `JobQueue` (feature `postgres`): background jobs behind a `202 Accepted`, claimed by
//!   workers under a lease with heartbeats, finished in the worker's transaction.
//! - The `outbox` command (feature `cli`): `relay`, `stats`, `dead`, `replay`.
//!
//! # Features
//! | feature | default | adds |
//! |---|---|---|
//! | `postgres` | no | `PostgresOutbox`, `PgInbox` (sqlx, embedded migrations) |
//! | `nats` | no | `NatsSink` (async-nats JetStream) |
//! | `rabbitmq` | no | `RabbitSink` (lapin, publisher confirms) |
//! | `metrics` | no | `outbox_events_total{outcome}`, `outbox_publish_lag_seconds` |
//! | `cli` | no | the `outbox` binary |
#![warn(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The header a sink sets to an event's aggregate, for consumers that keep per-aggregate state.
pub const AGGREGATE_HEADER: &str = "Outbox-Aggregate";

#[cfg(all(feature = "postgres", any(feature = "nats", feature = "rabbitmq")))]
mod consumer;
mod event;
#[cfg(feature = "postgres")]
mod inbox;
mod inbox_outcome;
#[cfg(feature = "postgres")]
mod jobs;
mod memory;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
mod relay;
mod schedule;
mod sink;
mod store;
mod store_inbox;

#[cfg(all(feature = "postgres", any(feature = "nats", feature = "rabbitmq")))]
#[cfg_attr(
    docsrs,
    doc(cfg(all(feature = "postgres", any(feature = "nats", feature = "rabbitmq"))))
)]
pub use consumer::{ConsumeError, Consumed};
pub use event::{Event, EventError};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use inbox::{InboxError, PgInbox};
pub use inbox_outcome::Handled;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use jobs::{ClaimedJob, JobQueue, JobState, JobStatus};
pub use memory::MemoryOutbox;
#[cfg(all(feature = "nats", feature = "postgres"))]
pub use nats::NatsConsumer;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub use nats::{async_nats, NatsSink};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{sqlx, PostgresOutbox, SetupError};
#[cfg(all(feature = "rabbitmq", feature = "postgres"))]
pub use rabbitmq::RabbitConsumer;
#[cfg(feature = "rabbitmq")]
#[cfg_attr(docsrs, doc(cfg(feature = "rabbitmq")))]
pub use rabbitmq::{lapin, RabbitSink};
pub use relay::{Relay, RelayRound};
pub use retry_safe_core::{Clock, ManualClock, SystemClock, TimeOffset};
pub use schedule::Schedule;
pub use sink::{ChannelSink, PublishError, Sink};
pub use store::{
    AttemptNote, AttemptRecord, Claimed, DeadLetter, EventState, EventStatus, Outbox, OutboxError,
    OutboxStats, Outcome, Settlement,
};
pub use store_inbox::{StoreInbox, StoreInboxError};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
