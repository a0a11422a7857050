//! A chaos client: a separate process (`cargo xtask chaos-client …`, started by the harness)
//! that drives the fleet through haproxy with the workspace's retrying client and logs every
//! logical operation to a history file.
//!
//! Workers mix keyed creates (sku = key), replays of keys answered before, reads, `If-Match`
//! patches of shared orders and critical captures; a burst task hits the fleet rate limit with
//! a fresh principal every few seconds. `--settle FILE` instead retries the creates of the keys
//! in FILE until answered (the liveness probe after the last fault healed); `--slow N` is the
//! slow-body attack: N connections from N loopback addresses trickling a capture's body.

use super::history::{now_ms, Kind, Op};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use retry_client::{History, Retrier, RetryPolicy, SafeRetryLayer, SafeRetryService};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;

type Http = SafeRetryService<Client<HttpConnector, Full<Bytes>>>;

/// The deadline of one logical operation, every attempt included.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// What the command line asked for.
struct Args {
    id: u32,
    addr: SocketAddr,
    until: u64,
    seed: u64,
    out: std::path::PathBuf,
    settle: Option<std::path::PathBuf>,
    slow: Option<u32>,
    /// The workload stops when this file exists (or at `until`).
    stop: Option<std::path::PathBuf>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let need = |name: &str| value(name).ok_or_else(|| format!("chaos-client: {name} is missing"));
    let num = |name: &str| -> Result<u64, String> {
        need(name)?
            .parse()
            .map_err(|_| format!("chaos-client: {name}: not a number"))
    };
    Ok(Args {
        id: num("--id")? as u32,
        addr: need("--addr")?
            .parse()
            .map_err(|_| "chaos-client: --addr: not an address".to_owned())?,
        until: num("--until")?,
        seed: num("--seed")?,
        out: need("--out")?.into(),
        settle: value("--settle").map(Into::into),
        slow: value("--slow").and_then(|v| v.parse().ok()),
        stop: value("--stop").map(Into::into),
    })
}

/// `cargo xtask chaos-client …`.
pub fn main(args: &[String]) -> Result<(), String> {
    let args = parse(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let log = Log::create(&args.out)?;
        if let Some(n) = args.slow {
            return slow_senders(args.addr, n, args.until).await;
        }
        let until = Until {
            at: args.until,
            stop: args.stop.clone(),
        };
        let client = Fleet::new(args.addr, args.id, log);
        match &args.settle {
            Some(keys) => client.settle(keys).await,
            None => client.run(args.seed, until).await,
        }
    })
}

/// When the workload ends: at a time, or once the harness creates the stop file.
#[derive(Clone)]
struct Until {
    at: u64,
    stop: Option<std::path::PathBuf>,
}

impl Until {
    fn over(&self) -> bool {
        now_ms() >= self.at || self.stop.as_ref().is_some_and(|p| p.exists())
    }
}

/// The history file, one JSON line per operation.
#[derive(Clone)]
struct Log(Arc<Mutex<std::fs::File>>);

impl Log {
    fn create(path: &std::path::Path) -> Result<Self, String> {
        let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self(Arc::new(Mutex::new(file))))
    }

    fn write(&self, op: &Op) {
        use std::io::Write;
        let mut line = serde_json::to_vec(op).unwrap_or_default();
        line.push(b'\n');
        if let Ok(mut f) = self.0.lock() {
            let _ = f.write_all(&line);
        }
    }
}

/// An answer: status and the JSON body's fields the checker needs.
#[derive(Default)]
struct Answer {
    status: Option<u16>,
    attempts: u32,
    etag: Option<String>,
    order: Option<String>,
    version: Option<u64>,
    quantity: Option<u32>,
}

/// The client side of the fleet: one retrying HTTP client, the history.
#[derive(Clone)]
struct Fleet {
    addr: SocketAddr,
    id: u32,
    http: Http,
    once: Http,
    log: Log,
}

fn retrying(attempts: u32) -> Http {
    let hyper = Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(5))
        .build_http::<Full<Bytes>>();
    let policy = RetryPolicy::default()
        .max_attempts(attempts)
        .deadline(DEADLINE)
        .attempt_timeout(Duration::from_secs(2))
        .backoff(Duration::from_millis(50), Duration::from_secs(1));
    tower::ServiceBuilder::new()
        .layer(SafeRetryLayer::new(Retrier::new(policy).budget(None)))
        .service(hyper)
}

impl Fleet {
    fn new(addr: SocketAddr, id: u32, log: Log) -> Self {
        Self {
            addr,
            id,
            http: retrying(20),
            once: retrying(1),
            log,
        }
    }

    /// Sends one logical request (retried by `retry-client` unless `once`).
    async fn call(
        &self,
        once: bool,
        method: Method,
        path: &str,
        token: &str,
        headers: &[(&str, String)],
        body: Option<String>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("authorization", format!("Bearer {token}"));
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let Ok(req) = req.body(Full::new(Bytes::from(body.unwrap_or_default()))) else {
            return Answer::default();
        };
        let client = if once { &self.once } else { &self.http };
        let res = match client.clone().oneshot(req).await {
            Ok(res) => res,
            Err(e) => {
                return Answer {
                    attempts: e.history().len() as u32,
                    ..Answer::default()
                }
            }
        };
        let attempts = res
            .extensions()
            .get::<History>()
            .map_or(1, |h| h.attempts.len() as u32);
        let status = res.status().as_u16();
        let etag = res
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = match res.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return Answer {
                    attempts,
                    ..Answer::default()
                }
            }
        };
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        Answer {
            status: Some(status),
            attempts,
            etag,
            order: json["id"].as_str().map(String::from),
            version: json["version"].as_u64(),
            quantity: json["quantity"].as_u64().map(|q| q as u32),
        }
    }

    /// Logs one operation: `call` is what was sent (kind, key, principal, when it began), `patch`
    /// the version a patch expected and the quantity it wrote.
    fn record(&self, call: (Kind, &str, &str, u64), a: &Answer, patch: Option<(u64, u32)>) {
        let (kind, key, token, start) = call;
        self.log.write(&Op {
            client: self.id,
            kind,
            key: key.to_owned(),
            principal: token.to_owned(),
            start,
            end: now_ms(),
            status: a.status,
            attempts: a.attempts,
            order: a.order.clone(),
            version: a.version,
            base: patch.map(|(base, _)| base),
            quantity: patch.map(|(_, q)| q).or(a.quantity),
        });
    }

    /// `POST /orders` with `key` (the order's sku is the key, so the checker can group orders).
    async fn create(&self, kind: Kind, key: &str, token: &str) -> Answer {
        let start = now_ms();
        let body = format!(r#"{{"sku":"{key}","quantity":1}}"#);
        let a = self
            .call(
                false,
                Method::POST,
                "/orders",
                token,
                &[("idempotency-key", key.to_owned())],
                Some(body),
            )
            .await;
        self.record((kind, key, token, start), &a, None);
        a
    }

    async fn read(&self, order: &str, token: &str) -> Answer {
        let start = now_ms();
        let a = self
            .call(
                false,
                Method::GET,
                &format!("/orders/{order}"),
                token,
                &[],
                None,
            )
            .await;
        self.record((Kind::Read, order, token, start), &a, None);
        a
    }

    /// Reads `order`, then patches it from the version read with a quantity of its own.
    async fn patch(&self, order: &str, token: &str, quantity: u32, key: String) {
        let read = self.read(order, token).await;
        let (Some(etag), Some(base)) = (read.etag, read.version) else {
            return;
        };
        let start = now_ms();
        let headers = [("if-match", etag), ("idempotency-key", key)];
        let body = format!(r#"{{"quantity":{quantity}}}"#);
        let a = self
            .call(
                false,
                Method::PATCH,
                &format!("/orders/{order}"),
                token,
                &headers,
                Some(body),
            )
            .await;
        self.record(
            (Kind::Patch, order, token, start),
            &a,
            Some((base, quantity)),
        );
    }

    async fn capture(&self, payment: &str, token: &str) {
        let start = now_ms();
        let path = format!("/payments/{payment}/capture");
        let a = self
            .call(
                false,
                Method::POST,
                &path,
                token,
                &[("idempotency-key", payment.to_owned())],
                None,
            )
            .await;
        self.record((Kind::Capture, payment, token, start), &a, None);
    }

    /// The workload until `until`: three workers and the burst task.
    async fn run(self, seed: u64, until: Until) -> Result<(), String> {
        let token = format!("c{}", self.id);
        // Two orders every worker of this client patches, created first.
        let mut hot = Vec::new();
        for i in 0..2 {
            let key = format!("hot-{seed}-{}-{i}", self.id);
            loop {
                if let Some(id) = self.create(Kind::Create, &key, &token).await.order {
                    hot.push(id);
                    break;
                }
                if until.over() {
                    return Err(format!("client {}: could not create {key}", self.id));
                }
            }
        }
        let hot = Arc::new(hot);
        let mut tasks = Vec::new();
        for w in 0..3u64 {
            let (me, hot, until) = (self.clone(), hot.clone(), until.clone());
            tasks.push(tokio::spawn(
                async move { me.work(seed, w, &hot, &until).await },
            ));
        }
        let me = self.clone();
        tasks.push(tokio::spawn(async move { me.bursts(seed, &until).await }));
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    }

    async fn work(&self, seed: u64, worker: u64, hot: &[String], until: &Until) {
        let mut rng = fastrand::Rng::with_seed(seed ^ (u64::from(self.id) << 32) ^ worker);
        let token = format!("c{}w{worker}", self.id);
        let mut done: Vec<(String, String)> = Vec::new();
        let mut n = 0u64;
        while !until.over() {
            n += 1;
            let key = format!("ck-{seed}-{}-{worker}-{n}", self.id);
            match rng.u32(0..100) {
                0..45 => {
                    if let Some(order) = self.create(Kind::Create, &key, &token).await.order {
                        done.push((key, order));
                    }
                }
                45..55 if !done.is_empty() => {
                    let (key, _) = &done[rng.usize(..done.len())];
                    self.create(Kind::Replay, key, &token).await;
                }
                55..70 if !done.is_empty() => {
                    let (_, order) = &done[rng.usize(..done.len())];
                    self.read(order, &token).await;
                }
                70..85 => {
                    let order = &hot[rng.usize(..hot.len())];
                    self.patch(order, &token, rng.u32(1..1_000_000), key).await;
                }
                _ => {
                    self.capture(&format!("pay-{seed}-{}-{worker}-{n}", self.id), &token)
                        .await
                }
            }
            tokio::time::sleep(Duration::from_millis(rng.u64(10..40))).await;
        }
    }

    /// Every 6 s, 200 GETs from a fresh principal, 16 at a time, each sent once.
    async fn bursts(&self, seed: u64, until: &Until) {
        let mut n = 0;
        while !until.over() {
            n += 1;
            let token = format!("burst-{seed}-{}-{n}", self.id);
            let sent = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let mut tasks = Vec::new();
            for _ in 0..16 {
                let (me, token, sent) = (self.clone(), token.clone(), sent.clone());
                tasks.push(tokio::spawn(async move {
                    while sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 200 {
                        let start = now_ms();
                        let a = me
                            .call(true, Method::GET, "/orders/ord_none", &token, &[], None)
                            .await;
                        me.record((Kind::Burst, &token, &token, start), &a, None);
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            tokio::time::sleep(Duration::from_secs(6)).await;
        }
    }

    /// Retries the create of every key in `file` (`key<TAB>principal` lines) until answered, as
    /// the principal that sent it first.
    async fn settle(self, file: &std::path::Path) -> Result<(), String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let keys: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, p)| (k.to_owned(), p.to_owned()))
            .collect();
        let chunks: Vec<Vec<(String, String)>> = keys
            .chunks(keys.len().div_ceil(16).max(1))
            .map(<[(String, String)]>::to_vec)
            .collect();
        let mut tasks = Vec::new();
        for chunk in chunks {
            let me = self.clone();
            tasks.push(tokio::spawn(async move {
                for (key, principal) in chunk {
                    me.create(Kind::Settle, &key, &principal).await;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    }
}

/// `n` senders from `127.0.1.1 …`, each sending a capture's head and then one byte of its
/// 64-byte body a second, connecting again whenever the server cuts it, until `until`.
async fn slow_senders(addr: SocketAddr, n: u32, until: u64) -> Result<(), String> {
    let mut tasks = Vec::new();
    for i in 0..n {
        tasks.push(tokio::spawn(async move {
            let from = std::net::Ipv4Addr::new(127, 0, 1, (i % 250 + 1) as u8);
            let mut round = 0;
            while now_ms() < until {
                round += 1;
                if trickle(addr, from, &format!("slow-{i}-{until}-{round}"), until)
                    .await
                    .is_none()
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// One slow capture from `from`: the head, then a byte a second until cut or `until`.
async fn trickle(addr: SocketAddr, from: std::net::Ipv4Addr, key: &str, until: u64) -> Option<()> {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::from((from, 0))).ok()?;
    let mut stream = socket.connect(addr).await.ok()?;
    let head = format!(
        "POST /payments/{key}/capture HTTP/1.1\r\nhost: chaos\r\nauthorization: Bearer {from}\r\n\
         idempotency-key: {key}\r\ncontent-type: application/json\r\ncontent-length: 64\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    for _ in 0..64 {
        if now_ms() > until {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        stream.write_all(b" ").await.ok()?;
    }
    Some(())
}
