//! The relay: claims due events from an outbox, publishes them, settles each.

use crate::store::{Claimed, Outbox, OutboxError, Outcome, Settlement};
use crate::{PublishError, Schedule, Sink};
use futures_util::future::join_all;
use parking_lot::Mutex;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// What one [`Relay::run_once`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayRound {
    /// Events claimed.
    pub claimed: usize,
    /// Confirmed by the broker.
    pub published: usize,
    /// Not confirmed, due again on the schedule.
    pub retried: usize,
    /// Given up: dead letters.
    pub dead: usize,
    /// Settled too late: the lease had run out and another relay holds the event now (it is
    /// published again; the event id lets the broker or the consumer drop the repeat).
    pub lost: usize,
}

/// Claims batches from an [`Outbox`] and publishes them through a [`Sink`]: any number of relays
/// (threads, processes, servers) may run on one outbox.
///
/// Defaults: batches of 100, four rounds in flight, a 30 s lease, publishes bounded to half the lease, a 50 ms poll
/// when nothing is due, and the schedule: at once, then 1 s, 5 s, 30 s, 2 min, 10 min, 1 h and
/// 1 h (±20 % jitter) — eight attempts over about 2 h 15 min — then a dead letter.
///
/// ```
/// use outbox::{ChannelSink, Event, MemoryOutbox, Outbox, Relay};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let outbox = MemoryOutbox::new();
/// let (sink, mut published) = ChannelSink::new();
/// let relay = Relay::new(outbox.clone(), sink);
/// outbox.enqueue(&Event::new("orders", "evt_1", "{}").unwrap()).await.unwrap();
/// let round = relay.run_once().await.unwrap();
/// assert_eq!(round.published, 1);
/// assert_eq!(published.recv().await.unwrap().id, "evt_1");
/// # });
/// ```
pub struct Relay<O, S> {
    outbox: O,
    sink: S,
    batch: usize,
    lease: Duration,
    poll: Duration,
    schedule: Schedule,
    concurrency: usize,
    rng: Mutex<fastrand::Rng>,
}

impl<O, S> std::fmt::Debug for Relay<O, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("batch", &self.batch)
            .field("lease", &self.lease)
            .field("poll", &self.poll)
            .field("schedule", &self.schedule)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

fn default_schedule() -> Schedule {
    const M: u64 = 60;
    Schedule::new(
        [1, 5, 30, 2 * M, 10 * M, 60 * M, 60 * M]
            .into_iter()
            .map(Duration::from_secs),
    )
}

impl<O: Outbox, S: Sink> Relay<O, S> {
    /// A relay from `outbox` to `sink` with the defaults above.
    pub fn new(outbox: O, sink: S) -> Self {
        Self {
            outbox,
            sink,
            batch: 100,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(50),
            schedule: default_schedule(),
            concurrency: 4,
            rng: Mutex::new(fastrand::Rng::new()),
        }
    }

    /// Claims up to `n` events a round (at least 1).
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// Holds a claim for `lease`: a relay that dies leaves its events due again after it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Waits `poll` before claiming again when a round found nothing.
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// The attempts' schedule; after its last attempt fails the event is a dead letter.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Keeps `n` rounds in flight in [`run`](Self::run) (at least 1; default 4): while one
    /// round waits for the broker's acks, another claims or settles. Claims never overlap, and
    /// an aggregate's next event is not claimable while its previous one is held, so the order
    /// per aggregate does not depend on it.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Seeds the jitter (reproducible schedules in tests).
    pub fn seed(self, seed: u64) -> Self {
        *self.rng.lock() = fastrand::Rng::with_seed(seed);
        self
    }

    /// The outbox.
    pub fn outbox(&self) -> &O {
        &self.outbox
    }

    /// One round: claim a batch, publish it, settle every event. A publish that takes longer
    /// than half the lease counts as unconfirmed for the whole batch.
    pub async fn run_once(&self) -> Result<RelayRound, OutboxError> {
        let claimed = self.outbox.claim(self.batch, self.lease).await?;
        if claimed.is_empty() {
            return Ok(RelayRound::default());
        }
        let events: Vec<_> = claimed.iter().map(|c| &c.event).collect();
        // A timeout leaves no results: every event of the batch counts as unconfirmed.
        let publish = self.sink.publish(&events);
        let results = tokio::time::timeout(self.lease / 2, publish)
            .await
            .unwrap_or_default();
        let settlements: Vec<Settlement<'_>> = claimed
            .iter()
            .enumerate()
            .map(|(i, c)| self.settlement(c, results.get(i)))
            .collect();
        let settled = self.outbox.settle(&settlements).await?;
        let round = tally(&settlements, settled);
        record(&settlements, &round);
        Ok(round)
    }

    fn settlement<'a>(
        &self,
        claimed: &'a Claimed,
        result: Option<&Result<(), PublishError>>,
    ) -> Settlement<'a> {
        let timed_out = Err(PublishError::Transient("the publish timed out".into()));
        let outcome = match result.unwrap_or(&timed_out) {
            Ok(()) => Outcome::Published,
            Err(PublishError::Rejected(why)) => Outcome::Dead(why.clone()),
            Err(e) => {
                let next = claimed.attempts.saturating_add(2);
                let unit = self.rng.lock().f64();
                match self.schedule.delay(next, unit) {
                    Some(delay) => Outcome::RetryIn(delay, e.to_string()),
                    None => Outcome::Dead(e.to_string()),
                }
            }
        };
        Settlement::new(claimed, outcome)
    }

    /// Runs rounds, [`concurrency`](Self::concurrency) at a time, until `shutdown` completes,
    /// finishing the rounds in progress first. A round that claimed something is followed by the
    /// next at once; an empty one by the poll interval; a store error is logged and retried
    /// after the poll interval.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let stop = AtomicBool::new(false);
        let wake = Notify::new();
        let worker = async || {
            while !stop.load(Ordering::Acquire) {
                let wait = self.round_and_wait().await;
                if stop.load(Ordering::Acquire) {
                    return;
                }
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        };
        let watcher = async {
            shutdown.await;
            stop.store(true, Ordering::Release);
            wake.notify_waiters();
        };
        let workers = join_all((0..self.concurrency).map(|_| worker()));
        tokio::join!(workers, watcher);
    }

    /// One round, and how long to wait before the next.
    async fn round_and_wait(&self) -> Duration {
        match self.run_once().await {
            Ok(round) if round.claimed > 0 => Duration::ZERO,
            Ok(_) => self.poll,
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay: the store failed");
                self.poll
            }
        }
    }
}

/// Counts the round's outcomes and the lag of first attempts (feature `metrics`).
#[cfg(feature = "metrics")]
fn record(settlements: &[Settlement<'_>], round: &RelayRound) {
    for (outcome, n) in [
        ("published", round.published),
        ("retried", round.retried),
        ("dead", round.dead),
        ("lost", round.lost),
    ] {
        if n > 0 {
            metrics::counter!("outbox_events_total", "outcome" => outcome).increment(n as u64);
        }
    }
    for s in settlements.iter().filter(|s| s.claimed.attempts == 0) {
        metrics::histogram!("outbox_publish_lag_seconds").record(s.claimed.age.as_secs_f64());
    }
}

#[cfg(not(feature = "metrics"))]
fn record(_: &[Settlement<'_>], _: &RelayRound) {}

fn tally(settlements: &[Settlement<'_>], settled: usize) -> RelayRound {
    let mut round = RelayRound {
        claimed: settlements.len(),
        lost: settlements.len().saturating_sub(settled),
        ..RelayRound::default()
    };
    for s in settlements {
        match s.outcome {
            Outcome::Published => round.published += 1,
            Outcome::RetryIn(..) => round.retried += 1,
            Outcome::Dead(_) | Outcome::Gone(_) => round.dead += 1,
        }
    }
    round
}
