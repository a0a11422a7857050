//! What the fault tests share: the real `orders-api` process, free loopback addresses, and raw
//! HTTP/1.1 requests on fresh connections.
#![allow(dead_code)] // each test file uses its own part

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A child process, killed (after a SIGCONT, in case a test stopped it) when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// Sends `sig` (`-STOP`, `-CONT`, …) with `kill`.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig} failed");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback address nothing listens on (yet).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The `orders-api` binary on `addr` with `args` and `envs`, logging errors only.
pub fn orders_api(addr: SocketAddr, args: &[&str], envs: &[(&str, &str)]) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_orders-api"))
            .args(args)
            .env("ADDR", addr.to_string())
            .env("RUST_LOG", "error")
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("orders-api starts"),
    )
}

/// Waits until something listens on `addr`.
pub async fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "orders-api did not listen on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A keyed `POST /orders` as `Bearer <token>` on a fresh connection; its status, `None` when the
/// connection failed or no answer came within 10 s.
pub async fn post_order(addr: SocketAddr, token: &str, key: &str) -> Option<u16> {
    let body = r#"{"sku":"tea","quantity":1}"#;
    let req = format!(
        "POST /orders HTTP/1.1\r\nhost: t\r\nconnection: close\r\nauthorization: Bearer {token}\r\n\
         idempotency-key: {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    conn.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    std::str::from_utf8(out.get(9..12)?).ok()?.parse().ok()
}

/// One raw HTTP/1.1 request on a fresh connection: the status, the lowercased head and the body;
/// `None` when the connection failed or no answer came within 10 s.
pub async fn http(addr: SocketAddr, request: &str) -> Option<(u16, String, String)> {
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    conn.write_all(request.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.get(9..12)?.parse().ok()?;
    Some((status, head.to_ascii_lowercase(), body.to_owned()))
}

/// A request as `Bearer <token>` with an optional `Idempotency-Key` and JSON body.
pub fn request(method: &str, path: &str, token: &str, key: Option<&str>, body: &str) -> String {
    let key = key
        .map(|k| format!("idempotency-key: {k}\r\n"))
        .unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\nauthorization: Bearer {token}\r\n\
         {key}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The tests' PostgreSQL (`DATABASE_URL`, or the local default).
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh private schema `<name>_<pid>`: an admin pool, the schema's name, and a URL whose
/// connections use it (`search_path`).
pub async fn pg_schema(name: &str) -> (idem_store_postgres::sqlx::PgPool, String, String) {
    use idem_store_postgres::sqlx;
    let url = database_url();
    let schema = format!("{name}_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {url} ({e}); run `cargo xtask test`, which starts it"
        )
    });
    for stmt in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(stmt))
            .execute(&admin)
            .await
            .unwrap();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    let db = format!("{url}{sep}options=-csearch_path%3D{schema}");
    (admin, schema, db)
}

/// Waits (at most 10 s) until `count` — a `SELECT count(*)` — reaches `n`.
pub async fn wait_for_count(admin: &idem_store_postgres::sqlx::PgPool, count: &str, n: i64) {
    use idem_store_postgres::sqlx;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (got,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(count.to_owned()))
            .fetch_one(admin)
            .await
            .unwrap_or((0,));
        if got >= n || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
