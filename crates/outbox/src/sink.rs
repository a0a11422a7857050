//! Where a relay publishes: the broker seam, and an in-process channel.

use crate::Event;
use async_trait::async_trait;

/// A publish the broker did not confirm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// Not confirmed (no answer, a negative acknowledgement, no route yet, the connection lost):
    /// the relay attempts again on its schedule. The broker may still have taken the message;
    /// the event id lets the broker's dedupe window or the consumer's inbox drop the repeat.
    #[error("the broker did not confirm the message: {0}")]
    Transient(String),
    /// Refused for good (too large, an invalid subject): the event becomes a dead letter at once.
    #[error("the broker refused the message: {0}")]
    Rejected(String),
}

/// A broker the [`Relay`](crate::Relay) publishes to: NATS JetStream (`NatsSink`, feature
/// `nats`), RabbitMQ (`RabbitSink`, feature `rabbitmq`), [`ChannelSink`] in process, or your
/// own.
///
/// `publish` returns one result per event, in order, and `Ok` only once the broker has taken
/// responsibility for the message (a JetStream ack: stored; a RabbitMQ confirm: routed and, for
/// durable queues, written). It may send the whole batch before it waits for the answers. A batch
/// holds at most one event of each aggregate, so a sink need not order within it.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Publishes `events`; one result per event, in order.
    async fn publish(&self, events: &[&Event]) -> Vec<Result<(), PublishError>>;
}

/// A sink into a channel of this process (tokio's unbounded mpsc): for a single process that
/// wants the outbox's retries and order without a broker, and for tests. A send fails only when
/// the receiver is gone.
///
/// ```
/// use outbox::{ChannelSink, Event, Sink};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let (sink, mut events) = ChannelSink::new();
/// let event = Event::new("orders", "evt_1", "{}").unwrap();
/// assert!(sink.publish(&[&event]).await[0].is_ok());
/// assert_eq!(events.recv().await.unwrap().id, "evt_1");
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct ChannelSink {
    tx: tokio::sync::mpsc::UnboundedSender<Event>,
}

impl ChannelSink {
    /// A sink and the receiver of what it publishes.
    pub fn new() -> (Self, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Self { tx }, rx)
    }
}

#[async_trait]
impl Sink for ChannelSink {
    async fn publish(&self, events: &[&Event]) -> Vec<Result<(), PublishError>> {
        events
            .iter()
            .map(|e| {
                self.tx
                    .send((*e).clone())
                    .map_err(|_| PublishError::Transient("the receiver is gone".into()))
            })
            .collect()
    }
}

#[async_trait]
impl<S: Sink + ?Sized> Sink for Box<S> {
    async fn publish(&self, events: &[&Event]) -> Vec<Result<(), PublishError>> {
        (**self).publish(events).await
    }
}

#[async_trait]
impl<S: Sink + ?Sized> Sink for std::sync::Arc<S> {
    async fn publish(&self, events: &[&Event]) -> Vec<Result<(), PublishError>> {
        (**self).publish(events).await
    }
}
