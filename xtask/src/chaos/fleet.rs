//! The fleet under test and the faults it takes: processes started by PID, in namespaces of
//! [`Net`], stopped and deleted when [`Fleet`] drops.

use super::checker::{Observed, OrderRow};
use super::history::{now_ms, read_lines, Fault, Kind, Op};
use super::net::Net;
use super::{side, Opts, Schedule};
// A child process, SIGKILLed and reaped when dropped.
use crate::e2e::Server as Proc;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::cluster::{Cluster, Placement};

/// The fleet rate limit per principal (a second; the burst is the same).
pub const RATE: u32 = 100;
const SERVERS: usize = 3;
const SERVER_PORT: u16 = 8080;
const PG_HOST: u8 = 30;

/// One orders-api server: its namespace, address, and process while it runs.
struct Server {
    ns: String,
    addr: SocketAddr,
    proc: Option<Proc>,
}

/// Everything a run started.
pub struct Fleet {
    // Dropped first to last: the processes, then the namespaces they ran in.
    clients: Vec<Proc>,
    haproxy: Option<Proc>,
    servers: Vec<Server>,
    cluster: Option<Cluster>,
    postgres: Option<Postgres>,
    rt: tokio::runtime::Runtime,
    received: side::Received,
    delay: Arc<AtomicBool>,
    net: Net,
    dir: PathBuf,
    seed: u64,
    front: SocketAddr,
    server_env: Vec<(String, String)>,
    server_args: Vec<String>,
    binary: PathBuf,
    /// The relays' ports on the bridge, in front of each Redis node, for server 0.
    relay_ports: Vec<u16>,
    redis: Vec<SocketAddr>,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Fleet {
    /// Builds and starts everything; on an error, what was started is stopped again.
    pub fn start(opts: &Opts) -> crate::Result<Self> {
        if !is_root() {
            return Err(
                "chaos needs root (network namespaces, nftables, PostgreSQL as user postgres)"
                    .into(),
            );
        }
        crate::gateway::ensure_packages(&[
            ("haproxy", "haproxy"),
            ("nft", "nftables"),
            ("ip", "iproute2"),
            ("redis-server", "redis-server"),
            ("redis-cli", "redis-tools"),
            ("psql", "postgresql-client"),
            ("setpriv", "util-linux"),
        ])?;
        let pg_bin = postgres_bin()?;
        let binary = crate::release_binary("examples", "orders-api")?;
        let run = format!("{:04x}", std::process::id() % 0x1_0000);
        let dir = std::env::temp_dir().join(format!("retry-safe-chaos-{run}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut net = Net::create(&run)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let pg_ns = net.space("pg", PG_HOST)?;
        let mut placements = Vec::new();
        for j in 0..6u8 {
            let ns = net.space(&format!("r{j}"), 20 + j)?;
            placements.push(Placement {
                addr: SocketAddr::from((net.addr(20 + j), 7001 + u16::from(j))),
                netns: Some(ns),
            });
        }
        let mut servers = Vec::new();
        for i in 0..SERVERS as u8 {
            let ns = net.space(&format!("s{i}"), 10 + i)?;
            servers.push(Server {
                ns,
                addr: SocketAddr::from((net.addr(10 + i), SERVER_PORT)),
                proc: None,
            });
        }
        let mut fleet = Self {
            clients: Vec::new(),
            haproxy: None,
            servers,
            cluster: None,
            postgres: None,
            rt,
            received: side::Received::default(),
            delay: Arc::new(AtomicBool::new(false)),
            redis: placements.iter().map(|p| p.addr).collect(),
            net,
            dir,
            seed: opts.seed,
            front: crate::e2e::free_addr()?,
            server_env: Vec::new(),
            server_args: Vec::new(),
            binary,
            relay_ports: Vec::new(),
        };
        fleet.postgres = Some(Postgres::start(
            &pg_bin,
            &pg_ns,
            SocketAddr::from((fleet.net.addr(PG_HOST), 5432)),
            &fleet.dir,
        )?);
        fleet.cluster = Some(testkit::cluster::start_placed(&placements)?);
        fleet.side_services()?;
        fleet.firewalls()?;
        fleet.configure(&run);
        for i in 0..SERVERS {
            // One at a time: the first runs the migrations.
            fleet.start_server(i)?;
        }
        fleet.haproxy = Some(fleet.start_haproxy()?);
        Ok(fleet)
    }

    /// The run's directory (histories, logs, the report).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Webhook deliveries that arrived at the receiver.
    pub fn deliveries(&self) -> u64 {
        self.received.arrived.load(Ordering::Relaxed)
    }

    fn side_services(&mut self) -> crate::Result {
        let bridge = SocketAddr::from((self.net.addr(1), 0));
        let url = self
            .rt
            .block_on(side::receiver(bridge, self.received.clone()))?;
        self.server_env.push(("WEBHOOK_URL".into(), url));
        for &node in &self.redis.clone() {
            let port = self
                .rt
                .block_on(side::delaying_relay(bridge, node, self.delay.clone()))?;
            self.relay_ports.push(port);
        }
        Ok(())
    }

    /// An empty filter chain in each server's namespace (the faults add rules to it), and in
    /// server 0's, the NAT that sends its Redis traffic through the delaying relays.
    fn firewalls(&self) -> crate::Result {
        let base = "table inet chaos {\n chain out { type filter hook output priority 0; policy accept; }\n}\n";
        for s in &self.servers {
            self.net.nft(&s.ns, base)?;
        }
        let bridge = self.net.addr(1);
        let dnat: String = self
            .redis
            .iter()
            .zip(&self.relay_ports)
            .map(|(node, port)| {
                format!(
                    "  ip daddr {} tcp dport {} dnat to {bridge}:{port}\n",
                    node.ip(),
                    node.port()
                )
            })
            .collect();
        let nat = format!("table ip chaosnat {{\n chain out {{ type nat hook output priority -100; policy accept;\n{dnat} }}\n}}\n");
        self.net.nft(&self.servers[0].ns, &nat)
    }

    fn configure(&mut self, run: &str) {
        let bridge = self.net.addr(1);
        let urls: Vec<String> = self.redis.iter().map(|a| format!("redis://{a}")).collect();
        let pg = format!(
            "postgres://postgres@{}:5432/postgres",
            self.net.addr(PG_HOST)
        );
        self.server_args = [
            "--postgres",
            &pg,
            "--redis-cluster",
            &urls.join(","),
            "--single-commit=last",
            "--rate",
            &format!("{RATE}/s"),
            "--burst",
            &RATE.to_string(),
        ]
        .map(String::from)
        .to_vec();
        let env = [
            ("REDIS_PREFIX", format!("chaos-{run}")),
            ("WEBHOOK_SECRET", side::SECRET.to_owned()),
            ("WEBHOOK_ALLOW", self.net.cidr()),
            ("WEBHOOK_LEASE_SECS", "5".into()),
            ("WEBHOOK_TIMEOUT_SECS", "3".into()),
            ("TRUSTED_PROXIES", format!("{bridge}/32")),
            ("IN_FLIGHT_PER_IP", "64".into()),
            ("DRAIN_SECS", "1".into()),
            ("RUST_LOG", "warn".into()),
        ];
        self.server_env.extend(env.map(|(k, v)| (k.to_owned(), v)));
    }

    fn start_server(&mut self, i: usize) -> crate::Result {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("server-{i}.log")))
            .map_err(|e| e.to_string())?;
        let s = &mut self.servers[i];
        let child = Command::new("ip")
            .args(["netns", "exec", &s.ns])
            .arg(&self.binary)
            .args(&self.server_args)
            .envs(self.server_env.iter().map(|(k, v)| (k, v)))
            .env("ADDR", s.addr.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting orders-api in {}: {e}", s.ns))?;
        s.proc = Some(Proc(child));
        crate::e2e::wait_listening(s.addr, &format!("orders-api s{i}"))
    }

    fn start_haproxy(&self) -> crate::Result<Proc> {
        let servers: String = self
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| format!("  server s{i} {} check\n", s.addr))
            .collect();
        let config = format!(
            "global\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  \
             timeout check 1s\n  option forwardfor\n  retries 2\n  option redispatch\n\
             frontend front\n  bind {}\n  default_backend fleet\n\
             backend fleet\n  balance roundrobin\n  option httpchk\n  \
             http-check send meth GET uri /healthz\n  http-check expect status 200\n  default-server inter 500ms fall 2 rise 2\n{servers}",
            self.front
        );
        let path = self.dir.join("haproxy.cfg");
        std::fs::write(&path, config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(self.dir.join("haproxy.log")).map_err(|e| e.to_string())?;
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("haproxy: {e}"))?;
        let proc = Proc(child);
        crate::e2e::wait_listening(self.front, "haproxy")?;
        Ok(proc)
    }

    fn spawn_client(&self, id: u32, until: u64, extra: &[String]) -> crate::Result<Proc> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let out = self.dir.join(format!("history-{id}.jsonl"));
        let child = Command::new(exe)
            .arg("chaos-client")
            .args(["--id", &id.to_string(), "--addr", &self.front.to_string()])
            .args([
                "--until",
                &until.to_string(),
                "--seed",
                &self.seed.to_string(),
            ])
            .arg("--out")
            .arg(out)
            .arg("--stop")
            .arg(self.dir.join("stop"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("chaos-client: {e}"))?;
        Ok(Proc(child))
    }

    /// The workload under the schedule's faults, the settling of unknown keys, the webhooks
    /// drained: what was observed.
    pub fn exercise(&mut self, schedule: &Schedule, sabotage: bool) -> crate::Result<Observed> {
        let until = now_ms() + 3_600_000;
        for id in 0..3 {
            self.clients.push(self.spawn_client(id, until, &[])?);
        }
        std::thread::sleep(schedule.calm);
        let mut faults = Vec::new();
        for &(kind, target) in &schedule.steps {
            let fault = self.inject(kind, target)?;
            eprintln!(
                "xtask chaos: {} on {} for {} ms",
                fault.kind,
                fault.target,
                fault.end - fault.start
            );
            faults.push(fault);
            std::thread::sleep(schedule.calm);
        }
        let healed = faults.last().map_or(now_ms(), |f| f.end);
        let lines: String = faults
            .iter()
            .filter_map(|f| serde_json::to_string(f).ok())
            .map(|l| l + "\n")
            .collect();
        std::fs::write(self.dir.join("faults.jsonl"), lines).map_err(|e| e.to_string())?;
        std::fs::write(self.dir.join("stop"), "").map_err(|e| e.to_string())?;
        self.wait_clients()?;
        let mut ops = self.histories(0..3)?;
        self.settle(&ops)?;
        ops.extend(self.histories(3..4)?);
        if sabotage {
            // A duplicate the fence would have prevented: a second order for a key that has one.
            let pg = self.postgres.as_ref().ok_or("no PostgreSQL")?;
            pg.psql(
                "INSERT INTO orders (id, owner, sku, quantity, version) \
                 SELECT id || '_dup', owner, sku, quantity, version FROM orders LIMIT 1",
            )?;
        }
        let (orders, captures) = self.drain_webhooks()?;
        let webhooks = self
            .received
            .processed
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        Ok(Observed {
            ops,
            orders,
            captures,
            webhooks,
            faults,
            healed,
        })
    }

    fn wait_clients(&mut self) -> crate::Result {
        for mut c in std::mem::take(&mut self.clients) {
            let status = c.0.wait().map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("a chaos client failed ({status})"));
            }
        }
        Ok(())
    }

    fn histories(&self, ids: std::ops::Range<u32>) -> crate::Result<Vec<Op>> {
        let mut ops = Vec::new();
        for id in ids {
            ops.extend(read_lines::<Op>(
                &self.dir.join(format!("history-{id}.jsonl")),
            )?);
        }
        Ok(ops)
    }

    /// Retries every create whose outcome its client never learned (client 3).
    fn settle(&mut self, ops: &[Op]) -> crate::Result {
        let answered: std::collections::BTreeSet<&str> = ops
            .iter()
            .filter(|o| matches!(o.kind, Kind::Create | Kind::Replay) && !o.unknown())
            .map(|o| o.key.as_str())
            .collect();
        let open: std::collections::BTreeSet<(&str, &str)> = ops
            .iter()
            .filter(|o| o.kind == Kind::Create && !answered.contains(o.key.as_str()))
            .map(|o| (o.key.as_str(), o.principal.as_str()))
            .collect();
        let file = self.dir.join("settle.txt");
        let text: String = open.iter().map(|(k, p)| format!("{k}\t{p}\n")).collect();
        std::fs::write(&file, text).map_err(|e| e.to_string())?;
        let mut c = self.spawn_client(
            3,
            now_ms() + 60_000,
            &["--settle".into(), file.display().to_string()],
        )?;
        let status = c.0.wait().map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("the settling client failed ({status})"))
        }
    }

    /// Waits up to 60 s for a webhook of every order; the orders and the captures then.
    fn drain_webhooks(
        &self,
    ) -> crate::Result<(Vec<OrderRow>, std::collections::BTreeMap<String, u32>)> {
        let pg = self.postgres.as_ref().ok_or("no PostgreSQL")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let orders = pg.orders()?;
            let done = self.received.processed.lock().is_ok_and(|p| {
                orders
                    .iter()
                    .all(|o| p.contains_key(&format!("evt_{}", o.id)))
            });
            if done || Instant::now() > deadline {
                // A moment for a redelivery in flight to show.
                std::thread::sleep(Duration::from_secs(1));
                return Ok((orders, pg.captures()?));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Injects `kind` (on server `target` where it takes one), holds it, heals it.
    fn inject(&mut self, kind: &'static str, target: usize) -> crate::Result<Fault> {
        let hold = super::FAULTS
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, ms)| *ms);
        let hold = Duration::from_millis(hold);
        let start = now_ms();
        let s = format!("s{target}");
        let target = match kind {
            "kill-server" => {
                drop(self.servers[target].proc.take());
                std::thread::sleep(hold);
                self.start_server(target)?;
                s
            }
            "pause-server" => {
                let pid = self.pid(target)?;
                testkit::signal(pid, "STOP");
                std::thread::sleep(hold);
                testkit::signal(pid, "CONT");
                s
            }
            "kill-redis-master" => self.kill_redis_master(hold)?,
            "partition-redis" => self.rule(target, &self.redis_rule(""), hold)?,
            "partition-pg" => self.rule(
                target,
                &format!("ip daddr {} drop", self.net.addr(PG_HOST)),
                hold,
            )?,
            "loss-redis" => {
                self.rule(target, &self.redis_rule("numgen random mod 100 < 5"), hold)?
            }
            "latency-redis" => {
                self.delay.store(true, Ordering::Relaxed);
                std::thread::sleep(hold);
                self.delay.store(false, Ordering::Relaxed);
                "s0".into()
            }
            "restart-pg" => {
                self.postgres.as_mut().ok_or("no PostgreSQL")?.restart()?;
                "postgres".into()
            }
            "redis-down" => {
                let pids: Vec<u32> = self.redis_pids();
                for &pid in &pids {
                    testkit::signal(pid, "STOP");
                }
                std::thread::sleep(hold);
                for &pid in &pids {
                    testkit::signal(pid, "CONT");
                }
                "all six nodes".into()
            }
            "slow-senders" => {
                let until = now_ms() + hold.as_millis() as u64;
                let mut c = self.spawn_client(9, until, &["--slow".into(), "70".into()])?;
                let _ = c.0.wait();
                "70 addresses".into()
            }
            _ => return Err(format!("no fault {kind}")),
        };
        Ok(Fault {
            kind: kind.into(),
            target,
            start,
            end: now_ms(),
        })
    }

    fn pid(&self, server: usize) -> crate::Result<u32> {
        self.servers[server]
            .proc
            .as_ref()
            .map(|p| p.0.id())
            .ok_or_else(|| format!("s{server} is not running"))
    }

    fn redis_pids(&self) -> Vec<u32> {
        self.cluster.as_ref().map(Cluster::pids).unwrap_or_default()
    }

    /// `… drop` for every packet from a server to Redis (directly, or to server 0's relays).
    fn redis_rule(&self, condition: &str) -> String {
        let nodes: Vec<String> = self.redis.iter().map(|a| a.ip().to_string()).collect();
        let relays: Vec<String> = self.relay_ports.iter().map(u16::to_string).collect();
        format!(
            "ip daddr {{ {} }} {condition} drop\nadd rule inet chaos out ip daddr {} tcp dport {{ {} }} {condition} drop",
            nodes.join(", "),
            self.net.addr(1),
            relays.join(", ")
        )
    }

    /// Adds `rule` to server `target`'s chain for `hold`, then flushes the chain.
    fn rule(&self, target: usize, rule: &str, hold: Duration) -> crate::Result<String> {
        let ns = &self.servers[target].ns;
        self.net
            .nft(ns, &format!("add rule inet chaos out {rule}\n"))?;
        std::thread::sleep(hold);
        self.net.nft(ns, "flush chain inet chaos out\n")?;
        Ok(format!("s{target}"))
    }

    /// SIGKILLs a master, restarts it after `hold` (it rejoins as a replica).
    fn kill_redis_master(&mut self, hold: Duration) -> crate::Result<String> {
        let cluster = self.cluster.as_mut().ok_or("no cluster")?;
        let port = cluster.a_master().ok_or("no Redis master answers")?;
        let master = self
            .redis
            .iter()
            .find(|a| a.port() == port)
            .copied()
            .ok_or("no such node")?;
        cluster.kill(master.port());
        std::thread::sleep(hold);
        cluster.restart(master.port())?;
        Ok(format!("redis {master}"))
    }
}

/// The directory of the PostgreSQL server binaries (`initdb`, `postgres`).
fn postgres_bin() -> crate::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "no PostgreSQL server binaries: apt-get install -y postgresql".to_owned())?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "no initdb under /usr/lib/postgresql".into())
}

/// A PostgreSQL server of the run's own, as user `postgres`, in its namespace.
struct Postgres {
    bin: PathBuf,
    ns: String,
    addr: SocketAddr,
    data: PathBuf,
    proc: Option<Proc>,
}

impl Postgres {
    fn start(bin: &Path, ns: &str, addr: SocketAddr, dir: &Path) -> crate::Result<Self> {
        let data = dir.join("pg");
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            return Err("chown postgres failed".into());
        }
        let out = Command::new("setpriv")
            .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let hba = data.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).map_err(|e| e.to_string())?;
        text.push_str("host all all 10.77.0.0/16 trust\n");
        std::fs::write(&hba, text).map_err(|e| e.to_string())?;
        let mut pg = Self {
            bin: bin.to_owned(),
            ns: ns.to_owned(),
            addr,
            data,
            proc: None,
        };
        pg.spawn()?;
        Ok(pg)
    }

    fn spawn(&mut self) -> crate::Result {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.with_file_name("postgres.log"))
            .map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "setpriv",
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
            ])
            .arg(self.bin.join("postgres"))
            .arg("-D")
            .arg(&self.data)
            .args([
                "-c",
                &format!("listen_addresses={}", self.addr.ip()),
                "-c",
                "port=5432",
            ])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.data.display()))
            .args(["-c", "max_connections=400", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        self.proc = Some(Proc(child));
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.psql("SELECT 1").is_err() {
            if Instant::now() > deadline {
                return Err("the chaos PostgreSQL did not start (see postgres.log)".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// An immediate shutdown (SIGQUIT: no checkpoint, crash recovery on start), then a start.
    fn restart(&mut self) -> crate::Result {
        if let Some(mut p) = self.proc.take() {
            testkit::signal(p.0.id(), "QUIT");
            let _ = p.0.wait();
        }
        self.spawn()
    }

    fn psql(&self, sql: &str) -> crate::Result<String> {
        let out = Command::new("psql")
            .args([
                "-h",
                &self.addr.ip().to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-At",
                "-F",
                "\t",
                "-c",
                sql,
            ])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "psql: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn orders(&self) -> crate::Result<Vec<OrderRow>> {
        let text = self.psql("SELECT id, sku, quantity, version FROM orders")?;
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                match f.as_slice() {
                    [id, sku, q, v] => Ok(OrderRow {
                        id: (*id).into(),
                        sku: (*sku).into(),
                        quantity: q.parse().map_err(|_| format!("orders row {l}"))?,
                        version: v.parse().map_err(|_| format!("orders row {l}"))?,
                    }),
                    _ => Err(format!("orders row {l}")),
                }
            })
            .collect()
    }

    fn captures(&self) -> crate::Result<std::collections::BTreeMap<String, u32>> {
        let text = self.psql("SELECT payment, count(*) FROM captures GROUP BY payment")?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter_map(|(p, n)| Some((p.to_owned(), n.parse().ok()?)))
            .collect())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(p) = &self.proc {
            // A fast shutdown, so that the data directory can go.
            testkit::signal(p.0.id(), "INT");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && self.psql("SELECT 1").is_ok() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.proc = None;
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.clients.clear();
        self.haproxy = None;
        for s in &mut self.servers {
            s.proc = None;
        }
        self.cluster = None;
        self.postgres = None;
        let _ = std::fs::remove_dir_all(self.dir.join("pg"));
    }
}
