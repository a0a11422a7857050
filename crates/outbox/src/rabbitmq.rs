//! The RabbitMQ sink.

use crate::{Event, PublishError, Sink};
use async_trait::async_trait;
use futures_util::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

pub use lapin;

/// Publishes to RabbitMQ with publisher confirms: the topic is the routing key on the configured
/// exchange, the event id the `message-id` property, the aggregate the `Outbox-Aggregate` header, the
/// event's headers as AMQP headers, messages
/// persistent (delivery mode 2) and `mandatory`, so a message no queue is bound for comes back
/// and counts as [`PublishError::Transient`] (no route yet), as does a negative confirm or a
/// lost channel. The batch is sent before any confirm is awaited.
///
/// RabbitMQ keeps no duplicate window: a relay's re-publish is delivered again, and the
/// consumer's inbox (`PgInbox`, feature `postgres`) drops it by its `message-id`.
#[derive(Clone)]
pub struct RabbitSink {
    exchange: String,
    link: std::sync::Arc<tokio::sync::Mutex<Link>>,
}

impl std::fmt::Debug for RabbitSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitSink")
            .field("exchange", &self.exchange)
            .finish_non_exhaustive()
    }
}

/// The sink's channel, and how to open another when it is lost.
struct Link {
    /// The URL and properties to reconnect with (`None`: a channel given by the caller).
    reconnect: Option<(String, ConnectionProperties)>,
    /// The connection the channel is on, when the sink opened it.
    connection: Option<Connection>,
    channel: Option<Channel>,
}

async fn confirming(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

impl Link {
    /// The channel, opened again (with a new connection) when it was lost and the sink knows
    /// how.
    async fn channel(&mut self) -> Result<Channel, PublishError> {
        if let Some(channel) = self.channel.as_ref().filter(|c| c.status().connected()) {
            return Ok(channel.clone());
        }
        let Some((url, properties)) = &self.reconnect else {
            return Err(PublishError::Transient("the channel is closed".into()));
        };
        let transient = |e: lapin::Error| PublishError::Transient(e.to_string());
        let connection = Connection::connect(url, properties.clone())
            .await
            .map_err(transient)?;
        let channel = confirming(&connection).await.map_err(transient)?;
        self.connection = Some(connection);
        self.channel = Some(channel.clone());
        Ok(channel)
    }
}

impl RabbitSink {
    /// A sink on `channel`, publishing to `exchange` (`""`: the default exchange, where the
    /// routing key is the queue's name). Puts the channel in confirm mode. If the channel is
    /// lost, publishes fail (transiently) until the sink is replaced: prefer
    /// [`connect`](Self::connect), which reconnects.
    pub async fn new(channel: Channel, exchange: impl Into<String>) -> Result<Self, lapin::Error> {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self::of(exchange.into(), None, None, channel))
    }

    /// A sink that connects to `url` with `properties` and publishes to `exchange`; when its
    /// connection or channel is lost (a broker restart, a connection closed by the broker), the
    /// next batch opens new ones, and the lost batch's events are due again on the schedule.
    pub async fn connect(
        url: &str,
        properties: ConnectionProperties,
        exchange: impl Into<String>,
    ) -> Result<Self, lapin::Error> {
        let connection = Connection::connect(url, properties.clone()).await?;
        let channel = confirming(&connection).await?;
        let reconnect = Some((url.to_owned(), properties));
        Ok(Self::of(
            exchange.into(),
            reconnect,
            Some(connection),
            channel,
        ))
    }

    fn of(
        exchange: String,
        reconnect: Option<(String, ConnectionProperties)>,
        connection: Option<Connection>,
        channel: Channel,
    ) -> Self {
        let link = Link {
            reconnect,
            connection,
            channel: Some(channel),
        };
        Self {
            exchange,
            link: std::sync::Arc::new(tokio::sync::Mutex::new(link)),
        }
    }

    fn properties(event: &Event) -> BasicProperties {
        let mut headers = FieldTable::default();
        if let Some(aggregate) = &event.aggregate {
            headers.insert(
                ShortString::from(crate::AGGREGATE_HEADER),
                AMQPValue::LongString(LongString::from(aggregate.as_str())),
            );
        }
        for (name, value) in &event.headers {
            headers.insert(
                ShortString::from(name.as_str()),
                AMQPValue::LongString(LongString::from(value.as_str())),
            );
        }
        BasicProperties::default()
            .with_message_id(ShortString::from(event.id.as_str()))
            .with_delivery_mode(2)
            .with_headers(headers)
    }

    async fn publish_one(
        &self,
        channel: &Channel,
        event: &Event,
    ) -> Result<lapin::PublisherConfirm, lapin::Error> {
        channel
            .basic_publish(
                ShortString::from(self.exchange.as_str()),
                ShortString::from(event.topic.as_str()),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &event.payload,
                Self::properties(event),
            )
            .await
    }
}

async fn confirmed(
    sent: Result<lapin::PublisherConfirm, lapin::Error>,
) -> Result<(), PublishError> {
    let transient = |e: lapin::Error| PublishError::Transient(e.to_string());
    let confirm = sent.map_err(transient)?.await.map_err(transient)?;
    if !confirm.is_ack() {
        return Err(PublishError::Transient(
            "the broker nacked the message".into(),
        ));
    }
    match confirm.take_message() {
        None => Ok(()),
        Some(returned) => Err(PublishError::Transient(format!(
            "returned by the broker: {} {}",
            returned.reply_code, returned.reply_text
        ))),
    }
}

#[async_trait]
impl Sink for RabbitSink {
    async fn publish(&self, events: &[&Event]) -> Vec<Result<(), PublishError>> {
        let channel = match self.link.lock().await.channel().await {
            Ok(channel) => channel,
            Err(e) => return vec![Err(e); events.len()],
        };
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            pending.push(self.publish_one(&channel, event).await);
        }
        join_all(pending.into_iter().map(confirmed)).await
    }
}

/// The consumer half on RabbitMQ: each delivery's effect through a [`PgInbox`](crate::PgInbox)
/// keyed by its `message-id` (the effect and its inbox row commit together), the ack after the
/// commit, and a failed effect nack'ed back onto the queue until its `max_deliveries`th
/// delivery (default 5), then nack'ed without requeue, which RabbitMQ routes to the queue's
/// dead-letter exchange (`x-dead-letter-exchange`).
///
/// Deliveries are counted by the `x-delivery-count` header that quorum queues keep; a classic
/// queue only says whether a message was redelivered, so declare the queue as a quorum queue
/// (`x-queue-type: quorum`, RabbitMQ's own advice for data that must not be lost).
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(all(feature = "rabbitmq", feature = "postgres"))))]
#[derive(Debug, Clone)]
pub struct RabbitConsumer {
    inbox: crate::PgInbox,
    max_deliveries: u32,
}

#[cfg(feature = "postgres")]
impl RabbitConsumer {
    /// A consumer applying deliveries through `inbox`.
    pub fn new(inbox: crate::PgInbox) -> Self {
        Self {
            inbox,
            max_deliveries: 5,
        }
    }

    /// Dead-letters a message whose `n`th delivery failed (at least 1).
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n.max(1);
        self
    }

    /// Handles one delivery: runs `effect` once per message id, then answers the broker.
    pub async fn handle<T, E, F>(
        &self,
        delivery: &lapin::message::Delivery,
        effect: F,
    ) -> Result<crate::Consumed<T>, crate::ConsumeError>
    where
        E: std::fmt::Display,
        F: AsyncFnOnce(&mut sqlx::PgConnection) -> Result<T, E>,
    {
        use crate::{ConsumeError, Consumed, Handled, InboxError};
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .ok_or(ConsumeError::NoMessageId)?
            .to_string();
        let broker = |e: lapin::Error| ConsumeError::Broker(e.to_string());
        let nack = |requeue| lapin::options::BasicNackOptions {
            multiple: false,
            requeue,
        };
        match self.inbox.handle(&id, effect).await {
            Ok(done) => {
                delivery.ack(Default::default()).await.map_err(broker)?;
                Ok(match done {
                    Handled::Applied(v) => Consumed::Applied(v),
                    Handled::Duplicate => Consumed::Duplicate,
                })
            }
            Err(InboxError::Backend(e)) => Err(ConsumeError::Store(e)),
            Err(InboxError::Handler(e)) => {
                let last = deliveries(delivery) >= self.max_deliveries;
                delivery.nack(nack(!last)).await.map_err(broker)?;
                let why = e.to_string();
                Ok(if last {
                    Consumed::DeadLettered(why)
                } else {
                    Consumed::Retry(why)
                })
            }
        }
    }
}

/// This delivery's number: `x-delivery-count` (quorum queues) + 1, else 1 or 2 by the
/// redelivered flag.
#[cfg(feature = "postgres")]
fn deliveries(delivery: &lapin::message::Delivery) -> u32 {
    let counted = delivery.properties.headers().as_ref().and_then(|h| {
        match h.inner().get("x-delivery-count")? {
            AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
            AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
            AMQPValue::LongUInt(n) => Some(*n),
            AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
            _ => None,
        }
    });
    counted.map_or(1 + u32::from(delivery.redelivered), |n| n.saturating_add(1))
}
