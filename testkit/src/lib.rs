//! What the workspace's tests share: the addresses of the real services (`REDIS_URL`,
//! `REDIS_CLUSTER_URLS`), unique key prefixes, a private `redis-server` that a test can make go
//! away, per-master key counts on a Redis Cluster, and a Redis Cluster of a test's own
//! ([`cluster`], the same code `cargo xtask test` starts its cluster with).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

    /// Started and made a read-only replica of a master that is not there: every write is
    /// answered with the error reply `READONLY`, at once (reads still answer).
    pub async fn start_read_only() -> Self {
        let redis = Self::start().await;
        let _: () = redis
            .command(redis::cmd("REPLICAOF").arg("127.0.0.1").arg("1"))
            .await;
        redis
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

/// Asserts that `error` is an outage caused by an error reply of Redis (the server answered).
pub fn assert_error_reply(error: &retry_safe_core::BackendError) {
    let retry_safe_core::BackendError::Unavailable(cause) = error else {
        panic!("an error reply is an outage for the caller, got {error:?}");
    };
    let reply = cause
        .downcast_ref::<redis::RedisError>()
        .expect("Redis's reply as the cause");
    assert!(reply.code().is_some(), "an error reply: {reply}");
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

/// The error codes the crate at `crate_dir` emits: every snake_case string literal that follows a
/// `StatusCode::…,` argument in its `src/` (the `Problem::new(status, code, …)` calls and the
/// helpers of the same shape), and the fields of its `BackendCodes` / `BodyCodes` tables. Code
/// under `#[cfg(test)] mod tests` is left out.
pub fn emitted_codes(crate_dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    let mut codes = std::collections::BTreeSet::new();
    let mut dirs = vec![crate_dir.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("the crate's sources") {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
                codes.extend(codes_in(text));
            }
        }
    }
    codes
}

/// The codes in one source text (see [`emitted_codes`]).
fn codes_in(text: &str) -> Vec<String> {
    const FIELDS: [&str; 6] = [
        "unavailable:",
        "misconfigured:",
        "corrupt:",
        "too_large:",
        "timeout:",
        "unreadable:",
    ];
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('"') {
        let before = rest[..at].trim_end();
        let after = &rest[at + 1..];
        let Some(end) = after.find('"') else { break };
        let literal = &after[..end];
        let after_status = before.ends_with(',')
            && before[..before.len() - 1]
                .rsplit(|c: char| c.is_whitespace() || c == '(')
                .next()
                .is_some_and(|t| t.starts_with("StatusCode::"));
        let in_table = FIELDS.iter().any(|f| before.ends_with(f));
        let snake = !literal.is_empty()
            && literal
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if snake && (after_status || in_table) {
            found.push(literal.to_owned());
        }
        rest = &after[end + 1..];
    }
    found
}

/// The codes a documentation text lists in its tables: every `` `code` `` inside a line that
/// starts with `|` (after an optional `///` or `//!`).
pub fn documented_codes(doc: &str) -> std::collections::BTreeSet<String> {
    doc.lines()
        .map(|l| {
            l.trim_start()
                .trim_start_matches("///")
                .trim_start_matches("//!")
                .trim_start()
        })
        .filter(|l| l.starts_with('|'))
        .flat_map(|l| l.split('`').skip(1).step_by(2).map(str::to_owned))
        .collect()
}

/// Asserts that the outcome table in `doc_file` (relative to `crate_dir`) lists every code the
/// crate emits, so the documentation cannot drift from the code.
pub fn assert_codes_documented(crate_dir: &str, doc_file: &str) {
    let dir = std::path::Path::new(crate_dir);
    let doc = std::fs::read_to_string(dir.join(doc_file)).expect("the documented table");
    let missing: Vec<String> = emitted_codes(dir)
        .difference(&documented_codes(&doc))
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "{doc_file} does not list the codes {missing:?} that {crate_dir} emits"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn codes_are_found_after_a_status_and_in_code_tables() {
        let src = r#"
            Problem::new(StatusCode::CONFLICT, "key_in_flight", "Busy");
            problem(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
            );
            const C: BackendCodes = BackendCodes { name: "x store", unavailable: "x_unavailable" };
            let not_a_code = "plain_text";
            tracing::info!("some_message");
        "#;
        assert_eq!(
            super::codes_in(src),
            ["key_in_flight", "rate_limited", "x_unavailable"]
        );
        let doc = "/// | a | 409 `key_in_flight` |\n/// outside `rate_limited`\n";
        assert_eq!(
            super::documented_codes(doc).into_iter().collect::<Vec<_>>(),
            ["key_in_flight"]
        );
    }
}
