//! The Redis runner every Redis-backed crate shares (feature `redis`): one server or (feature
//! `cluster`) a Redis Cluster, with the same request-path settings; one [`RedisRunner`] that
//! guards each call with a circuit breaker (one per cluster node) and one rule,
//! [`RedisRunner::classify`], that sorts every failure into a [`BackendError`].
//!
//! # The rule
//! - No reply (refused, reset, timed out): the node was not reached. The call is
//!   [`BackendError::Unavailable`] and counts against the node's breaker.
//! - `WRONGTYPE`, or `CORRUPT` (the workspace's scripts' own code): the key holds something this
//!   release cannot read: [`BackendError::Corrupt`].
//! - `CROSSSLOT`, and on a single-node connection `MOVED` / `ASK` / `TRYAGAIN` / `CLUSTERDOWN`:
//!   the call went to the wrong place: [`BackendError::Misconfigured`] ([`Misrouted`]).
//! - Any other error reply (`LOADING`, `READONLY`, `OOM`, `BUSY`, `MASTERDOWN`, `CLUSTERDOWN` on a
//!   cluster…): a transient server state, [`BackendError::Unavailable`] — but the node *was*
//!   reached, so the breaker is not charged. An error reply comes back at once: the breaker exists
//!   to spare callers the timeouts of a node that does not answer, and a node that answers at
//!   once needs no sparing.

use crate::{BackendError, Breaker};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, RedisError, RedisResult, Value};
use std::sync::Arc;
use std::time::Duration;

/// The settings of a connection used while a request waits.
///
/// ```
/// use retry_safe_core::redis::RedisSettings;
/// use std::time::Duration;
///
/// let settings = RedisSettings::default().response_timeout(Duration::from_millis(250));
/// assert_eq!(settings.connect_timeout, Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisSettings {
    /// The time to open a connection (default 1 s).
    pub connect_timeout: Duration,
    /// The time to wait for one reply (default 1 s): a hung Redis becomes an error, not a hung
    /// request.
    pub response_timeout: Duration,
    /// Reconnect (single server) or redirect/reconnect (cluster) retries per call (default 2).
    pub retries: u32,
    /// The longest pause between reconnect attempts (default 500 ms).
    pub max_delay: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            retries: 2,
            max_delay: Duration::from_millis(500),
        }
    }
}

impl RedisSettings {
    /// With `timeout` to open a connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// With `timeout` for one reply.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// With `retries` reconnect retries per call.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// These settings for redis-rs's [`ConnectionManager`].
    pub fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(self.retries as usize)
            .set_max_delay(self.max_delay)
    }
}

/// A connection to one Redis server or (feature `cluster`) to a Redis Cluster: what every
/// Redis-backed crate of the workspace runs its scripts on. Cheap to clone: clones share the
/// connection.
///
/// - [`Single`](Self::Single): a reconnecting [`ConnectionManager`] to one server (a primary, or
///   a proxy in front of a cluster).
/// - `Cluster` (feature `cluster`): redis-rs's cluster client, which routes each script to the
///   master owning its key's hash slot and follows `MOVED` / `ASK` redirects.
///
/// ```no_run
/// use retry_safe_core::redis::{RedisConnection, RedisSettings};
/// # async fn run() -> redis::RedisResult<()> {
/// let conn = RedisConnection::connect("redis://127.0.0.1:6379", &RedisSettings::default()).await?;
/// assert!(!conn.is_cluster());
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum RedisConnection {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(_) => f.write_str("RedisConnection::Single"),
            #[cfg(feature = "cluster")]
            Self::Cluster(_) => f.write_str("RedisConnection::Cluster"),
        }
    }
}

impl From<ConnectionManager> for RedisConnection {
    fn from(conn: ConnectionManager) -> Self {
        Self::Single(conn)
    }
}

#[cfg(feature = "cluster")]
impl From<redis::cluster_async::ClusterConnection> for RedisConnection {
    fn from(conn: redis::cluster_async::ClusterConnection) -> Self {
        Self::Cluster(conn)
    }
}

impl RedisConnection {
    /// Connects to the server at `url` (`redis://[:password@]host[:port][/db]`) with
    /// `settings`.
    pub async fn connect(url: &str, settings: &RedisSettings) -> RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new_with_config(client, settings.manager_config()).await?;
        Ok(Self::Single(conn))
    }

    /// Connects to the Redis Cluster of which `nodes` are members (one reachable node is
    /// enough; the client learns the others) with `settings`.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn connect_cluster<T: redis::IntoConnectionInfo>(
        nodes: impl IntoIterator<Item = T>,
        settings: &RedisSettings,
    ) -> RedisResult<Self> {
        let client = redis::cluster::ClusterClientBuilder::new(nodes)
            .connection_timeout(settings.connect_timeout)
            .response_timeout(settings.response_timeout)
            .retries(settings.retries)
            .max_retry_wait(u64::try_from(settings.max_delay.as_millis()).unwrap_or(u64::MAX))
            .build()?;
        Ok(Self::Cluster(client.get_async_connection().await?))
    }

    /// Blocks until `replicas` replicas have acknowledged this connection's writes so far, or
    /// `timeout` passes (Redis `WAIT`); returns how many acknowledged. On a cluster the `WAIT`
    /// goes to the master of `key`'s slot, the node that took the write.
    pub async fn wait_for_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> RedisResult<u32> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        let acked: i64 = match self {
            Self::Single(c) => wait.query_async(c).await?,
            #[cfg(feature = "cluster")]
            Self::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(key.as_bytes(), SlotAddr::Master);
                let value = c
                    .route_command(
                        wait,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                redis::from_redis_value(value)?
            }
        };
        #[cfg(not(feature = "cluster"))]
        let _ = key;
        Ok(u32::try_from(acked.max(0)).unwrap_or(u32::MAX))
    }

    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        match self {
            Self::Single(_) => false,
            #[cfg(feature = "cluster")]
            Self::Cluster(_) => true,
        }
    }

    /// Whether `error` says the command went to the wrong place (see the rule in the
    /// [module docs](self)) — a configuration error, not an
    /// outage, that no fail-open mode may turn into a local decision:
    /// - `CROSSSLOT` (the keys of one script in several hash slots), on any connection;
    /// - on a single-server connection, the replies of a cluster node (`MOVED`, `ASK`,
    ///   `TRYAGAIN`, `CLUSTERDOWN`): a single-node client is pointed at a Redis Cluster.
    ///
    /// On a cluster connection `MOVED` / `ASK` are followed by the client; when they still
    /// surface, the cluster is resharding or failing over: that is an outage, as is
    /// `CLUSTERDOWN`.
    pub(crate) fn misrouting(&self, error: &RedisError) -> Option<Misrouted> {
        let code = error.code()?;
        let misrouted = match code {
            "CROSSSLOT" => true,
            "MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN" => !self.is_cluster(),
            _ => false,
        };
        misrouted.then(|| Misrouted {
            code: code.to_owned(),
            detail: error.detail().unwrap_or("").to_owned(),
            cluster_client: self.is_cluster(),
        })
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            #[cfg(feature = "cluster")]
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A command that reached a node which does not own its keys, or keys spread over several hash
/// slots: the deployment is misconfigured (a single-node client on a Redis Cluster, a key
/// layout without hash tags). Reported as such, never as "unavailable".
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Misrouted {
    /// The server's error code (`MOVED`, `ASK`, `CROSSSLOT`, `TRYAGAIN`, `CLUSTERDOWN`).
    pub code: String,
    /// The rest of the server's message.
    pub detail: String,
    /// Whether the connection was a cluster connection.
    pub cluster_client: bool,
}

impl std::fmt::Display for Misrouted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.cluster_client {
            write!(
                f,
                "Redis refused a script whose keys span hash slots ({} {})",
                self.code, self.detail
            )
        } else {
            write!(
                f,
                "Redis answered {} {}: a single-node connection is pointed at a Redis Cluster node; connect with connect_cluster",
                self.code, self.detail
            )
        }
    }
}

impl std::error::Error for Misrouted {}

/// The masters of the Redis Cluster that the node at `node_url` belongs to, as `redis://host:port`
/// URLs (from `CLUSTER NODES`; the node's own credentials are not carried over): where each
/// hash slot's data lives, for operators' checks and tests.
pub async fn cluster_masters(node_url: &str) -> RedisResult<Vec<String>> {
    let mut conn = redis::Client::open(node_url)?
        .get_multiplexed_async_connection()
        .await?;
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await?;
    Ok(nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let addr = fields.nth(1)?;
            let flags = fields.next()?;
            let host_port = addr.split('@').next()?;
            (flags.split(',').any(|f| f == "master") && !flags.contains("fail"))
                .then(|| format!("redis://{host_port}"))
        })
        .collect())
}

/// What every Redis-backed type of the workspace runs its scripts and commands with: a
/// [`RedisConnection`], the circuit breakers that guard it, and the one failure rule (see the
/// [module docs](self)). Cheap to clone: clones share the connection and the breakers.
///
/// On one server there is one breaker. On a Redis Cluster (feature `cluster`) each master has a
/// breaker of its own, found from the key's hash slot: when a master stops answering, the calls
/// for its slots are refused at once after a few timeouts, and the calls for the other masters'
/// slots go on untouched. The slot map is read with `CLUSTER SLOTS` in the background — on first
/// use, after a call that found no node, while a breaker refuses, and every 10 s — so a replica
/// promoted in a failover gets a closed breaker of its own.
///
/// ```no_run
/// use retry_safe_core::redis::{RedisRunner, RedisSettings};
/// # async fn run() -> Result<(), retry_safe_core::BackendError> {
/// let redis = RedisRunner::connect("redis://127.0.0.1:6379", &RedisSettings::default()).await?;
/// let script = redis::Script::new("return redis.call('INCR', KEYS[1])");
/// let n: i64 = redis.eval(&script.key("app:{counter}"), "app:{counter}").await?;
/// # let _ = n; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisRunner {
    conn: RedisConnection,
    breakers: Arc<Breakers>,
}

impl std::fmt::Debug for RedisRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRunner")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl From<RedisConnection> for RedisRunner {
    fn from(conn: RedisConnection) -> Self {
        Self::new(conn)
    }
}

impl From<ConnectionManager> for RedisRunner {
    fn from(conn: ConnectionManager) -> Self {
        Self::new(conn)
    }
}

#[cfg(feature = "cluster")]
impl From<redis::cluster_async::ClusterConnection> for RedisRunner {
    fn from(conn: redis::cluster_async::ClusterConnection) -> Self {
        Self::new(conn)
    }
}

/// A connection could not be opened: the backend is unavailable (or the URL is not a Redis URL,
/// which is a configuration error).
fn connect_error(e: RedisError) -> BackendError {
    match e.kind() {
        redis::ErrorKind::InvalidClientConfig => BackendError::Misconfigured(Box::new(e)),
        _ => BackendError::Unavailable(Box::new(e)),
    }
}

impl RedisRunner {
    /// Connects to the server at `url` with `settings`, behind [`Breaker::for_backend`].
    pub async fn connect(url: &str, settings: &RedisSettings) -> Result<Self, BackendError> {
        let conn = RedisConnection::connect(url, settings)
            .await
            .map_err(connect_error)?;
        Ok(Self::new(conn))
    }

    /// Connects to the Redis Cluster of which `nodes` are members with `settings`, a breaker
    /// per master.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn connect_cluster<T: redis::IntoConnectionInfo>(
        nodes: impl IntoIterator<Item = T>,
        settings: &RedisSettings,
    ) -> Result<Self, BackendError> {
        let conn = RedisConnection::connect_cluster(nodes, settings)
            .await
            .map_err(connect_error)?;
        Ok(Self::new(conn))
    }

    /// A runner over an existing connection, behind [`Breaker::for_backend`].
    pub fn new(conn: impl Into<RedisConnection>) -> Self {
        let conn = conn.into();
        let breakers = Arc::new(Breakers::new(&conn, Breaker::for_backend()));
        Self { conn, breakers }
    }

    /// Guards the calls with `breaker`: on one server that breaker itself, on a cluster a
    /// [fresh](Breaker::fresh) copy of it per master.
    pub fn with_breaker(mut self, breaker: Breaker) -> Self {
        self.breakers = Arc::new(Breakers::new(&self.conn, breaker));
        self
    }

    /// The connection, for administration and tests.
    pub fn connection(&self) -> &RedisConnection {
        &self.conn
    }

    /// The breaker that guards the calls for `key` (on a cluster, its master's).
    pub fn breaker_for(&self, key: &str) -> Breaker {
        self.breakers.for_key(key, &self.conn)
    }

    /// Runs `script` (whose keys hash to `key`'s slot) behind the breaker of `key`'s node: while
    /// it is open the call fails at once with [`BackendError::Unavailable`]
    /// ([`BreakerOpen`](crate::BreakerOpen)).
    pub async fn eval<T: FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
        key: &str,
    ) -> Result<T, BackendError> {
        let breaker = self.breaker_for(key);
        let Some(permit) = breaker.try_acquire() else {
            self.breakers.refused(&self.conn);
            return Err(BackendError::Unavailable(Box::new(crate::BreakerOpen)));
        };
        let mut conn = self.conn.clone();
        let result = script.invoke_async::<T>(&mut conn).await;
        let reached = result.as_ref().map_or_else(reached, |_| true);
        breaker.record(permit, reached);
        if !reached {
            self.breakers.refused(&self.conn);
        }
        result.map_err(|e| match self.classify(e) {
            BackendError::Corrupt(source) => BackendError::Corrupt(Box::new(Unreadable {
                key: key.to_owned(),
                source,
            })),
            other => other,
        })
    }

    /// Runs `script` without asking the breaker: for calls whose outcome matters more than a
    /// fast failure (completing a record, releasing a lease).
    pub async fn eval_always<T: FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
    ) -> Result<T, BackendError> {
        let mut conn = self.conn.clone();
        script
            .invoke_async::<T>(&mut conn)
            .await
            .map_err(|e| self.classify(e))
    }

    /// Sends `cmd` without asking the breaker.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, BackendError> {
        let mut conn = self.conn.clone();
        cmd.query_async::<T>(&mut conn)
            .await
            .map_err(|e| self.classify(e))
    }

    /// The one rule (see the [module docs](self)) applied to `error`.
    pub fn classify(&self, error: RedisError) -> BackendError {
        if matches!(error.code(), Some("WRONGTYPE" | "CORRUPT")) {
            return BackendError::Corrupt(Box::new(error));
        }
        if let Some(misrouted) = self.conn.misrouting(&error) {
            return BackendError::Misconfigured(Box::new(misrouted));
        }
        BackendError::Unavailable(Box::new(error))
    }
}

/// A key that holds something the script cannot read (the cause of a
/// [`BackendError::Corrupt`] from [`RedisRunner::eval`]).
#[derive(Debug)]
struct Unreadable {
    key: String,
    source: crate::BoxError,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the Redis key {} holds data this release cannot read",
            self.key
        )
    }
}

impl std::error::Error for Unreadable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Whether a failed call reached a server: an error reply carries a code, a lost connection or a
/// timeout does not.
fn reached(error: &RedisError) -> bool {
    error.code().is_some()
}

/// The breakers of a runner: one for a server, one per master of a cluster.
enum Breakers {
    Single(Breaker),
    #[cfg(feature = "cluster")]
    Cluster(cluster::NodeBreakers),
}

impl Breakers {
    fn new(conn: &RedisConnection, breaker: Breaker) -> Self {
        match conn {
            RedisConnection::Single(_) => Self::Single(breaker),
            #[cfg(feature = "cluster")]
            RedisConnection::Cluster(_) => Self::Cluster(cluster::NodeBreakers::new(breaker)),
        }
    }

    fn for_key(&self, key: &str, conn: &RedisConnection) -> Breaker {
        #[cfg(not(feature = "cluster"))]
        let _ = (key, conn);
        match self {
            Self::Single(b) => b.clone(),
            #[cfg(feature = "cluster")]
            Self::Cluster(nodes) => nodes.for_key(key, conn),
        }
    }

    /// A call was refused by an open breaker or found no node: the slot map may be stale.
    fn refused(&self, conn: &RedisConnection) {
        #[cfg(feature = "cluster")]
        if let Self::Cluster(nodes) = self {
            nodes.refresh_soon(conn, Duration::from_millis(200));
        }
        let _ = conn;
    }
}

#[cfg(feature = "cluster")]
mod cluster {
    //! A breaker per master of a Redis Cluster, found through the slot map.

    use super::RedisConnection;
    use crate::Breaker;
    use parking_lot::{Mutex, RwLock};
    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
    use redis::Value;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const SLOTS: u16 = 16_384;
    /// The slot map is re-read this often while calls come.
    const MAX_AGE: Duration = Duration::from_secs(10);

    /// Slot ranges (inclusive) with the breaker of the master that owns each.
    type Table = Vec<(u16, u16, Breaker)>;

    /// Cheap to share with the background refresh: clones share one state.
    #[derive(Clone)]
    pub(super) struct NodeBreakers(Arc<State>);

    struct State {
        template: Breaker,
        /// For calls whose slot the map does not know yet.
        unmapped: Breaker,
        table: RwLock<Table>,
        /// The breaker of each master seen, by `host:port`, kept across refreshes.
        by_node: Mutex<Vec<(String, Breaker)>>,
        refreshing: AtomicBool,
        /// When the last read of the slot map began: milliseconds since `origin`, plus one
        /// (0: never). An atomic, so the calls that find the map fresh take no lock for it.
        refreshed_at: AtomicU64,
        origin: Instant,
    }

    impl NodeBreakers {
        pub(super) fn new(template: Breaker) -> Self {
            Self(Arc::new(State {
                unmapped: template.fresh(),
                template,
                table: RwLock::new(Vec::new()),
                by_node: Mutex::new(Vec::new()),
                refreshing: AtomicBool::new(false),
                refreshed_at: AtomicU64::new(0),
                origin: Instant::now(),
            }))
        }

        pub(super) fn for_key(&self, key: &str, conn: &RedisConnection) -> Breaker {
            let slot = slot_of(key.as_bytes());
            let mapped = {
                let table = self.0.table.read();
                let i = table.partition_point(|(_, end, _)| *end < slot);
                table
                    .get(i)
                    .filter(|(start, _, _)| *start <= slot)
                    .map(|(_, _, breaker)| breaker.clone())
            };
            match mapped {
                Some(breaker) => {
                    self.refresh_soon(conn, MAX_AGE);
                    breaker
                }
                None => {
                    self.refresh_soon(conn, Duration::from_millis(200));
                    self.0.unmapped.clone()
                }
            }
        }

        /// Reads the slot map in the background unless it was read less than `age` ago or a
        /// read is under way (nothing happens outside a tokio runtime).
        pub(super) fn refresh_soon(&self, conn: &RedisConnection, age: Duration) {
            let now = self.millis();
            let at = self.0.refreshed_at.load(Ordering::Relaxed);
            if at > 0
                && now.saturating_sub(at - 1) < u64::try_from(age.as_millis()).unwrap_or(u64::MAX)
            {
                return;
            }
            let RedisConnection::Cluster(c) = conn else {
                return;
            };
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            if self.0.refreshing.swap(true, Ordering::AcqRel) {
                return;
            }
            self.0.refreshed_at.store(now + 1, Ordering::Relaxed);
            let (this, mut c) = (self.clone(), c.clone());
            rt.spawn(async move {
                let mut cmd = redis::cmd("CLUSTER");
                cmd.arg("SLOTS");
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
                if let Some(ranges) = c
                    .route_command(cmd, routing)
                    .await
                    .ok()
                    .as_ref()
                    .and_then(parse_slots)
                {
                    this.install(ranges);
                }
                this.0.refreshing.store(false, Ordering::Release);
            });
        }

        /// Makes `ranges` the slot map, each master keeping the breaker it had.
        pub(super) fn install(&self, ranges: Vec<(u16, u16, String)>) {
            let mut nodes = self.0.by_node.lock();
            let table: Table = ranges
                .into_iter()
                .map(|(start, end, node)| {
                    let breaker = match nodes.iter().find(|(n, _)| *n == node) {
                        Some((_, b)) => b.clone(),
                        None => {
                            let b = self.0.template.fresh();
                            nodes.push((node, b.clone()));
                            b
                        }
                    };
                    (start, end, breaker)
                })
                .collect();
            *self.0.table.write() = table;
        }

        /// Milliseconds since the breakers were made.
        fn millis(&self) -> u64 {
            u64::try_from(self.0.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
        }
    }

    /// The master of each slot range in a `CLUSTER SLOTS` reply, as `host:port`.
    pub(super) fn parse_slots(reply: &Value) -> Option<Vec<(u16, u16, String)>> {
        let Value::Array(entries) = reply else {
            return None;
        };
        let mut ranges = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::Array(fields) = entry else {
                return None;
            };
            let int = |v: Option<&Value>| match v {
                Some(Value::Int(i)) => u16::try_from(*i).ok(),
                _ => None,
            };
            let (start, end) = (int(fields.first())?, int(fields.get(1))?);
            let Some(Value::Array(master)) = fields.get(2) else {
                return None;
            };
            let host = match master.first()? {
                Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            let port = int(master.get(1))?;
            ranges.push((start, end, format!("{host}:{port}")));
        }
        ranges.sort_unstable_by_key(|r| r.0);
        Some(ranges)
    }

    /// The hash slot of `key` (CRC16/XMODEM of its hash tag, or of the whole key).
    pub(super) fn slot_of(key: &[u8]) -> u16 {
        let tagged = key
            .iter()
            .position(|&b| b == b'{')
            .and_then(|open| {
                let rest = &key[open + 1..];
                let close = rest.iter().position(|&b| b == b'}')?;
                (close > 0).then(|| &rest[..close])
            })
            .unwrap_or(key);
        crc16::State::<crc16::XMODEM>::calculate(tagged) % SLOTS
    }
}

#[cfg(all(test, feature = "cluster"))]
mod tests {
    use super::cluster::{parse_slots, slot_of};
    use redis::Value;

    #[test]
    fn slots_are_redis_own() {
        // `CLUSTER KEYSLOT 123456789` is 12739 (the CRC16/XMODEM check value 0x31C3).
        assert_eq!(slot_of(b"123456789"), 12_739);
        assert_eq!(slot_of(b"foo"), 12_182);
        // A hash tag decides alone; an empty one does not count.
        assert_eq!(slot_of(b"idem:{123456789}:x"), 12_739);
        assert_eq!(slot_of(b"a{}b"), slot_of(b"a{}b"));
        assert_ne!(slot_of(b"{}foo"), slot_of(b"foo"));
    }

    #[test]
    fn cluster_slots_replies_give_each_range_its_master() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node("127.0.0.1", 7001),
                node("127.0.0.1", 7004),
            ]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7000),
            ]),
        ]);
        assert_eq!(
            parse_slots(&reply).unwrap(),
            vec![
                (0, 5460, "127.0.0.1:7000".to_owned()),
                (5461, 16383, "127.0.0.1:7001".to_owned())
            ]
        );
        assert!(parse_slots(&Value::Int(1)).is_none());
    }
}
