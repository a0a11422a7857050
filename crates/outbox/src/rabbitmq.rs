//! The RabbitMQ sink.

use crate::{Event, PublishError, Sink};
use async_trait::async_trait;
use futures_util::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};

pub use lapin;

/// Publishes to RabbitMQ with publisher confirms: the topic is the routing key on the configured
/// exchange, the event id the `message-id` property, the aggregate the `Outbox-Aggregate` header, the
/// event's headers as AMQP headers, messages
/// persistent (delivery mode 2) and `mandatory`, so a message no queue is bound for comes back
/// and counts as [`PublishError::Transient`] (no route yet), as does a negative confirm or a
/// lost channel. The batch is sent before any confirm is awaited.
///
/// RabbitMQ keeps no duplicate window: a relay's re-publish is delivered again, and the
/// consumer's inbox ([`PgInbox`](crate::PgInbox)) drops it by its `message-id`.
#[derive(Debug, Clone)]
pub struct RabbitSink {
    channel: Channel,
    exchange: String,
}

impl RabbitSink {
    /// A sink on `channel`, publishing to `exchange` (`""`: the default exchange, where the
    /// routing key is the queue's name). Puts the channel in confirm mode.
    pub async fn new(channel: Channel, exchange: impl Into<String>) -> Result<Self, lapin::Error> {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            channel,
            exchange: exchange.into(),
        })
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

    async fn publish_one(&self, event: &Event) -> Result<lapin::PublisherConfirm, lapin::Error> {
        self.channel
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
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            pending.push(self.publish_one(event).await);
        }
        join_all(pending.into_iter().map(confirmed)).await
    }
}
