//! The dispatcher: workers that claim due events, deliver them and settle each attempt.

use crate::webhook::{DeliveryAttempt, NextStep};
use crate::{Delivery, DeliveryError, Endpoint, Schedule, Sender, WebhookEvent};
use outbox::{AttemptNote, Claimed, Outbox, OutboxError, Settlement};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The default claim lease: longer than an attempt's default total timeout (15 s) with margin,
/// so a live dispatcher never loses a claim it is still working on.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// What one claim-deliver-settle round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DispatchRound {
    /// Events claimed.
    pub claimed: usize,
    /// Delivered (2xx).
    pub delivered: usize,
    /// Failed and scheduled again.
    pub retried: usize,
    /// Failed their last attempt.
    pub exhausted: usize,
    /// Answered 410: their endpoint is disabled.
    pub disabled: usize,
    /// Settled too late: the lease had run out and another claim held the event.
    pub lost: usize,
}

impl DispatchRound {
    fn add(&mut self, next: NextStep, settled: bool) {
        if !settled {
            self.lost += 1;
            return;
        }
        match next {
            NextStep::Delivered => self.delivered += 1,
            NextStep::RetryIn(_) => self.retried += 1,
            NextStep::Exhausted => self.exhausted += 1,
            NextStep::DisableEndpoint => self.disabled += 1,
        }
    }
}

/// Delivers the webhooks of an [`Outbox`] (the `outbox` crate's: in memory or on PostgreSQL): `workers` loops, each claiming up to `batch` due
/// events under a lease, delivering them concurrently and settling every attempt.
///
/// Delivery is at-least-once: a dispatcher that dies after a receiver answered but before the
/// settle leaves the event due again when its lease runs out, and the receiver sees it twice
/// with the same `webhook-id` (which `webhook_sig::ReplayGuard` deduplicates).
///
/// ```no_run
/// use webhook_delivery::{Dispatcher, Endpoint, MemoryOutbox, Sender};
/// use webhook_sig::{Scheme, Secret, Signer};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let secret = Secret::from_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
/// let outbox = MemoryOutbox::new();
/// let dispatcher = Dispatcher::new(outbox.clone(), Sender::new()?)
///     .endpoint(Endpoint::new("orders-hook", "https://hooks.example.com/orders",
///         Signer::new(Scheme::StandardWebhooks, &secret))?)
///     .workers(4);
/// let (_stop, stopped) = tokio::sync::oneshot::channel::<()>(); // send on `_stop` to shut down
/// dispatcher.run(async { let _ = stopped.await; }).await;
/// # Ok(()) }
/// ```
pub struct Dispatcher<O> {
    outbox: Arc<O>,
    sender: Sender,
    endpoints: HashMap<String, Endpoint>,
    schedule: Schedule,
    lease: Duration,
    batch: usize,
    workers: usize,
    poll: Duration,
    rng: Mutex<fastrand::Rng>,
}

impl<O> std::fmt::Debug for Dispatcher<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("endpoints", &self.endpoints.keys().collect::<Vec<_>>())
            .field("schedule", &self.schedule)
            .field("lease", &self.lease)
            .field("batch", &self.batch)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl<O: Outbox> Dispatcher<O> {
    /// A dispatcher of `outbox`'s events through `sender`: 4 workers, batches of 10, the
    /// default [`Schedule`], a 60 s claim and a 1 s poll when nothing is due.
    pub fn new(outbox: O, sender: Sender) -> Self {
        Self {
            outbox: Arc::new(outbox),
            sender,
            endpoints: HashMap::new(),
            schedule: Schedule::default(),
            lease: DEFAULT_LEASE,
            batch: 10,
            workers: 4,
            poll: Duration::from_secs(1),
            rng: Mutex::new(fastrand::Rng::new()),
        }
    }

    /// Delivers the events named for `endpoint.name()` to it.
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.insert(endpoint.name().to_owned(), endpoint);
        self
    }

    /// The attempt schedule.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// How long a claim holds an event (keep it above the sender's timeout).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Events claimed per round (at least 1).
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Concurrent worker loops in [`run`](Self::run) (at least 1).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// How long an idle worker waits before it looks for due events again.
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Seeds the jitter, for reproducible schedules.
    pub fn seed(self, seed: u64) -> Self {
        *self.rng.lock() = fastrand::Rng::with_seed(seed);
        self
    }

    /// The outbox.
    pub fn outbox(&self) -> &O {
        &self.outbox
    }

    /// One round: claims up to `batch` due events, delivers them concurrently and settles each.
    pub async fn run_once(&self) -> Result<DispatchRound, OutboxError> {
        let claimed = self.outbox.claim(self.batch, self.lease).await?;
        let mut round = DispatchRound {
            claimed: claimed.len(),
            ..DispatchRound::default()
        };
        let outcomes =
            futures_util::future::join_all(claimed.iter().map(|c| self.attempt(c))).await;
        let mut first_error = None;
        for outcome in outcomes {
            match outcome {
                Ok((next, settled)) => round.add(next, settled),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(round),
        }
    }

    /// Runs the workers until `shutdown` completes; then each finishes the round it is in (at
    /// most the sender's timeout) and returns. Outbox failures are logged and retried after
    /// the poll interval, so a database restart does not stop delivery.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let stopping = AtomicBool::new(false);
        let wake = tokio::sync::Notify::new();
        let workers = futures_util::future::join_all((0..self.workers).map(|_| async {
            while !stopping.load(Ordering::Acquire) {
                let idle = match self.run_once().await {
                    Ok(round) => round.claimed == 0,
                    Err(e) => {
                        tracing::error!(error = %e, source = ?std::error::Error::source(&e), "webhook outbox unavailable");
                        true
                    }
                };
                if idle && !stopping.load(Ordering::Acquire) {
                    tokio::select! {
                        _ = tokio::time::sleep(self.poll) => {}
                        _ = wake.notified() => {}
                    }
                }
            }
        }));
        let stop = async {
            shutdown.await;
            stopping.store(true, Ordering::Release);
            wake.notify_waiters();
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = workers => {}
            _ = stop => {}
        }
    }

    /// Delivers one claimed event and settles it: `(what follows, whether the claim held)`.
    async fn attempt(&self, claimed: &Claimed) -> Result<(NextStep, bool), OutboxError> {
        let event = WebhookEvent::from_event(&claimed.event);
        let number = claimed.attempts.saturating_add(1);
        let delivery = match self.endpoints.get(&event.endpoint) {
            Some(endpoint) => self.sender.send(endpoint, &event).await,
            None => Delivery::failed(DeliveryError::UnknownEndpoint(event.endpoint.clone())),
        };
        let unit = self.rng.lock().f64();
        let next = delivery.next(number, &self.schedule, unit);
        let attempt = DeliveryAttempt::new(
            number,
            delivery.status,
            delivery.latency,
            delivery.error.as_ref().map(ToString::to_string),
        );
        let note = AttemptNote::new(attempt.status, attempt.latency);
        let settlement =
            Settlement::new(claimed, next.outcome(attempt.error.as_deref())).with_attempt(note);
        let settled = self.outbox.settle(&[settlement]).await? == 1;
        report(claimed, &attempt, next, settled);
        Ok((next, settled))
    }
}

fn report(claimed: &Claimed, attempt: &DeliveryAttempt, next: NextStep, settled: bool) {
    let (endpoint, id) = (&claimed.event.topic, &claimed.event.id);
    let (number, status) = (attempt.number, attempt.status);
    let latency_ms = attempt.latency.as_millis() as u64;
    let error = attempt.error.as_deref().unwrap_or("");
    if !settled {
        tracing::warn!(
            endpoint,
            id,
            number,
            "webhook claim lost before settling: another dispatcher holds the event"
        );
        return;
    }
    let outcome = match next {
        NextStep::Delivered => {
            tracing::info!(
                endpoint,
                id,
                number,
                ?status,
                latency_ms,
                "webhook delivered"
            );
            "delivered"
        }
        NextStep::RetryIn(delay) => {
            let retry_in_ms = delay.as_millis() as u64;
            tracing::warn!(
                endpoint,
                id,
                number,
                ?status,
                latency_ms,
                retry_in_ms,
                error,
                "webhook attempt failed; retrying"
            );
            "retried"
        }
        NextStep::Exhausted => {
            tracing::error!(
                endpoint,
                id,
                number,
                ?status,
                error,
                "webhook exhausted its attempts"
            );
            "exhausted"
        }
        NextStep::DisableEndpoint => {
            tracing::error!(
                endpoint,
                id,
                number,
                "webhook endpoint answered 410 Gone: disabled"
            );
            "disabled"
        }
    };
    #[cfg(feature = "metrics")]
    {
        metrics::counter!("webhook_deliveries_total", "outcome" => outcome).increment(1);
        if claimed.attempts == 0 {
            metrics::histogram!("webhook_outbox_lag_seconds").record(claimed.age.as_secs_f64());
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}
