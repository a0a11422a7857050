//! `cargo xtask bench e2e`: the release `orders-api` binary under `wrk`, server pinned to core 0
//! and load generator to core 1, in interleaved rounds.
//!
//! Each round runs, one after the other on a fresh server process: the bare handlers
//! (`--bare`), the full stack in memory, the full stack with idempotency and rate limits on
//! Redis (the rate limit exact, then leased with `--lease 1000`), and the full stack on
//! PostgreSQL (orders, idempotency and outbox in one transaction). Each stacked run's requests
//! per second are divided by the same round's bare run; the median and the spread (min–max) of
//! those ratios over the rounds are the result. The load: `wrk` with one thread and 32
//! keep-alive connections, 80 % `GET /orders/ord_1`, 20 % `POST /orders` with a fresh
//! `Idempotency-Key` and one of 256 principals per connection; limits set far above the offered
//! load (`--rate 100000000/s --in-flight 4096 --capacity 65536`,
//! `IN_FLIGHT_PER_IP=65536`), so the layers' cost is measured, not their refusals (any non-2xx
//! answer is reported). `E2E_PAIRS` (default 5) rounds of `E2E_SECONDS` (default 5) per run.
//! `wrk` is installed from the system packages when missing.
//!
//! `cargo xtask bench e2e-postgres`: the same method with only keyed `POST /orders` on
//! PostgreSQL, each divided by the POST without idempotency (`--no-idempotency --postgres`: every
//! other layer, the order and its event in one transaction) — the bare handlers (`--bare`), the
//! default transactional mode, and the single-commit mode with the record
//! written first (`--single-commit=first`) and last (`--single-commit=last`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

type Result<T = ()> = std::result::Result<T, String>;

/// Per wrk thread: a counter and a prefix that makes every `Idempotency-Key` fresh.
const PRELUDE: &str = r#"
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  counter = 0
  prefix = tostring(tid) .. "-" .. tostring(os.time()) .. "-" .. tostring(math.random(1000000000))
end
function post(auth)
  return wrk.format("POST", "/orders", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = auth,
    ["Idempotency-Key"] = "e2e-" .. prefix .. "-" .. tostring(counter),
  }, '{"sku":"tea","quantity":1}')
end
"#;

/// 80 % `GET /orders/ord_1`, 20 % `POST /orders`.
const MIXED: &str = r#"
function request()
  counter = counter + 1
  local auth = "Bearer p" .. tostring(counter % 256)
  if counter % 5 == 1 then
    return post(auth)
  end
  return wrk.format("GET", "/orders/ord_1", { ["Authorization"] = auth })
end
"#;

/// Only `POST /orders`.
const POSTS: &str = r#"
function request()
  counter = counter + 1
  return post("Bearer p" .. tostring(counter % 256))
end
"#;

/// One server configuration: a label and the orders-api flags after the limits.
struct Variant {
    name: &'static str,
    args: Vec<String>,
}

impl Variant {
    fn name(&self) -> &'static str {
        self.name
    }
}

pub(crate) struct Run {
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) non_2xx: u64,
}

/// The mixed load against bare, memory, Redis and PostgreSQL (`postgres_only` = false), or only
/// keyed POSTs on PostgreSQL: bare (no idempotency, one transaction per order), the default
/// transactional mode and the single-commit mode.
pub fn run(postgres_only: bool) -> Result {
    ensure_wrk()?;
    crate::services::ensure_all()?;
    let binary = crate::release_binary("examples", "orders-api")?;
    let script = std::env::temp_dir().join(format!("retry-safe-e2e-{}.lua", std::process::id()));
    let lua = format!("{PRELUDE}{}", if postgres_only { POSTS } else { MIXED });
    std::fs::write(&script, lua).map_err(|e| format!("{}: {e}", script.display()))?;
    let pairs: usize = env_num("E2E_PAIRS", 5);
    let seconds: u64 = env_num("E2E_SECONDS", 5);
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let postgres = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let v = |name, args: &[&str]| Variant {
        name,
        args: args.iter().map(|a| (*a).to_owned()).collect(),
    };
    let variants = if postgres_only {
        vec![
            v(
                "POST without idempotency (--no-idempotency --postgres: every other layer, order + event in one transaction)",
                &["--no-idempotency", "--postgres", &postgres],
            ),
            v(
                "bare POST (--bare --postgres: no layers, order + event in one transaction)",
                &["--bare", "--postgres", &postgres],
            ),
            v(
                "idempotent POST, default mode (begin commit + order/event/complete commit)",
                &["--postgres", &postgres],
            ),
            v(
                "idempotent POST, single-commit, record first (begin + order/event + complete, one commit)",
                &["--postgres", &postgres, "--single-commit=first"],
            ),
            v(
                "idempotent POST, single-commit, record last (order/event + record, one commit)",
                &["--postgres", &postgres, "--single-commit=last"],
            ),
        ]
    } else {
        vec![
            v("bare handlers (no layers)", &["--bare"]),
            v("full stack, in memory", &[]),
            v(
                "full stack, idempotency + rate limit on Redis",
                &["--redis", &redis],
            ),
            v(
                "full stack on Redis, rate limit leased (--lease 1000)",
                &["--redis", &redis, "--lease", "1000"],
            ),
            v(
                "full stack on PostgreSQL (orders + idempotency + outbox, one transaction)",
                &["--postgres", &postgres],
            ),
        ]
    };
    let mut results: Vec<Vec<Run>> = variants.iter().map(|_| Vec::new()).collect();
    for round in 1..=pairs {
        for (i, variant) in variants.iter().enumerate() {
            let run = measure(&binary, &script, variant, seconds, round)?;
            eprintln!(
                "xtask: round {round}/{pairs} {:<70} {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms{}",
                variant.name(),
                run.rps,
                run.p50_ms,
                run.p99_ms,
                if run.non_2xx > 0 {
                    format!("  ({} non-2xx)", run.non_2xx)
                } else {
                    String::new()
                }
            );
            results[i].push(run);
        }
    }
    let _ = std::fs::remove_file(&script);
    let names: Vec<&str> = variants.iter().map(Variant::name).collect();
    println!("\n| round | {} |", names.join(" | "));
    println!("|---|{}", "---|".repeat(variants.len()));
    for round in 0..pairs {
        let bare = results[0][round].rps;
        let cells: Vec<String> = results
            .iter()
            .enumerate()
            .map(|(i, runs)| {
                if i == 0 {
                    format!("{:.0} req/s", runs[round].rps)
                } else {
                    format!(
                        "{:.0} req/s ({:.3}×)",
                        runs[round].rps,
                        runs[round].rps / bare
                    )
                }
            })
            .collect();
        println!("| {} | {} |", round + 1, cells.join(" | "));
    }
    println!("\n| server | median req/s | median ratio to the first row (spread) | median p50 | median p99 | non-2xx |");
    println!("|---|---|---|---|---|---|");
    for (i, variant) in variants.iter().enumerate() {
        let runs = &results[i];
        let med = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(f).collect());
        let ratios: Vec<f64> = (0..pairs)
            .map(|r| runs[r].rps / results[0][r].rps)
            .collect();
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        let ratio = if i == 0 {
            "1×".to_owned()
        } else {
            format!("**{:.3}×** ({lo:.3}–{hi:.3})", median(ratios.clone()))
        };
        println!(
            "| {} | {:.0} | {ratio} | {:.2} ms | {:.2} ms | {} |",
            variant.name(),
            med(&|r| r.rps),
            med(&|r| r.p50_ms),
            med(&|r| r.p99_ms),
            runs.iter().map(|r| r.non_2xx).sum::<u64>()
        );
    }
    Ok(())
}

pub(crate) fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(crate) fn ensure_wrk() -> Result {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!(
        "xtask: wrk is missing; installing it from the system packages (apt-get install wrk)"
    );
    let status = Command::new("apt-get")
        .args(["install", "-y", "wrk"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("apt-get: {e}"))?;
    if status.success() && Command::new("wrk").arg("--version").output().is_ok() {
        Ok(())
    } else {
        Err("wrk could not be installed: run `apt-get install -y wrk`".into())
    }
}

/// A child process (a server, a chaos client…), SIGKILLed and reaped when dropped.
pub(crate) struct Server(pub(crate) Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_addr() -> Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free loopback port: {e}"))
}

fn measure(
    binary: &Path,
    script: &Path,
    variant: &Variant,
    seconds: u64,
    round: usize,
) -> Result<Run> {
    let addr = free_addr()?;
    let mut args: Vec<String> = vec![
        "-c".into(),
        "0".into(),
        binary.display().to_string(),
        "--rate".into(),
        "100000000/s".into(),
        "--in-flight".into(),
        "4096".into(),
        "--capacity".into(),
        "65536".into(),
    ];
    args.extend(variant.args.iter().cloned());
    let _server = Server(
        Command::new("taskset")
            .args(&args)
            .env("ADDR", addr.to_string())
            .env("RUST_LOG", "error")
            .env("IN_FLIGHT_PER_IP", "65536")
            .env(
                "REDIS_PREFIX",
                format!("e2e-{}-{round}", std::process::id()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting orders-api: {e}"))?,
    );
    wait_listening(addr, &format!("orders-api ({})", variant.name()))?;
    // The order every GET reads.
    seed_order(addr)?;
    load(script, addr, seconds)
}

/// Waits up to 30 s for `addr` to accept a connection (`what` names it in the error).
pub(crate) fn wait_listening(addr: SocketAddr, what: &str) -> Result {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not listen on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The bench load: `wrk` pinned to core 1, one thread, 32 keep-alive connections, `script`
/// against `addr` for `seconds`, read as a [`Run`].
pub(crate) fn load(script: &Path, addr: SocketAddr, seconds: u64) -> Result<Run> {
    let out = Command::new("taskset")
        .args([
            "-c",
            "1",
            "wrk",
            "-t1",
            "-c32",
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(format!("http://{addr}"))
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse(&text).ok_or_else(|| format!("unreadable wrk output:\n{text}"))
}

fn seed_order(addr: SocketAddr) -> Result {
    use std::io::{Read, Write};
    let body = r#"{"sku":"tea","quantity":1}"#;
    let req = format!(
        "POST /orders HTTP/1.1\r\nhost: e2e\r\nconnection: close\r\nauthorization: Bearer p0\r\n\
         idempotency-key: seed-{}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        std::process::id(),
        body.len()
    );
    let mut conn = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    conn.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    let _ = conn.read_to_string(&mut out);
    if out.starts_with("HTTP/1.1 201") || out.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "seeding an order failed: {}",
            out.lines().next().unwrap_or("")
        ))
    }
}

/// Requests/sec, the 50 % and 99 % latencies and the non-2xx count of wrk's report.
pub(crate) fn parse(text: &str) -> Option<Run> {
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let mut non_2xx = 0;
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = duration_ms(v.trim());
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = duration_ms(v.trim());
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = v.trim().parse().unwrap_or(0);
        }
    }
    Some(Run {
        rps: rps?,
        p50_ms: p50?,
        p99_ms: p99?,
        non_2xx,
    })
}

/// `123.45us`, `1.20ms`, `2.00s` in milliseconds.
fn duration_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}
