//! What an inbox did with a message, whichever store keeps it.

/// What an inbox's `handle` did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Handled<T> {
    /// The effect ran and was recorded: acknowledge the message now.
    Applied(T),
    /// This consumer had already applied this message id: acknowledge it, nothing ran.
    Duplicate,
}
