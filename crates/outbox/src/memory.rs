//! The embedded outbox: in this process's memory, bounded, not durable.

use crate::store::{
    AttemptRecord, Claimed, DeadLetter, EventState, EventStatus, Outbox, OutboxError, OutboxStats,
    Outcome, Settlement,
};
use crate::Event;
use async_trait::async_trait;
use parking_lot::Mutex;
use retry_safe_core::{duration_to_nanos, Clock, SystemClock};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// The default capacity of a [`MemoryOutbox`], in events (published ones count until purged).
pub(crate) const DEFAULT_CAPACITY: usize = 100_000;

/// An outbox in memory: the embedded default, for one process and for tests.
///
/// **Not durable**: its events are lost when the process stops, and enqueueing is not part of
/// any database transaction. Use `PostgresOutbox` (feature `postgres`) when an event must
/// survive a crash and commit with the business write that caused it.
///
/// ```
/// use outbox::{Event, MemoryOutbox, Outbox};
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let outbox = MemoryOutbox::new();
/// let first = Event::new("orders", "evt_1", "{}").unwrap().aggregate("ord_1").unwrap();
/// let second = Event::new("orders", "evt_2", "{}").unwrap().aggregate("ord_1").unwrap();
/// assert!(outbox.enqueue(&first).await.unwrap());
/// assert!(!outbox.enqueue(&first).await.unwrap()); // the same id is queued once
/// outbox.enqueue(&second).await.unwrap();
/// let claimed = outbox.claim(10, Duration::from_secs(60)).await.unwrap();
/// assert_eq!(claimed.len(), 1); // evt_2 waits for evt_1, its aggregate's previous event
/// # });
/// ```
#[derive(Clone)]
pub struct MemoryOutbox {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
    capacity: usize,
    /// The topics `claim` hands out (`None`: all).
    topics: Option<Arc<BTreeSet<String>>>,
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
    /// Pending rows of each aggregate, oldest first: only the first may be claimed.
    aggregates: HashMap<String, BTreeSet<i64>>,
    /// Topics whose events are not claimed (a destination that answered "gone").
    paused: BTreeSet<String>,
    next_row: i64,
    next_claim: i64,
}

struct Row {
    event: Event,
    state: EventState,
    due: u64,
    claim: i64,
    created: u64,
    finished: Option<u64>,
    attempts: u32,
    last_error: Option<String>,
    history: Vec<AttemptRecord>,
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
            topics: None,
        }
    }

    /// The same outbox (clones share the events), claiming only the events of `topics`; the
    /// other calls still see every event.
    pub fn only_topics<T: Into<String>>(mut self, topics: impl IntoIterator<Item = T>) -> Self {
        self.topics = Some(Arc::new(topics.into_iter().map(Into::into).collect()));
        self
    }

    fn claims(&self, inner: &Inner, row: i64) -> bool {
        let wanted = |r: &Row| {
            self.topics
                .as_ref()
                .is_none_or(|t| t.contains(&r.event.topic))
        };
        inner.rows.get(&row).is_some_and(wanted) && inner.is_head(row) && !inner.is_paused(row)
    }

    /// Reads time (due times, leases, ages) from `clock`: a `ManualClock` makes backoff and
    /// leases testable without waiting.
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// At most `capacity` events (published ones and dead letters count until purged):
    /// enqueueing more fails with [`OutboxError::Full`].
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    fn now(&self) -> u64 {
        self.clock.now_nanos()
    }
}

impl Inner {
    fn is_paused(&self, row: i64) -> bool {
        self.rows
            .get(&row)
            .is_some_and(|r| self.paused.contains(&r.event.topic))
    }

    fn is_head(&self, row: i64) -> bool {
        let aggregate = self.rows.get(&row).and_then(|r| r.event.aggregate.as_ref());
        aggregate.is_none_or(|a| {
            self.aggregates
                .get(a)
                .and_then(|rows| rows.first())
                .is_none_or(|&first| first == row)
        })
    }

    /// Makes `row` pending, due at `due`.
    fn make_pending(&mut self, row: i64, due: u64) {
        let Some(r) = self.rows.get_mut(&row) else {
            return;
        };
        r.state = EventState::Pending;
        r.due = due;
        r.finished = None;
        self.due.insert((due, row));
        if let Some(a) = &r.event.aggregate {
            self.aggregates.entry(a.clone()).or_default().insert(row);
        }
    }

    /// Takes `row` out of the pending indexes as `state`.
    fn finish(&mut self, row: i64, state: EventState, now: u64) {
        let Some(r) = self.rows.get_mut(&row) else {
            return;
        };
        self.due.remove(&(r.due, row));
        r.state = state;
        r.finished = Some(now);
        if let Some(a) = &r.event.aggregate {
            if let Some(rows) = self.aggregates.get_mut(a) {
                rows.remove(&row);
                if rows.is_empty() {
                    self.aggregates.remove(a);
                }
            }
        }
    }

    fn settle_one(&mut self, s: &Settlement<'_>, now: u64, wall: std::time::SystemTime) -> bool {
        let row = s.claimed.row;
        let Some(r) = self.rows.get_mut(&row) else {
            return false;
        };
        if r.claim != s.claimed.claim || r.state != EventState::Pending {
            return false;
        }
        r.attempts = r.attempts.saturating_add(1);
        if let Some(note) = s.attempt {
            let error = match &s.outcome {
                Outcome::Published => None,
                Outcome::RetryIn(_, e) | Outcome::Dead(e) | Outcome::Gone(e) => Some(e.clone()),
            };
            let number = r.attempts;
            r.history.push(AttemptRecord {
                number,
                at: wall,
                note,
                error,
            });
        }
        let finished = match &s.outcome {
            Outcome::Published => {
                r.last_error = None;
                EventState::Published
            }
            Outcome::RetryIn(delay, error) => {
                r.last_error = Some(error.clone());
                let due = now.saturating_add(duration_to_nanos(*delay));
                self.due.remove(&(r.due, row));
                r.due = due;
                self.due.insert((due, row));
                return true;
            }
            Outcome::Dead(error) => {
                r.last_error = Some(error.clone());
                EventState::Dead
            }
            Outcome::Gone(error) => {
                r.last_error = Some(error.clone());
                let topic = r.event.topic.clone();
                self.paused.insert(topic);
                EventState::Dead
            }
        };
        self.finish(row, finished, now);
        true
    }

    fn replay_row(&mut self, row: i64, now: u64) -> bool {
        match self.rows.get_mut(&row) {
            Some(r) if r.state == EventState::Dead => r.attempts = 0,
            _ => return false,
        }
        self.make_pending(row, now);
        true
    }
}

fn claimed_of(r: &Row, row: i64, now: u64) -> Claimed {
    Claimed {
        event: r.event.clone(),
        attempts: r.attempts,
        row,
        claim: r.claim,
        age: Duration::from_nanos(now.saturating_sub(r.created)),
    }
}

#[async_trait]
impl Outbox for MemoryOutbox {
    async fn enqueue(&self, event: &Event) -> Result<bool, OutboxError> {
        let now = self.now();
        let mut inner = self.inner.lock();
        let key = (event.topic.clone(), event.id.clone());
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
        let row_data = Row {
            event: event.clone(),
            state: EventState::Pending,
            due: now,
            claim: 0,
            created: now,
            finished: None,
            attempts: 0,
            last_error: None,
            history: Vec::new(),
        };
        inner.rows.insert(row, row_data);
        inner.make_pending(row, now.saturating_add(duration_to_nanos(event.delay)));
        Ok(true)
    }

    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Claimed>, OutboxError> {
        let now = self.now();
        let until = now.saturating_add(duration_to_nanos(lease));
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let picked: Vec<(u64, i64)> = inner
            .due
            .iter()
            .take_while(|(due, _)| *due <= now)
            .filter(|(_, row)| self.claims(inner, *row))
            .take(max)
            .copied()
            .collect();
        let mut claimed = Vec::with_capacity(picked.len());
        for (due, row) in picked {
            inner.due.remove(&(due, row));
            inner.due.insert((until, row));
            inner.next_claim += 1;
            let claim = inner.next_claim;
            if let Some(r) = inner.rows.get_mut(&row) {
                r.due = until;
                r.claim = claim;
                claimed.push(claimed_of(r, row, now));
            }
        }
        Ok(claimed)
    }

    async fn settle(&self, settlements: &[Settlement<'_>]) -> Result<usize, OutboxError> {
        let now = self.now();
        let wall = std::time::UNIX_EPOCH + self.clock.unix_time();
        let mut inner = self.inner.lock();
        Ok(settlements
            .iter()
            .filter(|s| inner.settle_one(s, now, wall))
            .count())
    }

    async fn attempts(&self, topic: &str, id: &str) -> Result<Vec<AttemptRecord>, OutboxError> {
        let inner = self.inner.lock();
        let row = inner.by_key.get(&(topic.to_owned(), id.to_owned()));
        Ok(row
            .and_then(|row| inner.rows.get(row))
            .map(|r| r.history.clone())
            .unwrap_or_default())
    }

    async fn resume_topic(&self, topic: &str) -> Result<bool, OutboxError> {
        Ok(self.inner.lock().paused.remove(topic))
    }

    async fn paused_topics(&self) -> Result<Vec<String>, OutboxError> {
        Ok(self.inner.lock().paused.iter().cloned().collect())
    }

    async fn status(&self, topic: &str, id: &str) -> Result<Option<EventStatus>, OutboxError> {
        let inner = self.inner.lock();
        let row = inner.by_key.get(&(topic.to_owned(), id.to_owned()));
        Ok(row
            .and_then(|row| inner.rows.get(row))
            .map(|r| EventStatus {
                state: r.state,
                attempts: r.attempts,
                last_error: r.last_error.clone(),
            }))
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, OutboxError> {
        let inner = self.inner.lock();
        Ok(inner
            .rows
            .values()
            .filter(|r| r.state == EventState::Dead)
            .take(limit)
            .map(|r| DeadLetter {
                topic: r.event.topic.clone(),
                id: r.event.id.clone(),
                attempts: r.attempts,
                last_error: r.last_error.clone(),
            })
            .collect())
    }

    async fn replay(&self, topic: &str, id: &str) -> Result<bool, OutboxError> {
        let now = self.now();
        let mut inner = self.inner.lock();
        let row = inner
            .by_key
            .get(&(topic.to_owned(), id.to_owned()))
            .copied();
        Ok(row.is_some_and(|row| inner.replay_row(row, now)))
    }

    async fn replay_dead(&self, topic: Option<&str>) -> Result<u64, OutboxError> {
        let now = self.now();
        let mut inner = self.inner.lock();
        let dead: Vec<i64> = inner
            .rows
            .iter()
            .filter(|(_, r)| r.state == EventState::Dead)
            .filter(|(_, r)| topic.is_none_or(|t| r.event.topic == t))
            .map(|(&row, _)| row)
            .collect();
        Ok(dead
            .into_iter()
            .filter(|&row| inner.replay_row(row, now))
            .count() as u64)
    }

    async fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let now = self.now();
        let inner = self.inner.lock();
        let mut stats = OutboxStats {
            paused_topics: inner.paused.len() as u64,
            ..OutboxStats::default()
        };
        for r in inner.rows.values() {
            match r.state {
                EventState::Pending => {
                    stats.pending += 1;
                    let age = Duration::from_nanos(now.saturating_sub(r.created));
                    stats.oldest_pending = Some(stats.oldest_pending.map_or(age, |o| o.max(age)));
                }
                EventState::Published => stats.published += 1,
                EventState::Dead => stats.dead += 1,
            }
        }
        Ok(stats)
    }

    async fn purge_published(&self, older_than: Duration) -> Result<u64, OutboxError> {
        let cutoff = self.now().saturating_sub(duration_to_nanos(older_than));
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let old: Vec<i64> = inner
            .rows
            .iter()
            .filter(|(_, r)| r.state == EventState::Published)
            .filter(|(_, r)| r.finished.is_some_and(|f| f <= cutoff))
            .map(|(&row, _)| row)
            .collect();
        for row in &old {
            if let Some(r) = inner.rows.remove(row) {
                inner.by_key.remove(&(r.event.topic, r.event.id));
            }
        }
        Ok(old.len() as u64)
    }
}
