//! What a broker consumer did with a message, whichever broker.

/// What a consumer's `handle` did with a message (it has answered the broker in each case).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Consumed<T> {
    /// The effect ran and committed; the message is acknowledged.
    Applied(T),
    /// The inbox had seen the message id; nothing ran; the message is acknowledged.
    Duplicate,
    /// The effect failed; the message goes back to the broker for redelivery.
    Retry(String),
    /// The effect failed on the last allowed delivery: the message went to the dead letters.
    DeadLettered(String),
}

/// A failure that leaves the message unanswered: the broker redelivers it (after JetStream's
/// ack wait; when the channel closes, for RabbitMQ).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// The message carries no id to deduplicate on (no `message-id` property; not a JetStream
    /// message).
    #[error("the message carries no message id")]
    NoMessageId,
    /// PostgreSQL failed (the inbox); nothing is known to have committed but by the inbox.
    #[error("the inbox's store failed")]
    Store(#[source] retry_safe_core::BackendError),
    /// Answering the broker, or publishing the dead letter, failed.
    #[error("answering the broker failed: {0}")]
    Broker(String),
}
