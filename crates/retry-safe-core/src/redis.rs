//! The Redis connection every Redis-backed crate shares (feature `redis`): one server or (feature
//! `cluster`) a Redis Cluster, with the same request-path settings, and the one rule that tells a
//! misrouted command (configuration) from an outage.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RedisResult, Value};
use std::time::Duration;

/// The time to open a connection to Redis on the request path.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The time to wait for one reply: a hung Redis becomes an error, not a hung request.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The settings of a connection used while a request waits: [`CONNECT_TIMEOUT`],
/// [`RESPONSE_TIMEOUT`], 2 reconnect retries at most 500 ms apart.
///
/// ```
/// let config = retry_safe_core::redis::request_path_config();
/// # let _ = config;
/// ```
pub fn request_path_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
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
/// use retry_safe_core::redis::RedisConnection;
/// # async fn run() -> redis::RedisResult<()> {
/// let conn = RedisConnection::connect("redis://127.0.0.1:6379").await?;
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
    /// Connects to the server at `url` with [`request_path_config`].
    pub async fn connect(url: &str) -> RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new_with_config(client, request_path_config()).await?;
        Ok(Self::Single(conn))
    }

    /// Connects to the Redis Cluster of which `nodes` are members (one reachable node is
    /// enough; the client learns the others), with the request-path timeouts: 1 s to connect,
    /// 1 s per reply, 2 retries.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn connect_cluster<T: redis::IntoConnectionInfo>(
        nodes: impl IntoIterator<Item = T>,
    ) -> RedisResult<Self> {
        let client = redis::cluster::ClusterClientBuilder::new(nodes)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(2)
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

    /// Whether `error` says the command went to the wrong place — a configuration error, not an
    /// outage, that no fail-open mode may turn into a local decision:
    /// - `CROSSSLOT` (the keys of one script in several hash slots), on any connection;
    /// - on a single-server connection, the replies of a cluster node (`MOVED`, `ASK`,
    ///   `TRYAGAIN`, `CLUSTERDOWN`): a single-node client is pointed at a Redis Cluster.
    ///
    /// On a cluster connection `MOVED` / `ASK` are followed by the client; when they still
    /// surface, the cluster is resharding or failing over: that is an outage, as is
    /// `CLUSTERDOWN`.
    pub fn misrouting(&self, error: &RedisError) -> Option<Misrouted> {
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
