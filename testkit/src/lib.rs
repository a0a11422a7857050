//! What the workspace's tests share: the addresses of the real services (`REDIS_URL`,
//! `REDIS_CLUSTER_URLS`), unique key prefixes, a private `redis-server` that a test can make go
//! away, per-master key counts on a Redis Cluster, and a Redis Cluster of a test's own
//! ([`cluster`], the same code `cargo xtask test` starts its cluster with).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[allow(dead_code)]
#[path = "../../xtask/src/cluster.rs"]
pub mod cluster;

/// `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The node URLs of `REDIS_CLUSTER_URLS`; panics saying how to get a cluster when it is unset
/// (a test that claims to run on a cluster never skips silently).
pub fn cluster_urls() -> Vec<String> {
    let urls = std::env::var("REDIS_CLUSTER_URLS").unwrap_or_default();
    let urls: Vec<String> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect();
    assert!(
        !urls.is_empty(),
        "REDIS_CLUSTER_URLS is not set: run `cargo xtask test` (it starts a private Redis Cluster) \
         or start one with `cargo xtask cluster` and export the REDIS_CLUSTER_URLS it prints"
    );
    urls
}

/// A key prefix no other test (or run) uses: `<scope>:<name>:<pid>:<ns>:<n>`.
pub fn unique(scope: &str, name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{scope}:{name}:{}:{nanos}:{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// How many keys matching `<prefix>*` each master of the cluster holds.
pub async fn keys_per_master(prefix: &str) -> Vec<usize> {
    let mut counts = Vec::new();
    let masters = retry_safe_core::redis::cluster_masters(&cluster_urls()[0])
        .await
        .expect("the cluster answers CLUSTER NODES");
    for url in masters {
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        counts.push(keys.len());
    }
    counts
}

/// A private `redis-server` on a free loopback port, SIGKILLed by [`stop`](Self::stop) or on
/// drop: Redis really goes away.
pub struct PrivateRedis {
    child: std::process::Child,
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
}

impl PrivateRedis {
    /// Starts it and waits until it answers.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH (the machine's Redis package provides it)");
        let url = format!("redis://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child, url }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGSTOPs it (by its PID): connections stay open and nothing answers, as in a freeze.
    pub fn pause(&self) {
        assert!(signal(self.pid(), "STOP"), "SIGSTOP to redis-server failed");
    }

    /// SIGCONTs it after [`pause`](Self::pause).
    pub fn resume(&self) {
        assert!(signal(self.pid(), "CONT"), "SIGCONT to redis-server failed");
    }

    /// A command on a connection of its own (`CONFIG SET …` in fault tests).
    pub async fn command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let mut conn = redis::Client::open(self.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        cmd.query_async(&mut conn).await.unwrap()
    }

    /// SIGKILLs it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        // A paused process is woken first, so that it dies at once; a dead one ignores this.
        let _ = signal(self.pid(), "CONT");
        self.stop();
    }
}

/// Sends `SIG<name>` to the process `pid` (one this test started); whether it was delivered.
pub fn signal(pid: u32, name: &str) -> bool {
    std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
