//! `cargo xtask bench gateway`: the release `retry-safe-gateway` beside nginx and haproxy, each
//! proxying to the same static upstream, under the same `wrk` load, in interleaved rounds.
//!
//! The proxy under test is pinned to core 0; `wrk` and the upstream (nginx `return 200`, one
//! worker) to core 1. Per round, in an order that rotates from round to round, each variant runs
//! on a fresh process: `direct` (wrk → upstream), `nginx` (`proxy_pass`, upstream keep-alive, one
//! worker), `haproxy` (one thread), `hyper-proxy` (the floor of a hyper-based proxy: a hyper-util
//! server and pooled client, nothing else), `gateway` (pass-through: routes only), `gateway-stack`
//! (API key and plan, trace context, shedding, rate limit, concurrency cap, idempotency — in
//! memory), `gateway-stack-redis` (the same with the store, the plan's limits and the route's
//! limits on Redis), `nginx-limit-req` (`limit_req` keyed by address) and `gateway-rate-limit`
//! (the gateway's rate limit keyed by address alone). Limits are set far above the offered load,
//! so what is measured is their cost, not their refusals (non-2xx answers are reported). The
//! load: one wrk thread, 32 keep-alive connections, 80 % `GET /orders/ord_1`, 20 % `POST /orders`
//! with a fresh `Idempotency-Key`, all with the demo API key. Access logs are off everywhere.
//! Ratios are taken within a round (a variant against the faster of nginx and haproxy in that
//! round, the rate limit against `nginx-limit-req`), then the median and the spread over rounds.
//! `GATEWAY_PAIRS` (default 5) rounds of `GATEWAY_SECONDS` (default 5); `GATEWAY_VARIANTS`
//! (comma-separated) runs only those variants (nginx, haproxy and nginx-limit-req are kept: the
//! ratios need them). nginx, haproxy and wrk
//! are installed from the system packages when missing.

use crate::e2e::{ensure_wrk, env_num, free_addr, load, median, wait_listening, Run};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type Result<T = ()> = std::result::Result<T, String>;

const KEY: &str = "sk_test_bench_0000000000000000";

const LOAD: &str = r#"
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  counter = 0
  prefix = tostring(tid) .. "-" .. tostring(os.time()) .. "-" .. tostring(math.random(1000000000))
end
function request()
  counter = counter + 1
  local auth = "Bearer KEY"
  if counter % 5 == 1 then
    return wrk.format("POST", "/orders", {
      ["Content-Type"] = "application/json",
      ["Authorization"] = auth,
      ["Idempotency-Key"] = "gw-" .. prefix .. "-" .. tostring(counter),
    }, '{"sku":"tea","quantity":1}')
  end
  return wrk.format("GET", "/orders/ord_1", { ["Authorization"] = auth })
end
"#;

const VARIANTS: [&str; 9] = [
    "direct",
    "nginx",
    "haproxy",
    "hyper-proxy",
    "gateway",
    "gateway-stack",
    "gateway-stack-redis",
    "nginx-limit-req",
    "gateway-rate-limit",
];

/// Runs the comparison and prints its table.
pub fn run() -> Result {
    ensure_wrk()?;
    ensure_packages(&[("nginx", "nginx"), ("haproxy", "haproxy")])?;
    crate::services::ensure_all()?;
    let gateway = crate::release_binary("retry-safe-gateway", "retry-safe-gateway")?;
    let hyper_proxy = crate::release_binary("benchmarks", "hyper-proxy")?;
    let dir = std::env::temp_dir().join(format!("retry-safe-gateway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let script = dir.join("load.lua");
    std::fs::write(&script, LOAD.replace("KEY", KEY)).map_err(|e| e.to_string())?;
    let keys = dir.join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[key]]\nsha256 = \"{}\"\nprincipal = \"bench\"\nplan = \"bench\"\n",
            sha256_hex(KEY)?
        ),
    )
    .map_err(|e| e.to_string())?;
    let upstream_addr = free_addr()?;
    let _upstream = start_nginx(&dir, "upstream", &upstream_conf(&dir, upstream_addr), "1")?;
    wait_listening(upstream_addr, "the upstream nginx")?;
    let pairs: usize = env_num("GATEWAY_PAIRS", 5);
    let seconds: u64 = env_num("GATEWAY_SECONDS", 5);
    let only = std::env::var("GATEWAY_VARIANTS").unwrap_or_default();
    let wanted = |v: &str| {
        only.is_empty()
            || ["nginx", "haproxy", "nginx-limit-req"].contains(&v)
            || only.split(',').any(|o| o.trim() == v)
    };
    let chosen: Vec<usize> = (0..VARIANTS.len())
        .filter(|&i| wanted(VARIANTS[i]))
        .collect();
    let mut runs: Vec<Vec<Run>> = VARIANTS.iter().map(|_| Vec::new()).collect();
    for round in 0..pairs {
        for k in 0..chosen.len() {
            let i = chosen[(k + round) % chosen.len()];
            let ctx = Ctx {
                dir: &dir,
                gateway: &gateway,
                hyper_proxy: &hyper_proxy,
                keys: &keys,
                upstream: upstream_addr,
                round,
            };
            let run = measure(&ctx, VARIANTS[i], &script, seconds)?;
            eprintln!(
                "round {round} {:<20} {:>9.0} req/s  p99 {:.2} ms  non-2xx {}",
                VARIANTS[i], run.rps, run.p99_ms, run.non_2xx
            );
            runs[i].push(run);
        }
    }
    report(&runs, pairs, seconds);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

struct Ctx<'a> {
    dir: &'a Path,
    gateway: &'a Path,
    hyper_proxy: &'a Path,
    keys: &'a Path,
    upstream: SocketAddr,
    round: usize,
}

fn measure(ctx: &Ctx, variant: &str, script: &Path, seconds: u64) -> Result<Run> {
    let addr = if variant == "direct" {
        ctx.upstream
    } else {
        free_addr()?
    };
    let _proxy = start_variant(ctx, variant, addr)?;
    wait_listening(addr, variant)?;
    load(script, addr, seconds).map_err(|e| format!("{variant}: {e}"))
}

fn start_variant(ctx: &Ctx, variant: &str, addr: SocketAddr) -> Result<Option<Server>> {
    let up = ctx.upstream;
    Ok(Some(match variant {
        "direct" => return Ok(None),
        "nginx" => start_nginx(
            ctx.dir,
            variant,
            &nginx_proxy_conf(ctx.dir, variant, addr, up, false),
            "0",
        )?,
        "nginx-limit-req" => start_nginx(
            ctx.dir,
            variant,
            &nginx_proxy_conf(ctx.dir, variant, addr, up, true),
            "0",
        )?,
        "hyper-proxy" => spawn_pinned(
            &ctx.hyper_proxy.display().to_string(),
            &[&addr.to_string(), &up.to_string()],
            "0",
        )?,
        "haproxy" => {
            let cfg = ctx.dir.join("haproxy.cfg");
            std::fs::write(&cfg, haproxy_conf(addr, up)).map_err(|e| e.to_string())?;
            spawn_pinned("haproxy", &["-f", &cfg.display().to_string(), "-db"], "0")?
        }
        gateway => {
            let cfg = ctx.dir.join(format!("{gateway}.toml"));
            std::fs::write(&cfg, gateway_conf(gateway, addr, up, ctx.keys, ctx.round))
                .map_err(|e| e.to_string())?;
            spawn_pinned(
                &ctx.gateway.display().to_string(),
                &[&cfg.display().to_string()],
                "0",
            )?
        }
    }))
}

/// A proxy process, stopped with SIGTERM when dropped (by its PID): nginx's master then stops
/// its workers, which a SIGKILL of the master would leave running; SIGKILL after 5 s.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        testkit::signal(self.0.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_pinned(program: &str, args: &[&str], core: &str) -> Result<Server> {
    Command::new("taskset")
        .args(["-c", core, program])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Server)
        .map_err(|e| format!("starting {program}: {e}"))
}

fn start_nginx(dir: &Path, name: &str, conf: &str, core: &str) -> Result<Server> {
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let prefix = format!("{}/", dir.display());
    spawn_pinned(
        "nginx",
        &[
            "-p",
            &prefix,
            "-c",
            &path.display().to_string(),
            "-g",
            "daemon off;",
        ],
        core,
    )
}

/// The lines every nginx config of the bench shares: one worker, files in the bench's dir.
fn nginx_head(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;\nuser root;\npid {d}/{name}.pid;\nerror_log {d}/{name}.err error;\n\
         events {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body-{name};\n  \
         proxy_temp_path {d}/proxy-{name};\n  fastcgi_temp_path {d}/fcgi-{name};\n  uwsgi_temp_path {d}/uwsgi-{name};\n  \
         scgi_temp_path {d}/scgi-{name};\n"
    )
}

fn upstream_conf(dir: &Path, addr: SocketAddr) -> String {
    format!(
        "{}  server {{\n    listen {addr};\n    keepalive_requests 1000000;\n    location / {{\n      default_type application/json;\n      \
         return 200 '{{\"id\":\"ord_1\",\"sku\":\"tea\",\"quantity\":1}}';\n    }}\n  }}\n}}\n",
        nginx_head(dir, "upstream")
    )
}

fn nginx_proxy_conf(
    dir: &Path,
    name: &str,
    addr: SocketAddr,
    up: SocketAddr,
    limit: bool,
) -> String {
    let (zone, apply) = if limit {
        (
            "  limit_req_zone $binary_remote_addr zone=perip:10m rate=1000000r/s;\n",
            "      limit_req zone=perip burst=1000000 nodelay;\n",
        )
    } else {
        ("", "")
    };
    format!(
        "{}{zone}  upstream up {{ server {up}; keepalive 64; keepalive_requests 1000000; }}\n  server {{\n    listen {addr};\n    \
         keepalive_requests 1000000;\n    location / {{\n{apply}      proxy_pass http://up;\n      proxy_http_version 1.1;\n      \
         proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
        nginx_head(dir, name)
    )
}

fn haproxy_conf(addr: SocketAddr, up: SocketAddr) -> String {
    format!(
        "global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  \
         timeout server 30s\nfrontend f\n  bind {addr}\n  default_backend b\nbackend b\n  http-reuse always\n  server s1 {up}\n"
    )
}

fn gateway_conf(
    variant: &str,
    addr: SocketAddr,
    up: SocketAddr,
    keys: &Path,
    round: usize,
) -> String {
    let mut conf = format!(
        "[[listener]]\naddress = \"{addr}\"\n\n[limits]\naccess_log = false\n\n[shedding]\ncapacity = 65536\n\n\
         [upstreams.up]\naddress = \"{up}\"\npool_max_idle = 64\n\n"
    );
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let stacked = variant.starts_with("gateway-stack");
    if variant == "gateway-stack-redis" {
        conf += &format!(
            "[store]\nkind = \"redis\"\nurl = \"{redis}\"\nprefix = \"gw-bench-{}-{round}\"\n\n",
            std::process::id()
        );
    }
    if stacked {
        conf += &format!(
            "[plans.bench]\nrate = 100000000\nconcurrency = 65536\n\n[api_keys]\nfile = \"{}\"\n\n",
            keys.display()
        );
    }
    let shared = if variant == "gateway-stack-redis" {
        ", shared = true"
    } else {
        ""
    };
    let policies = match variant {
        "gateway-rate-limit" => "rate_limit = [{ key = \"client_ip\", rate = 1000000, burst = 1000000 }]\n".to_owned(),
        _ if stacked => format!(
            "auth = true\nidempotency = {{ required = false }}\nrate_limit = [{{ key = \"client_ip\", rate = 100000000, burst = 100000000{shared} }}]\n\
             concurrency = {{ key = \"principal\", max = 65536{shared} }}\n"
        ),
        _ => String::new(),
    };
    for (methods, path) in [("[\"POST\"]", "/orders"), ("[\"GET\"]", "/orders/{id}")] {
        conf += &format!(
            "[[route]]\nmethods = {methods}\npath = \"{path}\"\nupstream = \"up\"\n{policies}\n"
        );
    }
    conf
}

fn sha256_hex(text: &str) -> Result<String> {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("piped").write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .map_err(|e| format!("sha256sum: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// Installs the missing `(command, package)` pairs from the system packages.
pub(crate) fn ensure_packages(needed: &[(&str, &str)]) -> Result {
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(cmd, _)| !on_path(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing {} from the system packages",
        missing.join(", ")
    );
    let status = Command::new("apt-get")
        .args(["install", "-y"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("apt-get: {e}"))?;
    if status.success() && needed.iter().all(|(cmd, _)| on_path(cmd)) {
        Ok(())
    } else {
        Err(format!(
            "could not install {}: run `apt-get install -y {}`",
            missing.join(", "),
            missing.join(" ")
        ))
    }
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
                .any(|d| d.join(cmd).is_file())
        })
        .unwrap_or(false)
}

fn report(runs: &[Vec<Run>], pairs: usize, seconds: u64) {
    let idx = |name: &str| VARIANTS.iter().position(|v| *v == name).expect("a variant");
    let (nginx, haproxy, limit_req) = (idx("nginx"), idx("haproxy"), idx("nginx-limit-req"));
    let peer: Vec<f64> = (0..pairs)
        .map(|r| runs[nginx][r].rps.max(runs[haproxy][r].rps))
        .collect();
    println!("\n`cargo xtask bench gateway`: {pairs} interleaved rounds of {seconds} s, proxy on core 0, wrk and upstream on core 1\n");
    println!("| variant | req/s (median) | p99 ms (median) | non-2xx | ÷ faster of nginx/haproxy, median (min–max) |");
    println!("|---|---:|---:|---:|---|");
    for (i, name) in VARIANTS.iter().enumerate() {
        if runs[i].is_empty() {
            continue;
        }
        let rps = median(runs[i].iter().map(|r| r.rps).collect());
        let p99 = median(runs[i].iter().map(|r| r.p99_ms).collect());
        let non_2xx: u64 = runs[i].iter().map(|r| r.non_2xx).sum();
        let base = if *name == "gateway-rate-limit" {
            runs[limit_req].iter().map(|r| r.rps).collect()
        } else {
            peer.clone()
        };
        let ratios: Vec<f64> = runs[i].iter().zip(&base).map(|(r, b)| r.rps / b).collect();
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        let against = if *name == "gateway-rate-limit" {
            " (÷ nginx-limit-req)"
        } else {
            ""
        };
        println!(
            "| {name} | {rps:.0} | {p99:.2} | {non_2xx} | {:.2}× ({lo:.2}–{hi:.2}){against} |",
            median(ratios.clone())
        );
    }
}
