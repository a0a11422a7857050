//! Webhooks in the `outbox` crate's outbox: an event's topic is its endpoint's name, its
//! `content-type` header its content type; what a delivery attempt found, and where an event
//! stands, in webhook terms.

use crate::WebhookEvent;
use async_trait::async_trait;
use outbox::{Outbox, OutboxError};
use std::time::{Duration, SystemTime};

/// What one attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryAttempt {
    /// Its number (1 = the first).
    pub number: u32,
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    /// From sending the request to the end of the answer's head (or to the failure).
    pub latency: Duration,
    /// Why it failed, when it did (no secret ever appears here).
    pub error: Option<String>,
}

impl DeliveryAttempt {
    /// An attempt record.
    pub fn new(number: u32, status: Option<u16>, latency: Duration, error: Option<String>) -> Self {
        Self {
            number,
            status,
            latency,
            error,
        }
    }
}

/// An attempt as the outbox recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptRecord {
    /// What the attempt found.
    pub attempt: DeliveryAttempt,
    /// When the outbox recorded it (its own clock).
    pub at: SystemTime,
}

/// What happens to a claimed event after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NextStep {
    /// The receiver answered 2xx: done.
    Delivered,
    /// Attempt again after this delay.
    RetryIn(Duration),
    /// The last scheduled attempt failed: give up (a dead letter, replayable).
    Exhausted,
    /// The receiver answered 410 Gone: give up on this event, and hold the endpoint's other
    /// events until it is enabled again.
    DisableEndpoint,
}

impl NextStep {
    /// The outbox's outcome for this step after an attempt that failed with `error`.
    pub(crate) fn outcome(self, error: Option<&str>) -> outbox::Outcome {
        let error = || error.unwrap_or("failed").to_owned();
        match self {
            Self::Delivered => outbox::Outcome::Published,
            Self::RetryIn(delay) => outbox::Outcome::RetryIn(delay, error()),
            Self::Exhausted => outbox::Outcome::Dead(error()),
            Self::DisableEndpoint => outbox::Outcome::Gone(error()),
        }
    }
}

/// Where an event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventState {
    /// Waiting for its next attempt (or being attempted).
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Every scheduled attempt failed (a dead letter of the outbox: `replay` sends it again).
    Exhausted,
    /// Its endpoint answered 410 Gone.
    EndpointDisabled,
}

/// An event's state and its attempts, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventStatus {
    /// Its state.
    pub state: EventState,
    /// Every attempt made, oldest first.
    pub attempts: Vec<AttemptRecord>,
}

/// Webhook operations on any [`Outbox`] (`outbox::MemoryOutbox`, `outbox::PostgresOutbox`):
/// implemented for all of them.
///
/// ```
/// use webhook_delivery::{EventState, MemoryOutbox, WebhookEvent, WebhookOutbox};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let outbox = MemoryOutbox::new();
/// let event = WebhookEvent::new("orders-hook", "evt_1", "{}").unwrap();
/// assert!(outbox.enqueue_webhook(&event).await.unwrap());
/// assert!(!outbox.enqueue_webhook(&event).await.unwrap()); // queued once per endpoint and id
/// let status = outbox.webhook_status("orders-hook", "evt_1").await.unwrap().unwrap();
/// assert_eq!(status.state, EventState::Pending);
/// # });
/// ```
#[async_trait]
pub trait WebhookOutbox: Outbox {
    /// Queues `event`, due at once; `false` when the same (endpoint, id) is already queued.
    async fn enqueue_webhook(&self, event: &WebhookEvent) -> Result<bool, OutboxError> {
        self.enqueue(&event.to_event()?).await
    }

    /// The state and attempts of event `id` for `endpoint`, if it is in the outbox.
    async fn webhook_status(
        &self,
        endpoint: &str,
        id: &str,
    ) -> Result<Option<EventStatus>, OutboxError> {
        let Some(status) = self.status(endpoint, id).await? else {
            return Ok(None);
        };
        let attempts: Vec<AttemptRecord> = self
            .attempts(endpoint, id)
            .await?
            .into_iter()
            .map(|a| AttemptRecord {
                attempt: DeliveryAttempt::new(a.number, a.note.status, a.note.latency, a.error),
                at: a.at,
            })
            .collect();
        let gone = attempts
            .last()
            .is_some_and(|a| a.attempt.status == Some(410));
        let state = match status.state {
            outbox::EventState::Published => EventState::Delivered,
            outbox::EventState::Dead if gone => EventState::EndpointDisabled,
            outbox::EventState::Dead => EventState::Exhausted,
            _ => EventState::Pending,
        };
        Ok(Some(EventStatus { state, attempts }))
    }

    /// Lets the events of `endpoint` be claimed again after a 410; `false` when it was not
    /// disabled.
    async fn enable_endpoint(&self, endpoint: &str) -> Result<bool, OutboxError> {
        self.resume_topic(endpoint).await
    }

    /// The endpoints disabled by a 410, by name.
    async fn disabled_endpoints(&self) -> Result<Vec<String>, OutboxError> {
        self.paused_topics().await
    }
}

impl<O: Outbox + ?Sized> WebhookOutbox for O {}
