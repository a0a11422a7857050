//! The real binary in front of the real Python upstream (examples/gateway/upstream.py), each
//! on a port the OS chose, and a plain HTTP/1.1 client over TCP that shows every byte.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const DEMO_KEY: &str = "sk_test_demo_4eC39HqLyjWDarjtT1zdp7dc";
pub const PSP_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python upstream, killed (by its PID) when dropped.
pub struct Upstream {
    child: Child,
    pub port: u16,
}

impl Upstream {
    pub fn start() -> Self {
        let mut child = Command::new("python3")
            .arg(repo().join("examples/gateway/upstream.py"))
            .arg("0")
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (the machine's CPython)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("upstream said {line:?}"));
        Self { child, port }
    }

    /// The upstream's own count of created orders and received webhooks.
    pub fn stats(&self) -> serde_json::Value {
        let res = request(self.port, "GET /stats HTTP/1.1\r\nHost: up\r\n\r\n");
        serde_json::from_slice(&res.body).unwrap()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateway binary on a config file of its own, killed (by its PID) when dropped.
pub struct Gateway {
    pub child: Child,
    pub port: u16,
    pub admin: Option<u16>,
    pub dir: PathBuf,
    pub events: Arc<Mutex<Vec<String>>>,
    pub access: Arc<Mutex<Vec<String>>>,
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gateway-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The example's keys file (the demo key on the `starter` plan) in `dir`.
pub fn write_keys(dir: &Path) -> PathBuf {
    let path = dir.join("keys.toml");
    let text = format!(
        "[[key]]\nsha256 = \"{}\"\nprincipal = \"demo-merchant\"\nplan = \"starter\"\n",
        retry_safe_gateway::hash_key(DEMO_KEY)
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn collect(stream: impl Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            into.lock().unwrap().push(line);
        }
    });
}

impl Gateway {
    /// Starts the binary on `config` (written to `dir/gateway.toml`); waits until it listens.
    pub fn start(dir: &Path, config: &str) -> Self {
        let path = dir.join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_retry-safe-gateway"))
            .arg(&path)
            .env("PSP_WEBHOOK_SECRET", PSP_SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (events, access) = (Arc::default(), Arc::default());
        collect(child.stderr.take().unwrap(), Arc::clone(&events));
        collect(child.stdout.take().unwrap(), Arc::clone(&access));
        let mut gw = Self {
            child,
            port: 0,
            admin: None,
            dir: dir.to_owned(),
            events,
            access,
        };
        let listening = gw.wait_event("\"listening\"", Duration::from_secs(20));
        gw.port = address_port(&listening);
        if config.contains("[admin]") {
            gw.admin = Some(address_port(
                &gw.wait_event("admin_listening", Duration::from_secs(5)),
            ));
        }
        gw
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first event line containing `needle`, waiting up to `within`.
    pub fn wait_event(&self, needle: &str, within: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self
                .events
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            if start.elapsed() > within {
                panic!(
                    "no event {needle} within {within:?}; events: {:?}",
                    self.events.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Rewrites the config file and sends SIGHUP.
    pub fn reload(&self, config: &str) {
        std::fs::write(self.dir.join("gateway.toml"), config).unwrap();
        assert!(testkit::signal(self.pid(), "HUP"));
    }

    pub fn request(&self, raw: &str) -> Resp {
        request(self.port, raw)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn address_port(event: &str) -> u16 {
    let v: serde_json::Value = serde_json::from_str(event).unwrap();
    v["address"]
        .as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap()
}

/// A response as it came off the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts the gateway's envelope: problem+json with `status`, `code` and the trace fields.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let p = self.json();
        assert_eq!(p["error_code"], code, "{p}");
        assert_eq!(p["status"], status, "{p}");
        for field in ["request_id", "trace_id"] {
            assert!(
                p[field].as_str().is_some_and(|s| !s.is_empty()),
                "{field} missing: {p}"
            );
        }
        assert!(p["latency_ms"].is_number(), "latency_ms missing: {p}");
    }
}

/// Sends `raw` (with `Connection: close` added) and reads the whole answer.
pub fn request(port: u16, raw: &str) -> Resp {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let raw = raw.replacen("\r\n", "\r\nConnection: close\r\n", 1);
    stream.write_all(raw.as_bytes()).unwrap();
    read_response(&mut stream)
}

pub fn read_response(stream: &mut impl Read) -> Resp {
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    parse(&bytes)
}

pub fn parse(bytes: &[u8]) -> Resp {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = bytes[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
    out
}

/// A POST with a JSON body and extra header lines.
pub fn post(path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut raw = format!("POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    raw
}

pub fn get(path: &str, headers: &[(&str, &str)]) -> String {
    let mut raw = format!("GET {path} HTTP/1.1\r\nHost: gw\r\n");
    for (n, v) in headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    raw
}

/// The example's config with the upstream's port, listeners on ports the OS picks, and `extra`
/// appended (more routes).
pub fn config(upstream: u16, dir: &Path, extra: &str) -> String {
    let keys = write_keys(dir);
    format!(
        r#"
[[listener]]
address = "127.0.0.1:0"

[admin]
address = "127.0.0.1:0"

[limits]
min_body_rate = 1024
min_body_rate_grace = "1s"

[shedding]
capacity = 64

[upstreams.orders]
address = "127.0.0.1:{upstream}"
request_timeout = "2s"

[upstreams.nowhere]
address = "127.0.0.1:1"

[plans.starter]
rate = 1000
burst = 1000
concurrency = 64

[api_keys]
file = "{keys}"

[[route]]
methods = ["POST"]
path = "/orders"
upstream = "orders"
auth = true
idempotency = {{ required = true, wait_for_result = "5s" }}

[[route]]
methods = ["POST"]
path = "/slow"
upstream = "orders"
idempotency = {{ required = true }}

[[route]]
methods = ["GET"]
path = "/slow"
upstream = "orders"

[[route]]
methods = ["GET"]
path = "/events"
upstream = "orders"

[[route]]
methods = ["GET"]
path = "/down"
upstream = "nowhere"

[[route]]
methods = ["POST"]
path = "/webhooks/psp"
upstream = "orders"
class = "critical"
webhook = {{ scheme = "standard-webhooks", secret_env = "PSP_WEBHOOK_SECRET" }}
{extra}
"#,
        keys = keys.display()
    )
}
