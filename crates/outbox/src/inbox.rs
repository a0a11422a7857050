//! The consumer half on PostgreSQL: a message's effect applied once, whatever the broker
//! redelivers.

use crate::postgres::{connect, migrate, SetupError};
use retry_safe_core::BackendError;
use sqlx::{PgConnection, PgPool};

pub use crate::inbox_outcome::Handled;

/// A message could not be handled: do not acknowledge it (the broker redelivers it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError<E> {
    /// PostgreSQL failed; whether the effect committed is unknown only when the commit itself
    /// failed, and the redelivery finds out (the inbox row commits with the effect).
    #[error("the inbox's store failed")]
    Backend(#[source] BackendError),
    /// The effect failed: its transaction, the inbox row with it, rolled back.
    #[error("the message's handler failed")]
    Handler(#[source] E),
}

fn backend<E>(e: sqlx::Error) -> InboxError<E> {
    InboxError::Backend(BackendError::Unavailable(Box::new(e)))
}

/// The inbox of one consumer on PostgreSQL: each message id's effect runs in a transaction that
/// also inserts the id into `outbox_inbox`, so the effect and "seen" commit together. A
/// redelivery (after a crash before the ack, a broker's redelivery, a relay's re-publish) finds
/// the row and runs nothing; two deliveries at once serialize on the row's unique key, and the
/// second sees the first's commit. Acknowledge the message after `handle` returns `Ok`.
///
/// ```no_run
/// use outbox::{Handled, PgInbox};
///
/// # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// let inbox = PgInbox::new(pool, "read-model");
/// inbox.migrate().await?;
/// let handled = inbox
///     .handle("evt_ord_1", async |tx: &mut sqlx::PgConnection| {
///         sqlx::query("UPDATE order_counts SET n = n + 1").execute(&mut *tx).await?;
///         Ok::<_, sqlx::Error>(())
///     })
///     .await?;
/// assert!(matches!(handled, Handled::Applied(())));
/// // then ack the message
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PgInbox {
    pool: PgPool,
    consumer: String,
}

impl PgInbox {
    /// The inbox of `consumer` (its name: each consumer applies each message once) on `pool`.
    pub fn new(pool: PgPool, consumer: impl Into<String>) -> Self {
        Self {
            pool,
            consumer: consumer.into(),
        }
    }

    /// Connects a pool of at most 8 connections to `url`.
    pub async fn connect(url: &str, consumer: impl Into<String>) -> Result<Self, SetupError> {
        Ok(Self::new(connect(url).await?, consumer))
    }

    /// Applies the embedded migrations (the outbox's: one set for both).
    pub async fn migrate(&self) -> Result<(), SetupError> {
        migrate(&self.pool).await
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs `effect` in a transaction with the inbox row of `message_id`, unless this consumer
    /// applied that id already.
    pub async fn handle<T, E, F>(
        &self,
        message_id: &str,
        effect: F,
    ) -> Result<Handled<T>, InboxError<E>>
    where
        F: AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
    {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let fresh = sqlx::query(
            "INSERT INTO outbox_inbox (consumer, message_id) VALUES ($1, $2)
             ON CONFLICT DO NOTHING",
        )
        .bind(&self.consumer)
        .bind(message_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected()
            == 1;
        if !fresh {
            tx.rollback().await.map_err(backend)?;
            return Ok(Handled::Duplicate);
        }
        match effect(&mut tx).await {
            Ok(value) => {
                tx.commit().await.map_err(backend)?;
                Ok(Handled::Applied(value))
            }
            Err(e) => {
                // Dropping the transaction rolls it back; say so to the server now.
                let _ = tx.rollback().await;
                Err(InboxError::Handler(e))
            }
        }
    }

    /// Whether this consumer applied `message_id`.
    pub async fn seen(&self, message_id: &str) -> Result<bool, BackendError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM outbox_inbox WHERE consumer = $1 AND message_id = $2)",
        )
        .bind(&self.consumer)
        .bind(message_id)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| BackendError::Unavailable(Box::new(e)))
    }
}
