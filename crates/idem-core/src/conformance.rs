//! The store conformance suite and the reference model (feature `conformance`).
//!
//! Every store crate runs the same cases against its backend through a [`Harness`]: the
//! hand-written contract cases of [`run_all`], and [`check_model`], which replays a random sequence
//! of [`Op`]s (made by [`ops`]) against the store and against a small reference model and fails on
//! the first step where they disagree.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use idem_core::conformance::{run_all, MemoryHarness};
//!
//! run_all(&MemoryHarness::new()).await;
//! # });
//! ```

use crate::store::{BeginOutcome, Fence, IdempotencyStore, StoreError, StoredResponse};
use crate::{Fingerprint, IdempotencyKey, ManualClock, MemoryStore, MemoryStoreConfig};
use async_trait::async_trait;
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What the suite needs from a store under test.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The store under test.
    type Store: IdempotencyStore;

    /// The store, shared so concurrent cases can spawn tasks on it.
    fn store(&self) -> Arc<Self::Store>;

    /// Moves the store's notion of time forward by `by` (a manual clock, a server-side offset, or,
    /// for a store that can only use real time, a real wait).
    async fn advance(&self, by: Duration);

    /// A scope that no other test on the same backend uses; `name` tells the cases apart.
    fn scope(&self, name: &str) -> String;

    /// How far a reported `retry_after` may be below the exact lease remainder (the backend's
    /// time resolution). Zero for the in-memory store.
    fn tolerance(&self) -> Duration {
        Duration::ZERO
    }
}

/// The [`Harness`] of [`MemoryStore`] on a [`ManualClock`].
pub struct MemoryHarness {
    store: Arc<MemoryStore<ManualClock>>,
    clock: ManualClock,
}

impl MemoryHarness {
    /// A fresh store with default limits at time zero.
    pub fn new() -> Self {
        let clock = ManualClock::new();
        Self {
            store: Arc::new(MemoryStore::with_clock(
                clock.clone(),
                MemoryStoreConfig::default(),
            )),
            clock,
        }
    }
}

impl Default for MemoryHarness {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Harness for MemoryHarness {
    type Store = MemoryStore<ManualClock>;
    fn store(&self) -> Arc<Self::Store> {
        self.store.clone()
    }
    async fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
    fn scope(&self, name: &str) -> String {
        name.to_owned()
    }
}

const LEASE: Duration = Duration::from_secs(10);
const RETENTION: Duration = Duration::from_secs(60);

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s.as_bytes()).expect("test keys are valid")
}

fn fp(body: &str) -> Fingerprint {
    Fingerprint::of_request("POST", "/orders", body.as_bytes())
}

/// A response to store; tags of odd length carry trailers (as a gRPC answer does), so every test
/// exercises both forms of record.
fn response(tag: &str) -> StoredResponse {
    let trailers = if tag.len() % 2 == 1 {
        vec![
            ("grpc-status".into(), "0".into()),
            ("x-trailer".into(), bytes::Bytes::from(format!("t-{tag}"))),
        ]
    } else {
        Vec::new()
    };
    StoredResponse {
        status: 201,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            (
                "x-binary".into(),
                bytes::Bytes::from_static(b"\xff\x00\x80"),
            ),
        ],
        body: bytes::Bytes::from(format!("{{\"order\":\"{tag}\"}}\u{0}\u{7f}")),
        trailers,
    }
}

async fn acquire<S: IdempotencyStore + ?Sized>(
    s: &S,
    scope: &str,
    k: &IdempotencyKey,
    f: &Fingerprint,
) -> Fence {
    match s.begin(scope, k, f, LEASE).await {
        Ok(BeginOutcome::Acquired { fence }) => fence,
        other => panic!("expected Acquired, got {other:?}"),
    }
}

fn assert_retry_after(outcome: BeginOutcome, expected: Duration, tolerance: Duration) {
    match outcome {
        BeginOutcome::InFlight { retry_after } => assert!(
            retry_after <= expected && retry_after + tolerance >= expected,
            "retry_after {retry_after:?}, expected {expected:?} (tolerance {tolerance:?})"
        ),
        other => panic!("expected InFlight, got {other:?}"),
    }
}

/// Runs every contract case; panics with the case's name on the first failure.
pub async fn run_all<H: Harness>(h: &H) {
    acquire_then_in_flight(h).await;
    complete_then_replay(h).await;
    mismatch(h).await;
    release_lets_retry(h).await;
    lease_expiry_takeover(h).await;
    expired_holder_cannot_write(h).await;
    retention_expiry(h).await;
    scopes_are_isolated(h).await;
    unknown_and_double_calls(h).await;
    purge_keeps_live_records(h).await;
    renew_keeps_the_lease(h).await;
    renew_with_a_lost_lease_is_refused(h).await;
    concurrent_begin_one_winner(h, 64).await;
}

/// A renewed lease outlives the original one; the record stays the holder's.
pub async fn renew_keeps_the_lease<H: Harness>(h: &H) {
    let (s, scope, k, f) = (h.store(), h.scope("renew"), key("k"), fp("a"));
    let fence = acquire(&*s, &scope, &k, &f).await;
    for _ in 0..3 {
        h.advance(LEASE - Duration::from_secs(2)).await;
        s.renew(&scope, &k, fence, LEASE).await.unwrap();
    }
    // 24 s after begin, well past the first lease: still the holder's.
    let second = s.begin(&scope, &k, &f, LEASE).await.unwrap();
    assert_retry_after(second, LEASE, h.tolerance() + Duration::from_millis(1));
    s.complete(&scope, &k, fence, &response("renewed"), RETENTION)
        .await
        .unwrap();
    assert_eq!(
        s.begin(&scope, &k, &f, LEASE).await.unwrap(),
        BeginOutcome::Completed(response("renewed"))
    );
}

/// A fence that lost its lease (ran out, taken over, completed, released, never held) cannot
/// renew it.
pub async fn renew_with_a_lost_lease_is_refused<H: Harness>(h: &H) {
    let (s, scope, k, f) = (h.store(), h.scope("renew-lost"), key("k"), fp("a"));
    let old = acquire(&*s, &scope, &k, &f).await;
    h.advance(LEASE + Duration::from_millis(1)).await;
    assert!(matches!(
        s.renew(&scope, &k, old, LEASE).await,
        Err(StoreError::StaleFence { .. })
    ));
    let new = acquire(&*s, &scope, &k, &f).await;
    assert!(matches!(
        s.renew(&scope, &k, old, LEASE).await,
        Err(StoreError::StaleFence { .. })
    ));
    s.renew(&scope, &k, new, LEASE).await.unwrap();
    s.complete(&scope, &k, new, &response("done"), RETENTION)
        .await
        .unwrap();
    assert!(matches!(
        s.renew(&scope, &k, new, LEASE).await,
        Err(StoreError::StaleFence { .. })
    ));
    let other = key("never-held");
    assert!(matches!(
        s.renew(&scope, &other, new, LEASE).await,
        Err(StoreError::StaleFence { .. })
    ));
}

/// A new key is acquired; a second begin with the same request sees it in flight.
pub async fn acquire_then_in_flight<H: Harness>(h: &H) {
    let (s, scope, k, f) = (h.store(), h.scope("in-flight"), key("k"), fp("a"));
    acquire(&*s, &scope, &k, &f).await;
    h.advance(Duration::from_secs(3)).await;
    let second = s.begin(&scope, &k, &f, LEASE).await.unwrap();
    assert_retry_after(second, LEASE - Duration::from_secs(3), h.tolerance());
}

/// After `complete`, begin replays the response byte for byte, again and again.
pub async fn complete_then_replay<H: Harness>(h: &H) {
    let (s, scope, k, f) = (h.store(), h.scope("replay"), key("k"), fp("a"));
    let fence = acquire(&*s, &scope, &k, &f).await;
    s.complete(&scope, &k, fence, &response("1"), RETENTION)
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            s.begin(&scope, &k, &f, LEASE).await.unwrap(),
            BeginOutcome::Completed(response("1"))
        );
    }
}

/// Another fingerprint on a live key is a mismatch, while in flight and once completed.
pub async fn mismatch<H: Harness>(h: &H) {
    let (s, scope, k) = (h.store(), h.scope("mismatch"), key("k"));
    let fence = acquire(&*s, &scope, &k, &fp("a")).await;
    assert_eq!(
        s.begin(&scope, &k, &fp("b"), LEASE).await.unwrap(),
        BeginOutcome::Mismatch
    );
    s.complete(&scope, &k, fence, &response("1"), RETENTION)
        .await
        .unwrap();
    assert_eq!(
        s.begin(&scope, &k, &fp("b"), LEASE).await.unwrap(),
        BeginOutcome::Mismatch
    );
}

/// `release` drops the record: the retry acquires with a larger fence, and the old fence is stale.
pub async fn release_lets_retry<H: Harness>(h: &H) {
    let (s, scope, k, f) = (h.store(), h.scope("release"), key("k"), fp("a"));
    let first = acquire(&*s, &scope, &k, &f).await;
    s.release(&scope, &k, first).await.unwrap();
    // After a release even another body may use the key: nothing ran to completion.
    let second = acquire(&*s, &scope, &k, &fp("b")).await;
    assert!(second > first, "fence {second} not above {first}");
    assert!(matches!(
        s.complete(&scope, &k, first, &response("old"), RETENTION)
            .await,
        Err(StoreError::StaleFence { .. })
    ));
}

/// A lease that ran out is taken over with a larger fence; the old holder's writes are refused.
pub async fn lease_expiry_takeover<H: Harness>(h: &H) {
    let (s, scope, k, f) = (h.store(), h.scope("takeover"), key("k"), fp("a"));
    let old = acquire(&*s, &scope, &k, &f).await;
    h.advance(LEASE).await;
    let new = acquire(&*s, &scope, &k, &f).await;
    assert!(new > old, "fence {new} not above {old}");
    assert!(matches!(
        s.complete(&scope, &k, old, &response("zombie"), RETENTION).await,
        Err(StoreError::StaleFence { fence }) if fence == old
    ));
    assert!(matches!(
        s.release(&scope, &k, old).await,
        Err(StoreError::StaleFence { .. })
    ));
    s.complete(&scope, &k, new, &response("new"), RETENTION)
        .await
        .unwrap();
    assert_eq!(
        s.begin(&scope, &k, &f, LEASE).await.unwrap(),
        BeginOutcome::Completed(response("new"))
    );
}

/// A holder whose lease ran out has lost it even when nobody took over.
pub async fn expired_holder_cannot_write<H: Harness>(h: &H) {
    let (s, scope, k, f) = (h.store(), h.scope("expired-holder"), key("k"), fp("a"));
    let fence = acquire(&*s, &scope, &k, &f).await;
    h.advance(LEASE + Duration::from_millis(1)).await;
    assert!(matches!(
        s.complete(&scope, &k, fence, &response("late"), RETENTION)
            .await,
        Err(StoreError::StaleFence { .. })
    ));
    // The expired record is as if absent, also to another body.
    acquire(&*s, &scope, &k, &fp("b")).await;
}

/// A completed record is forgotten after its retention.
pub async fn retention_expiry<H: Harness>(h: &H) {
    let (s, scope, k, f) = (h.store(), h.scope("retention"), key("k"), fp("a"));
    let fence = acquire(&*s, &scope, &k, &f).await;
    s.complete(&scope, &k, fence, &response("1"), RETENTION)
        .await
        .unwrap();
    h.advance(RETENTION - Duration::from_secs(1)).await;
    assert!(matches!(
        s.begin(&scope, &k, &f, LEASE).await.unwrap(),
        BeginOutcome::Completed(_)
    ));
    h.advance(Duration::from_secs(1)).await;
    let again = acquire(&*s, &scope, &k, &fp("other")).await;
    assert!(again > fence);
}

/// Equal keys in two scopes are two records.
pub async fn scopes_are_isolated<H: Harness>(h: &H) {
    let s = h.store();
    let (a, b, k, f) = (h.scope("tenant-a"), h.scope("tenant-b"), key("k"), fp("a"));
    let fa = acquire(&*s, &a, &k, &f).await;
    acquire(&*s, &b, &k, &fp("b")).await;
    s.complete(&a, &k, fa, &response("a"), RETENTION)
        .await
        .unwrap();
    assert!(matches!(
        s.begin(&b, &k, &fp("b"), LEASE).await.unwrap(),
        BeginOutcome::InFlight { .. }
    ));
}

/// `complete`/`release` of an unknown key, or twice, are refused.
pub async fn unknown_and_double_calls<H: Harness>(h: &H) {
    let (s, scope, k, f) = (h.store(), h.scope("double"), key("k"), fp("a"));
    assert!(matches!(
        s.complete(&scope, &k, Fence(1), &response("x"), RETENTION)
            .await,
        Err(StoreError::StaleFence { .. })
    ));
    assert!(matches!(
        s.release(&scope, &k, Fence(1)).await,
        Err(StoreError::StaleFence { .. })
    ));
    let fence = acquire(&*s, &scope, &k, &f).await;
    s.complete(&scope, &k, fence, &response("1"), RETENTION)
        .await
        .unwrap();
    assert!(matches!(
        s.complete(&scope, &k, fence, &response("2"), RETENTION)
            .await,
        Err(StoreError::StaleFence { .. })
    ));
    assert!(matches!(
        s.release(&scope, &k, fence).await,
        Err(StoreError::StaleFence { .. })
    ));
    assert_eq!(
        s.begin(&scope, &k, &f, LEASE).await.unwrap(),
        BeginOutcome::Completed(response("1"))
    );
}

/// `purge_expired` never removes a live record.
pub async fn purge_keeps_live_records<H: Harness>(h: &H) {
    let (s, scope, f) = (h.store(), h.scope("purge"), fp("a"));
    let short = acquire(&*s, &scope, &key("short"), &f).await;
    s.complete(&scope, &key("short"), short, &response("s"), LEASE)
        .await
        .unwrap();
    h.advance(LEASE).await;
    let live = acquire(&*s, &scope, &key("live"), &f).await;
    s.purge_expired().await.unwrap();
    s.complete(&scope, &key("live"), live, &response("l"), RETENTION)
        .await
        .unwrap();
    assert_eq!(
        s.begin(&scope, &key("live"), &f, LEASE).await.unwrap(),
        BeginOutcome::Completed(response("l"))
    );
    assert!(matches!(
        s.begin(&scope, &key("short"), &f, LEASE).await.unwrap(),
        BeginOutcome::Acquired { .. }
    ));
}

/// `n` concurrent begins of one key: exactly one `Acquired`, the rest `InFlight`.
pub async fn concurrent_begin_one_winner<H: Harness>(h: &H, n: usize) {
    let (s, scope) = (h.store(), h.scope("race"));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (s, scope) = (s.clone(), scope.clone());
            tokio::spawn(async move { s.begin(&scope, &key("k"), &fp("a"), LEASE).await })
        })
        .collect();
    let mut acquired = 0;
    for t in tasks {
        match t.await.expect("task ran").expect("store answered") {
            BeginOutcome::Acquired { .. } => acquired += 1,
            BeginOutcome::InFlight { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(acquired, 1, "{n} concurrent begins");
}

/// One step of a random client interleaving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `client` begins `key` with request body `body`.
    Begin {
        /// Client index.
        client: u8,
        /// Key index.
        key: u8,
        /// Body index (two bodies make mismatches).
        body: u8,
    },
    /// `client` completes the attempt it last acquired.
    Complete {
        /// Client index.
        client: u8,
    },
    /// `client` releases the attempt it last acquired.
    Release {
        /// Client index.
        client: u8,
    },
    /// Time moves forward by `millis`.
    Advance {
        /// Milliseconds.
        millis: u32,
    },
    /// `purge_expired` runs.
    Purge,
}

/// Lease used by the model run.
pub const MODEL_LEASE: Duration = Duration::from_millis(1_000);
/// Retention used by the model run.
pub const MODEL_RETENTION: Duration = Duration::from_millis(3_000);

/// Random interleavings of up to `max_len` steps by 4 clients on 3 keys with 2 bodies.
pub fn ops(max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (0u8..4, 0u8..3, 0u8..2).prop_map(|(client, key, body)| Op::Begin { client, key, body }),
        2 => (0u8..4).prop_map(|client| Op::Complete { client }),
        1 => (0u8..4).prop_map(|client| Op::Release { client }),
        2 => (1u32..1_600).prop_map(|millis| Op::Advance { millis }),
        1 => Just(Op::Purge),
    ];
    proptest::collection::vec(op, 1..max_len)
}

#[derive(Debug)]
enum ModelState {
    InFlight {
        until: Duration,
    },
    Completed {
        response: StoredResponse,
        until: Duration,
    },
}

#[derive(Debug)]
struct ModelRecord {
    body: u8,
    fence: Fence,
    state: ModelState,
}

impl ModelRecord {
    fn live(&self, now: Duration) -> bool {
        match self.state {
            ModelState::InFlight { until } | ModelState::Completed { until, .. } => until > now,
        }
    }
}

/// The reference model's state: each key's record, fences handed out, the clients' holds.
#[derive(Default)]
struct Model {
    now: Duration,
    records: HashMap<u8, ModelRecord>,
    last_fence: HashMap<u8, Fence>,
    held: HashMap<u8, (u8, Fence)>,
}

impl Model {
    /// Checks the store's answer `got` to a `begin` of key `ki` with body `b` by `client`.
    fn begin(
        &mut self,
        client: u8,
        ki: u8,
        b: u8,
        got: BeginOutcome,
        tolerance: Duration,
    ) -> Result<(), String> {
        let now = self.now;
        let live = self.records.get(&ki).filter(|r| r.live(now));
        match (live, got) {
            (None, BeginOutcome::Acquired { fence }) => {
                if let Some(prev) = self.last_fence.get(&ki) {
                    if fence <= *prev {
                        return Err(format!("fence {fence} not above {prev}"));
                    }
                }
                self.last_fence.insert(ki, fence);
                self.held.insert(client, (ki, fence));
                let state = ModelState::InFlight {
                    until: now + MODEL_LEASE,
                };
                self.records.insert(
                    ki,
                    ModelRecord {
                        body: b,
                        fence,
                        state,
                    },
                );
                Ok(())
            }
            (Some(r), BeginOutcome::Mismatch) if r.body != b => Ok(()),
            (Some(r), BeginOutcome::InFlight { retry_after }) if r.body == b => {
                let ModelState::InFlight { until } = r.state else {
                    return Err("store says in flight, model says completed".into());
                };
                let exact = until - now;
                if retry_after > exact || retry_after + tolerance < exact {
                    return Err(format!("retry_after {retry_after:?}, model {exact:?}"));
                }
                Ok(())
            }
            (Some(r), BeginOutcome::Completed(resp)) if r.body == b => match &r.state {
                ModelState::Completed { response, .. } if *response == resp => Ok(()),
                other => Err(format!("replayed {resp:?}, model {other:?}")),
            },
            (model, got) => Err(format!("store {got:?}, model {model:?}")),
        }
    }

    /// Whether `fence` holds key `ki`'s live lease in the model.
    fn is_holder(&self, ki: u8, fence: Fence) -> bool {
        self.records.get(&ki).is_some_and(|r| {
            r.fence == fence
                && matches!(r.state, ModelState::InFlight { until } if until > self.now)
        })
    }

    /// Checks the store's answer `got` to a `complete` (with `resp`) or, when `resp` is `None`,
    /// a `release` of key `ki` under `fence`.
    fn settle(
        &mut self,
        ki: u8,
        fence: Fence,
        resp: Option<StoredResponse>,
        got: Result<(), StoreError>,
    ) -> Result<(), String> {
        match (self.is_holder(ki, fence), got) {
            (true, Ok(())) => {
                match resp {
                    Some(response) => {
                        let r = self.records.get_mut(&ki).expect("holder has a record");
                        r.state = ModelState::Completed {
                            response,
                            until: self.now + MODEL_RETENTION,
                        };
                    }
                    None => {
                        self.records.remove(&ki);
                    }
                }
                Ok(())
            }
            (false, Err(StoreError::StaleFence { .. })) => Ok(()),
            (holder, got) => Err(format!("store {got:?}, model holder={holder}")),
        }
    }
}

/// Plays `ops` against the harness's store and a reference model in lockstep.
///
/// Returns a description of the first disagreement. Fences are the store's own values: the model
/// checks that each key's fences strictly increase and that only the current holder's fence writes.
pub async fn check_model<H: Harness>(h: &H, scope: &str, ops: &[Op]) -> Result<(), String> {
    let s = h.store();
    let mut model = Model::default();
    let k = |i: u8| key(&format!("key-{i}"));
    let body = |b: u8| Fingerprint::of_request("POST", "/m", &[b]);
    for (step, op) in ops.iter().enumerate() {
        let checked = match *op {
            Op::Begin {
                client,
                key: ki,
                body: b,
            } => {
                let got = s
                    .begin(scope, &k(ki), &body(b), MODEL_LEASE)
                    .await
                    .map_err(|e| format!("step {step}: store error {e}"))?;
                model.begin(client, ki, b, got, h.tolerance())
            }
            Op::Complete { client } | Op::Release { client } => {
                let Some(&(ki, fence)) = model.held.get(&client) else {
                    continue;
                };
                if matches!(op, Op::Complete { .. }) {
                    let resp = response(&format!("{step}-{client}"));
                    let got = s
                        .complete(scope, &k(ki), fence, &resp, MODEL_RETENTION)
                        .await;
                    model.settle(ki, fence, Some(resp), got)
                } else {
                    let got = s.release(scope, &k(ki), fence).await;
                    model.settle(ki, fence, None, got)
                }
            }
            Op::Advance { millis } => {
                let by = Duration::from_millis(millis.into());
                model.now += by;
                h.advance(by).await;
                Ok(())
            }
            Op::Purge => {
                s.purge_expired()
                    .await
                    .map_err(|e| format!("step {step}: purge failed: {e}"))?;
                let now = model.now;
                model.records.retain(|_, r| r.live(now));
                Ok(())
            }
        };
        checked.map_err(|what| format!("step {step} {op:?}: {what}"))?;
    }
    Ok(())
}
