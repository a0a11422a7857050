//! The [`idem_core::IdempotencyStore`] on Redis, for a fleet of servers that share one set of
//! idempotency records.
//!
//! ```no_run
//! use idem_core::{IdempotencyLayer, IdempotencyPolicy};
//! use idem_store_redis::RedisStore;
//!
//! # async fn run() -> Result<(), idem_store_redis::BackendError> {
//! let store = RedisStore::connect("redis://127.0.0.1:6379").await?.prefix("orders-api");
//! let layer = IdempotencyLayer::new(store, IdempotencyPolicy::default().require_key(true));
//! # let _ = layer; Ok(()) }
//! ```
//!
//! A runnable round trip (it needs the Redis server of `REDIS_URL`, default `127.0.0.1:6379`):
//!
//! ```
//! use idem_core::{BeginOutcome, Fingerprint, IdempotencyKey, IdempotencyStore, StoredResponse};
//! use idem_store_redis::RedisStore;
//! use std::time::Duration;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
//! let store = RedisStore::connect(&url).await.unwrap().prefix(&format!("doctest-{}", std::process::id()));
//! let key = IdempotencyKey::parse(b"order-7f3a").unwrap();
//! let fp = Fingerprint::of_request("POST", "/orders", b"{\"sku\":\"tea\"}");
//!
//! let BeginOutcome::Acquired { fence } = store.begin("tenant-1", &key, &fp, Duration::from_secs(30)).await.unwrap()
//! else { panic!("a new key is acquired") };
//! let response = StoredResponse { status: 201, headers: vec![], body: "created".into(), trailers: vec![] };
//! store.complete("tenant-1", &key, fence, &response, Duration::from_secs(60)).await.unwrap();
//! assert_eq!(
//!     store.begin("tenant-1", &key, &fp, Duration::from_secs(30)).await.unwrap(),
//!     BeginOutcome::Completed(response)
//! );
//! # });
//! ```
//!
//! How it works:
//! - **One round trip, atomic.** `begin`, `complete` and `release` are each one Lua script
//!   (`EVALSHA`, loaded again on `NOSCRIPT` by the `redis` crate), so no interleaving of clients
//!   can split a check from its write. The record layout and the scripts are documented in the
//!   source (`scripts.rs`).
//! - **Server time.** Leases and retention are measured with Redis' `TIME`, so clock skew between
//!   application servers cannot break a lease.
//! - **Cluster-ready keys.** A record is the hash `<prefix>:{<scope length>:<scope>:<key>}`; each
//!   script touches that one key, whose hash tag keeps it (and any future companion key) on one
//!   slot of a Redis Cluster. The scope's length makes `("a:b", "c")` and `("a", "b:c")` distinct.
//! - **Retention by TTL.** Every record carries a TTL a little longer than its lease or retention,
//!   so Redis reclaims memory by itself; [`IdempotencyStore::purge_expired`] has nothing to do.
//! - **One server or a Redis Cluster.** [`RedisStore::connect`] takes one server (a reconnecting
//!   `ConnectionManager`); `RedisStore::connect_cluster` (feature `cluster`) a Redis Cluster,
//!   whose client sends each script to the master of its key's slot; [`RedisStore::with_connection`]
//!   takes either, or a [`RedisRunner`] connected with the caller's [`RedisSettings`]. After a
//!   dropped connection the failing operation reports [`BackendError::Unavailable`] (the layer
//!   then fails closed, or open as configured) and the next one runs on a new connection.
//! - **A breaker per node.** `begin` runs behind the circuit breaker of its record's node (one per
//!   master on a cluster): while a node is known down its keys are refused at once, and the other
//!   masters' keys are not affected. Which failures count is the workspace's one rule
//!   ([`retry_safe_core::redis`]): only a call that got no reply.
//! - **Misrouting is a configuration error.** A single-node connection pointed at a cluster node
//!   gets `MOVED` for most keys; that (and `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, `CROSSSLOT`) is
//!   reported as [`BackendError::Misconfigured`], which the layer answers with a 500 under any fail
//!   mode — never as an outage that fail-open would run unprotected.
//!
//! # With axum
//! ```no_run
//! use axum::{routing::post, Router};
//! use idem_core::{IdempotencyLayer, IdempotencyPolicy};
//! use idem_store_redis::RedisStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::connect("redis://127.0.0.1:6379").await?.prefix("orders-api");
//! let app: Router = Router::new()
//!     .route("/orders", post(|| async { "created" }))
//!     .layer(IdempotencyLayer::new(store, IdempotencyPolicy::default().require_key(true)));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod scripts;

use async_trait::async_trait;
use bytes::Bytes;
use idem_core::{
    BeginOutcome, DecodeError, Fence, Fingerprint, IdempotencyKey, IdempotencyStore, StoreError,
    StoredResponse, TimeOffset,
};
use redis::{Script, Value};
pub use retry_safe_core::redis::{RedisConnection, RedisRunner, RedisSettings};
pub use retry_safe_core::{BackendError, Breaker};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use redis;

struct Scripts {
    begin: Script,
    complete: Script,
    release: Script,
    renew: Script,
}

/// Idempotency records in Redis. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    redis: RedisRunner,
    prefix: Arc<str>,
    offset: TimeOffset,
    scripts: Arc<Scripts>,
    /// Replicas a completion waits for, and for how long (`None`: no wait).
    durable: Option<(u32, Duration)>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("offset", &self.offset.get())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://[:password@]host[:port][/db]`, or `rediss://`
    /// when the `redis` crate's TLS feature is on) with the default [`RedisSettings`]: 1 s to
    /// connect, 1 s for a reply (a hung server turns into [`BackendError::Unavailable`], not a
    /// hung request), 2 reconnect retries at most 500 ms apart. Records are prefixed `idem`.
    /// Other settings: [`RedisRunner::connect`] and [`with_connection`](Self::with_connection).
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        let redis = RedisRunner::connect(url, &RedisSettings::default()).await?;
        Ok(Self::with_connection(redis))
    }

    /// Connects to the Redis Cluster of which `nodes` are members (`redis://host:port` each; one
    /// reachable node is enough) with the default [`RedisSettings`]. Each script touches one
    /// hash-tagged key, so it runs on the master owning that key's slot.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn connect_cluster<T: redis::IntoConnectionInfo>(
        nodes: impl IntoIterator<Item = T>,
    ) -> Result<Self, BackendError> {
        let redis = RedisRunner::connect_cluster(nodes, &RedisSettings::default()).await?;
        Ok(Self::with_connection(redis))
    }

    /// A store over an existing connection: a [`RedisRunner`], a [`RedisConnection`], a
    /// `ConnectionManager` or a cluster connection.
    pub fn with_connection(redis: impl Into<RedisRunner>) -> Self {
        Self {
            redis: redis.into(),
            prefix: Arc::from("idem"),
            offset: TimeOffset::new(),
            scripts: Arc::new(Scripts {
                begin: Script::new(scripts::BEGIN),
                complete: Script::new(scripts::COMPLETE),
                release: Script::new(scripts::RELEASE),
                renew: Script::new(scripts::RENEW),
            }),
            durable: None,
        }
    }

    /// Durable completion: after `complete` writes the response, it waits (Redis `WAIT`, on the
    /// master of the record's slot) until `replicas` replicas have it, at most `timeout`. Redis
    /// replication is asynchronous: without this, a record completed just before its master
    /// dies can vanish with it, and a retry of its key then runs again. With it, an `Ok` from
    /// `complete` means the record is on the master and `replicas` replicas; fewer in time is
    /// [`StoreError::Unreplicated`] (the response is still stored on the master). Costs one more
    /// round trip and the replication delay per completion (figures in docs/benchmarks.md).
    pub fn durable_completion(mut self, replicas: u32, timeout: Duration) -> Self {
        self.durable = (replicas > 0).then_some((replicas, timeout));
        self
    }

    /// The key prefix of this store's records (default `idem`): one per application or
    /// environment sharing a Redis.
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self
    }

    /// The circuit breaker of `begin` (default [`Breaker::for_backend`]: 3 consecutive calls
    /// without a reply open it for 1 s; one per master on a cluster). While it is open, `begin`
    /// reports [`BackendError::Unavailable`] at once instead of waiting out the connection's
    /// timeouts, so a fail-closed layer answers 503 in microseconds; one probe per cool-down
    /// finds out when Redis is back. `complete` and `release` always try.
    pub fn breaker(mut self, breaker: Breaker) -> Self {
        self.redis = self.redis.with_breaker(breaker);
        self
    }

    /// Reads the server's time through `offset` (tests that expire leases without waiting).
    pub fn time_offset(mut self, offset: TimeOffset) -> Self {
        self.offset = offset;
        self
    }

    /// The connection, for administration and tests (for example `CLIENT ID`).
    pub fn connection(&self) -> RedisConnection {
        self.redis.connection().clone()
    }

    /// The runner: the connection with its breakers.
    pub fn runner(&self) -> &RedisRunner {
        &self.redis
    }

    /// The Redis key of the record of `(scope, key)`.
    pub fn record_key(&self, scope: &str, key: &IdempotencyKey) -> String {
        format!(
            "{}:{{{}:{}:{}}}",
            self.prefix,
            scope.len(),
            scope,
            key.as_str()
        )
    }

    fn offset_micros(&self) -> u64 {
        micros(self.offset.get())
    }

    fn pinned_micros(&self) -> u64 {
        self.offset.pinned().map_or(0, micros)
    }
}

use retry_safe_core::duration_to_micros as micros;

/// A reply that matches no script's contract: the key holds something else.
fn unreadable(what: &'static str) -> StoreError {
    StoreError::from(DecodeError::Malformed(what))
}

fn text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn number(v: Option<&Value>) -> Option<u64> {
    std::str::from_utf8(text(v?)?).ok()?.parse().ok()
}

/// The common replies `V` and `X`, and anything unexpected.
fn other_reply(reply: &[Value]) -> StoreError {
    match reply.first().and_then(text) {
        Some(b"V") => {
            let version = reply
                .get(1)
                .and_then(text)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<u8>().ok());
            match version {
                Some(v) => StoreError::from(DecodeError::UnknownVersion(v)),
                None => unreadable("the record version is not a number"),
            }
        }
        Some(b"X") => unreadable("the record's fields are unreadable"),
        _ => unreadable("unexpected reply from the store script"),
    }
}

#[async_trait]
impl IdempotencyStore for RedisStore {
    async fn begin(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
        lease: Duration,
    ) -> Result<BeginOutcome, StoreError> {
        let mut inv = self.scripts.begin.prepare_invoke();
        inv.key(self.record_key(scope, key))
            .arg(&fingerprint.as_bytes()[..])
            .arg(micros(lease))
            .arg(self.offset_micros())
            .arg(self.pinned_micros());
        let record = self.record_key(scope, key);
        let reply: Vec<Value> = self.redis.eval(&inv, &record).await?;
        match reply.first().and_then(text) {
            Some(b"A") => number(reply.get(1))
                .map(|f| BeginOutcome::Acquired { fence: Fence(f) })
                .ok_or_else(|| unreadable("the fence is not a number")),
            Some(b"I") => number(reply.get(1))
                .map(|us| BeginOutcome::InFlight {
                    retry_after: Duration::from_micros(us),
                })
                .ok_or_else(|| unreadable("the lease end is not a number")),
            Some(b"C") => {
                let bytes = reply
                    .get(1)
                    .and_then(text)
                    .ok_or_else(|| unreadable("the stored response is missing"))?;
                Ok(BeginOutcome::Completed(StoredResponse::decode(bytes)?))
            }
            Some(b"M") => Ok(BeginOutcome::Mismatch),
            _ => Err(other_reply(&reply)),
        }
    }

    async fn complete(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
        response: &StoredResponse,
        retention: Duration,
    ) -> Result<(), StoreError> {
        let mut inv = self.scripts.complete.prepare_invoke();
        inv.key(self.record_key(scope, key))
            .arg(fence.0)
            .arg(Bytes::from(response.encode()).as_ref())
            .arg(micros(retention))
            .arg(self.offset_micros())
            .arg(self.pinned_micros());
        let reply: Vec<Value> = self.redis.eval_always(&inv).await?;
        match reply.first().and_then(text) {
            Some(b"OK") => {}
            Some(b"S") => return Err(StoreError::StaleFence { fence }),
            _ => return Err(other_reply(&reply)),
        }
        let Some((wanted, timeout)) = self.durable else {
            return Ok(());
        };
        let record = self.record_key(scope, key);
        let acknowledged = self
            .redis
            .connection()
            .clone()
            .wait_for_replicas(&record, wanted, timeout)
            .await
            .map_err(|e| self.redis.classify(e))?;
        if acknowledged < wanted {
            return Err(StoreError::Unreplicated {
                acknowledged,
                wanted,
            });
        }
        Ok(())
    }

    async fn release(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
    ) -> Result<(), StoreError> {
        let mut inv = self.scripts.release.prepare_invoke();
        inv.key(self.record_key(scope, key))
            .arg(fence.0)
            .arg(self.offset_micros())
            .arg(self.pinned_micros());
        let reply: Vec<Value> = self.redis.eval_always(&inv).await?;
        match reply.first().and_then(text) {
            Some(b"OK") => Ok(()),
            Some(b"S") => Err(StoreError::StaleFence { fence }),
            _ => Err(other_reply(&reply)),
        }
    }

    async fn renew(
        &self,
        scope: &str,
        key: &IdempotencyKey,
        fence: Fence,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let mut inv = self.scripts.renew.prepare_invoke();
        inv.key(self.record_key(scope, key))
            .arg(fence.0)
            .arg(micros(lease))
            .arg(self.offset_micros())
            .arg(self.pinned_micros());
        let reply: Vec<Value> = self.redis.eval_always(&inv).await?;
        match reply.first().and_then(text) {
            Some(b"OK") => Ok(()),
            Some(b"S") => Err(StoreError::StaleFence { fence }),
            _ => Err(other_reply(&reply)),
        }
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
