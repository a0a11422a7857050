//! What an outbox holds: an event, its topic, its aggregate and its headers.

use bytes::Bytes;
use std::time::Duration;

/// The longest event id, topic or aggregate accepted, in bytes.
pub(crate) const MAX_NAME: usize = 255;

/// An event could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// A name (the id, the topic, the aggregate, a header name) is empty, over 255 bytes, or
    /// holds a control character or a space.
    #[error(
        "the event's {what} is empty, over 255 bytes, or holds a space or a control character"
    )]
    BadName {
        /// Which name.
        what: &'static str,
    },
    /// A header value holds a control character (CR, LF or NUL would split a broker's header).
    #[error("the value of event header `{name}` holds a control character")]
    BadHeaderValue {
        /// The header's name.
        name: String,
    },
}

/// One event to publish.
///
/// - `id`: the event's identity, unique per topic. The relay sends it as the message id
///   (`Nats-Msg-Id`, AMQP `message-id`), so the broker's dedupe window and the consumer's inbox
///   drop a re-publish.
/// - `topic`: where it goes (a NATS subject, a RabbitMQ routing key).
/// - `aggregate` (optional): the entity it is about (`order:ord_1`). Events of one aggregate are
///   published one after the other in the order they were enqueued, across topics; events of
///   different aggregates, and events without one, go out in parallel.
/// - `delay` (optional): how long after its enqueue it may be published at the earliest (the
///   outbox's clock decides: the database's for PostgreSQL), for a not-before time.
///
/// ```
/// use outbox::Event;
/// use std::time::Duration;
///
/// let event = Event::new("orders.created", "evt_ord_1", r#"{"id":"ord_1"}"#)?
///     .aggregate("order:ord_1")?
///     .header("content-type", "application/json")?
///     .delay(Duration::from_secs(5));
/// assert_eq!(event.aggregate.as_deref(), Some("order:ord_1"));
/// assert!(Event::new("orders created", "evt_2", "{}").is_err()); // a space in the topic
/// # Ok::<(), outbox::EventError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// The event id (the broker's message id).
    pub id: String,
    /// Where it is published.
    pub topic: String,
    /// The entity whose events keep their order.
    pub aggregate: Option<String>,
    /// The body.
    pub payload: Bytes,
    /// Headers passed to the broker with the message, in order.
    pub headers: Vec<(String, String)>,
    /// Not published before this long after the enqueue (zero: at once).
    pub delay: Duration,
}

fn check_name(what: &'static str, value: &str) -> Result<(), EventError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME
        && !value.chars().any(|c| c.is_control() || c.is_whitespace());
    ok.then_some(()).ok_or(EventError::BadName { what })
}

impl Event {
    /// An event `id` for `topic` with `payload`.
    pub fn new(
        topic: impl Into<String>,
        id: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Result<Self, EventError> {
        let (topic, id) = (topic.into(), id.into());
        check_name("topic", &topic)?;
        check_name("id", &id)?;
        Ok(Self {
            id,
            topic,
            aggregate: None,
            payload: payload.into(),
            headers: Vec::new(),
            delay: Duration::ZERO,
        })
    }

    /// Orders this event after the earlier events of `aggregate`.
    pub fn aggregate(mut self, aggregate: impl Into<String>) -> Result<Self, EventError> {
        let aggregate = aggregate.into();
        check_name("aggregate", &aggregate)?;
        self.aggregate = Some(aggregate);
        Ok(self)
    }

    /// Adds a header for the broker.
    pub fn header(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, EventError> {
        let (name, value) = (name.into(), value.into());
        check_name("header name", &name)?;
        if value.chars().any(char::is_control) {
            return Err(EventError::BadHeaderValue { name });
        }
        self.headers.push((name, value));
        Ok(self)
    }

    /// Not published before `delay` after the enqueue (the outbox's clock: the database's for
    /// PostgreSQL).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}
