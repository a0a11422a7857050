//! The NATS JetStream sink.

#[cfg(feature = "postgres")]
use crate::{ConsumeError, Consumed};
use crate::{Event, PublishError, Sink};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::Context;
use async_trait::async_trait;
use futures_util::future::join_all;

pub use async_nats;

/// Publishes to NATS JetStream: the topic is the subject (after an optional prefix), the event
/// id the `Nats-Msg-Id` header, the aggregate the `Outbox-Aggregate` header, so a stream's duplicate window (2 min by default) stores a
/// relay's re-publish once. The batch is sent before any ack is awaited (pipelined on the one
/// connection); an event counts as published when the stream's ack arrives, a duplicate ack
/// included.
///
/// A missing stream, a timeout or a lost connection is [`PublishError::Transient`]; a message
/// over the server's `max_payload`, or a subject no message can be published to (a wildcard, an
/// empty token), is [`PublishError::Rejected`]: a dead letter at once.
///
/// The duplicate window bounds the dedupe: a re-publish later than the window (a relay stopped
/// longer than it after publishing and before settling, past its lease) is stored again, and
/// the consumer's inbox drops it.
#[derive(Debug, Clone)]
pub struct NatsSink {
    jetstream: Context,
    prefix: String,
}

impl NatsSink {
    /// A sink on `jetstream` (`async_nats::jetstream::new(client)`).
    pub fn new(jetstream: Context) -> Self {
        Self {
            jetstream,
            prefix: String::new(),
        }
    }

    /// Publishes to `<prefix><topic>` (say `events.` before `orders.created`).
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn message(event: &Event) -> Publish {
        let mut message = Publish::build()
            .payload(event.payload.clone())
            .message_id(&event.id);
        if let Some(aggregate) = &event.aggregate {
            message = message.header(crate::AGGREGATE_HEADER, aggregate.as_str());
        }
        for (name, value) in &event.headers {
            message = message.header(name.as_str(), value.as_str());
        }
        message
    }
}

fn classify(e: &async_nats::jetstream::context::PublishError) -> PublishError {
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => PublishError::Rejected(e.to_string()),
        _ => PublishError::Transient(e.to_string()),
    }
}

/// Whether `subject` is one a message can be published to: dot-separated tokens, none empty,
/// no wildcard (`*`, `>`).
fn publishable(subject: &str) -> bool {
    subject
        .split('.')
        .all(|token| !token.is_empty() && token != "*" && !token.contains('>'))
        && !subject.contains('*')
}

#[async_trait]
impl Sink for NatsSink {
    async fn publish(&self, events: &[&Event]) -> Vec<Result<(), PublishError>> {
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let subject = format!("{}{}", self.prefix, event.topic);
            if !publishable(&subject) {
                let why = format!("`{subject}` is not a subject a message can be published to");
                pending.push(Err(PublishError::Rejected(why)));
                continue;
            }
            let sent = self
                .jetstream
                .send_publish(subject, Self::message(event))
                .await;
            pending.push(sent.map_err(|e| classify(&e)));
        }
        join_all(pending.into_iter().map(async |sent| match sent {
            Ok(ack) => ack.await.map(drop).map_err(|e| classify(&e)),
            Err(e) => Err(e),
        }))
        .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn wildcards_and_empty_tokens_are_not_publishable() {
        for ok in ["orders", "orders.created", "events.orders.created", "a-b_c"] {
            assert!(super::publishable(ok), "{ok}");
        }
        for bad in [
            "orders.*",
            "orders.>",
            "*",
            ">",
            "orders..created",
            ".orders",
            "orders.",
            "a*b",
        ] {
            assert!(!super::publishable(bad), "{bad}");
        }
    }
}

/// The consumer half on JetStream: each message's effect through a [`PgInbox`](crate::PgInbox)
/// (the effect and its inbox row commit together, keyed by `Nats-Msg-Id`, the stream sequence
/// when absent), the ack after the commit, and poison messages to a dead-letter subject after
/// `max_deliveries` (default 5) failed deliveries, nak'ed with a growing delay before that.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(all(feature = "nats", feature = "postgres"))))]
#[derive(Debug, Clone)]
pub struct NatsConsumer {
    inbox: crate::PgInbox,
    jetstream: Context,
    dead_letter_prefix: String,
    max_deliveries: i64,
}

#[cfg(feature = "postgres")]
impl NatsConsumer {
    /// A consumer applying messages through `inbox`, dead-lettering to `<prefix><subject>`.
    pub fn new(inbox: crate::PgInbox, jetstream: Context, dead_letter_prefix: &str) -> Self {
        Self {
            inbox,
            jetstream,
            dead_letter_prefix: dead_letter_prefix.to_owned(),
            max_deliveries: 5,
        }
    }

    /// Dead-letters a message whose `n`th delivery failed (at least 1).
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = i64::from(n.max(1));
        self
    }

    /// Handles one message: runs `effect` once per message id, then answers the server.
    pub async fn handle<T, E, F>(
        &self,
        message: &async_nats::jetstream::Message,
        effect: F,
    ) -> Result<Consumed<T>, ConsumeError>
    where
        E: std::fmt::Display,
        F: AsyncFnOnce(&mut sqlx::PgConnection) -> Result<T, E>,
    {
        use async_nats::jetstream::AckKind;
        let info = message.info().map_err(|_| ConsumeError::NoMessageId)?;
        let (delivered, sequence) = (info.delivered, info.stream_sequence);
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map_or_else(|| format!("seq:{sequence}"), |v| v.as_str().to_owned());
        let answer = |kind| async move {
            message
                .ack_with(kind)
                .await
                .map_err(|e| ConsumeError::Broker(e.to_string()))
        };
        match self.inbox.handle(&id, effect).await {
            Ok(crate::Handled::Applied(v)) => {
                answer(AckKind::Ack).await.map(|()| Consumed::Applied(v))
            }
            Ok(crate::Handled::Duplicate) => {
                answer(AckKind::Ack).await.map(|()| Consumed::Duplicate)
            }
            Err(crate::InboxError::Backend(e)) => Err(ConsumeError::Store(e)),
            Err(crate::InboxError::Handler(e)) if delivered >= self.max_deliveries => {
                self.dead_letter(message, &e.to_string()).await?;
                answer(AckKind::Term)
                    .await
                    .map(|()| Consumed::DeadLettered(e.to_string()))
            }
            Err(crate::InboxError::Handler(e)) => {
                let delay = std::time::Duration::from_millis(100 << delivered.clamp(0, 10));
                answer(AckKind::Nak(Some(delay)))
                    .await
                    .map(|()| Consumed::Retry(e.to_string()))
            }
        }
    }

    async fn dead_letter(
        &self,
        message: &async_nats::jetstream::Message,
        error: &str,
    ) -> Result<(), ConsumeError> {
        let mut headers = message.headers.clone().unwrap_or_default();
        headers.insert("Outbox-Error", error);
        headers.insert("Outbox-Subject", message.subject.as_str());
        let subject = format!("{}{}", self.dead_letter_prefix, message.subject);
        let nats = |e: &dyn std::fmt::Display| ConsumeError::Broker(e.to_string());
        let publish = Publish::build()
            .payload(message.payload.clone())
            .headers(headers);
        let ack = self
            .jetstream
            .send_publish(subject, publish)
            .await
            .map_err(|e| nats(&e))?;
        ack.await.map(drop).map_err(|e| nats(&e))
    }
}
