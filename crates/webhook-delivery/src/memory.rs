//! The embedded outbox: in this process's memory, bounded, not durable.

use crate::outbox::{
    AttemptRecord, Claimed, DeliveryAttempt, EventState, EventStatus, NextStep, Outbox,
    OutboxError, OutboxStats,
};
use crate::WebhookEvent;
use async_trait::async_trait;
use parking_lot::Mutex;
use retry_safe_core::{duration_to_nanos, Clock, SystemClock};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// The default capacity of a [`MemoryOutbox`], in events (finished ones included until purged).
pub(crate) const DEFAULT_CAPACITY: usize = 100_000;

/// An outbox in memory: the embedded default, for one process and for tests.
///
/// **Not durable**: events queued here are lost when the process stops, and enqueueing is not
/// part of any database transaction. Use `PostgresOutbox` (feature `postgres`) when an event must
/// survive a crash and commit with the business write that caused it.
///
/// ```
/// use std::time::Duration;
/// use webhook_delivery::{WebhookEvent, MemoryOutbox, Outbox};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let outbox = MemoryOutbox::new();
/// let event = WebhookEvent::new("hook", "evt_1", "{}").unwrap();
/// assert!(outbox.enqueue(&event).await.unwrap());
/// assert!(!outbox.enqueue(&event).await.unwrap()); // the same id is queued once
/// let claimed = outbox.claim(10, Duration::from_secs(60)).await.unwrap();
/// assert_eq!(claimed.len(), 1);
/// assert!(outbox.claim(10, Duration::from_secs(60)).await.unwrap().is_empty()); // held
/// # });
/// ```
#[derive(Clone)]
pub struct MemoryOutbox {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
    capacity: usize,
}

impl std::fmt::Debug for MemoryOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("MemoryOutbox")
            .field("events", &inner.rows.len())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    rows: BTreeMap<i64, Row>,
    by_key: HashMap<(String, String), i64>,
    /// Pending rows by (due, row): the claim order.
    due: BTreeSet<(u64, i64)>,
    disabled: BTreeMap<String, String>,
    next_row: i64,
    next_claim: i64,
}

struct Row {
    event: WebhookEvent,
    state: EventState,
    due: u64,
    claim: i64,
    created: u64,
    finished: Option<u64>,
    attempts: Vec<AttemptRecord>,
}

impl Default for MemoryOutbox {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryOutbox {
    /// An empty outbox of 100,000 events on the system clock.
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            clock: Arc::new(SystemClock::new()),
            capacity: DEFAULT_CAPACITY,
        }
    }

    /// Reads time (due times, leases, ages) from `clock`: a `ManualClock` makes the schedule
    /// testable without waiting.
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// At most `capacity` events (finished ones count until purged): enqueueing more fails with
    /// [`OutboxError::Full`].
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    fn now(&self) -> u64 {
        self.clock.now_nanos()
    }
}

fn state_counts(inner: &Inner, now: u64) -> OutboxStats {
    let mut stats = OutboxStats::default();
    for row in inner.rows.values() {
        match row.state {
            EventState::Pending => {
                stats.pending += 1;
                let age = Duration::from_nanos(now.saturating_sub(row.created));
                stats.oldest_pending = Some(stats.oldest_pending.map_or(age, |o| o.max(age)));
            }
            EventState::Delivered => stats.delivered += 1,
            EventState::Exhausted => stats.exhausted += 1,
            EventState::EndpointDisabled => stats.disabled += 1,
        }
    }
    stats
}

#[async_trait]
impl Outbox for MemoryOutbox {
    async fn enqueue(&self, event: &WebhookEvent) -> Result<bool, OutboxError> {
        let now = self.now();
        let mut inner = self.inner.lock();
        let key = (event.endpoint.clone(), event.id.clone());
        if inner.by_key.contains_key(&key) {
            return Ok(false);
        }
        if inner.rows.len() >= self.capacity {
            return Err(OutboxError::Full {
                capacity: self.capacity,
            });
        }
        inner.next_row += 1;
        let row = inner.next_row;
        inner.by_key.insert(key, row);
        inner.due.insert((now, row));
        inner.rows.insert(
            row,
            Row {
                event: event.clone(),
                state: EventState::Pending,
                due: now,
                claim: 0,
                created: now,
                finished: None,
                attempts: Vec::new(),
            },
        );
        Ok(true)
    }

    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Claimed>, OutboxError> {
        let now = self.now();
        let until = now.saturating_add(duration_to_nanos(lease));
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let mut picked = Vec::new();
        for &(due, row) in inner.due.iter() {
            if due > now || picked.len() >= max {
                break;
            }
            let held = inner
                .rows
                .get(&row)
                .is_none_or(|r| inner.disabled.contains_key(&r.event.endpoint));
            if !held {
                picked.push((due, row));
            }
        }
        let mut claimed = Vec::with_capacity(picked.len());
        for (due, row) in picked {
            inner.due.remove(&(due, row));
            inner.due.insert((until, row));
            inner.next_claim += 1;
            let claim = inner.next_claim;
            let Some(r) = inner.rows.get_mut(&row) else {
                continue;
            };
            r.due = until;
            r.claim = claim;
            claimed.push(Claimed {
                event: r.event.clone(),
                attempts: u32::try_from(r.attempts.len()).unwrap_or(u32::MAX),
                row,
                claim,
                age: Duration::from_nanos(now.saturating_sub(r.created)),
            });
        }
        Ok(claimed)
    }

    async fn settle(
        &self,
        claimed: &Claimed,
        attempt: &DeliveryAttempt,
        next: NextStep,
    ) -> Result<bool, OutboxError> {
        let now = self.now();
        let at = UNIX_EPOCH + self.clock.unix_time();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let Some(row) = inner.rows.get_mut(&claimed.row) else {
            return Ok(false);
        };
        if row.claim != claimed.claim || row.state != EventState::Pending {
            return Ok(false);
        }
        row.attempts.push(AttemptRecord {
            attempt: attempt.clone(),
            at,
        });
        inner.due.remove(&(row.due, claimed.row));
        match next {
            NextStep::RetryIn(delay) => {
                row.due = now.saturating_add(duration_to_nanos(delay));
                inner.due.insert((row.due, claimed.row));
            }
            NextStep::Delivered | NextStep::Exhausted | NextStep::DisableEndpoint => {
                row.state = match next {
                    NextStep::Delivered => EventState::Delivered,
                    NextStep::Exhausted => EventState::Exhausted,
                    _ => EventState::EndpointDisabled,
                };
                row.finished = Some(now);
                if next == NextStep::DisableEndpoint {
                    let reason = attempt.error.clone().unwrap_or_else(|| "410 Gone".into());
                    inner.disabled.insert(row.event.endpoint.clone(), reason);
                }
            }
        }
        Ok(true)
    }

    async fn enable_endpoint(&self, endpoint: &str) -> Result<bool, OutboxError> {
        Ok(self.inner.lock().disabled.remove(endpoint).is_some())
    }

    async fn disabled_endpoints(&self) -> Result<Vec<String>, OutboxError> {
        Ok(self.inner.lock().disabled.keys().cloned().collect())
    }

    async fn status(&self, endpoint: &str, id: &str) -> Result<Option<EventStatus>, OutboxError> {
        let inner = self.inner.lock();
        let row = inner
            .by_key
            .get(&(endpoint.to_owned(), id.to_owned()))
            .and_then(|r| inner.rows.get(r));
        Ok(row.map(|row| EventStatus {
            state: row.state,
            attempts: row.attempts.clone(),
        }))
    }

    async fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let now = self.now();
        Ok(state_counts(&self.inner.lock(), now))
    }

    async fn purge_finished(&self, older_than: Duration) -> Result<u64, OutboxError> {
        let now = self.now();
        let cutoff = now.saturating_sub(duration_to_nanos(older_than));
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let gone: Vec<i64> = inner
            .rows
            .iter()
            .filter(|(_, r)| r.finished.is_some_and(|f| f <= cutoff))
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            if let Some(row) = inner.rows.remove(id) {
                inner.by_key.remove(&(row.event.endpoint, row.event.id));
            }
        }
        Ok(gone.len() as u64)
    }
}
