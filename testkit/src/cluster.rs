//! A private Redis Cluster for the tests: 3 masters and 3 replicas of the machine's
//! `redis-server` on loopback ports, each in a temporary directory of its own, joined with
//! `redis-cli --cluster create`. Started unless `REDIS_CLUSTER_URLS` names a cluster already;
//! stopped (exactly the processes started here, by PID) when the [`Cluster`] is dropped.
//!
//! The fault tests that kill a master own a cluster of their own ([`start_private`],
//! [`Cluster::kill`]); `cargo xtask test` and `cargo xtask cluster` start the shared one.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where a node of a cluster runs: its address, and the network namespace (`ip netns`) it is
/// started in, if any.
#[derive(Clone, Debug)]
pub struct Placement {
    /// The address it binds and announces.
    pub addr: SocketAddr,
    /// The namespace it runs in (`ip netns exec`); `None`: this one.
    pub netns: Option<String>,
}

/// A running cluster this run started.
pub struct Cluster {
    nodes: Vec<(u16, Child)>,
    placements: Vec<Placement>,
    dirs: Vec<PathBuf>,
    /// `redis://127.0.0.1:P1,redis://127.0.0.1:P2,…`, for `REDIS_CLUSTER_URLS`.
    pub urls: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, node) in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

const NODES: usize = 6;

fn free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Six ports `p` in 20000..55000 whose cluster-bus ports `p + 10000` are free too, searched from
/// a place that depends on the process id (so concurrent runs rarely collide).
fn ports() -> Result<Vec<u16>, String> {
    const LOW: u16 = 20_000;
    const SPAN: u16 = 35_000;
    let offset = (std::process::id() % u32::from(SPAN)) as u16;
    let found: Vec<u16> = (0..SPAN)
        .map(|i| LOW + (offset + i) % SPAN)
        .filter(|&p| free(p) && free(p + 10_000))
        .take(NODES)
        .collect();
    if found.len() < NODES {
        return Err("no free loopback ports for a Redis Cluster".into());
    }
    Ok(found)
}

fn answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

fn cli(addr: SocketAddr, args: &[&str]) -> Result<String, String> {
    let out = Command::new("redis-cli")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args)
        .output()
        .map_err(|e| {
            format!("could not run redis-cli ({e}); install it with `apt-get install redis-tools`")
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Cluster {
    /// The nodes' ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|(p, _)| *p).collect()
    }

    /// The port of a node that answers `ROLE` as a master now (failovers move the role).
    pub fn a_master(&self) -> Option<u16> {
        self.nodes
            .iter()
            .zip(&self.placements)
            .find(|(_, p)| cli(p.addr, &["role"]).is_ok_and(|r| r.starts_with("master")))
            .map(|((port, _), _)| *port)
    }

    /// The PIDs of every node.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|(_, c)| c.id()).collect()
    }

    /// The PID of the node on `port`.
    pub fn pid(&self, port: u16) -> Option<u32> {
        self.nodes
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, c)| c.id())
    }

    /// Starts the node on `port` again (after [`kill`](Self::kill)), on its own state: it
    /// rejoins the cluster, as a replica when its master role was taken over meanwhile.
    pub fn restart(&mut self, port: u16) -> Result<(), String> {
        let i = self
            .nodes
            .iter()
            .position(|(p, _)| *p == port)
            .ok_or_else(|| format!("no node of this cluster on {port}"))?;
        let child = spawn_node(&self.placements[i], &self.dirs[i])?;
        self.nodes[i].1 = child;
        Ok(())
    }

    /// SIGKILLs the node on `port` (by its PID); `false` when no node of this cluster is there.
    pub fn kill(&mut self, port: u16) -> bool {
        match self.nodes.iter_mut().find(|(p, _)| *p == port) {
            Some((_, node)) => {
                let _ = node.kill();
                let _ = node.wait();
                true
            }
            None => false,
        }
    }
}

/// Starts the cluster, unless `REDIS_CLUSTER_URLS` is set (`None` then: the tests use it).
pub fn start() -> Result<Option<Cluster>, String> {
    if std::env::var("REDIS_CLUSTER_URLS").is_ok_and(|v| !v.trim().is_empty()) {
        return Ok(None);
    }
    start_private().map(Some)
}

/// Starts a cluster of this process's own on loopback, whatever `REDIS_CLUSTER_URLS` says.
pub fn start_private() -> Result<Cluster, String> {
    let placements: Vec<Placement> = ports()?
        .into_iter()
        .map(|port| Placement {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            netns: None,
        })
        .collect();
    start_placed(&placements)
}

/// Starts a cluster of six nodes (three masters, three replicas) at `placements`: each node
/// binds and announces its address, in its network namespace when it names one. The ports must
/// differ (they name the nodes), and each port + 10000 (the cluster bus) be free at its address.
pub fn start_placed(placements: &[Placement]) -> Result<Cluster, String> {
    if placements.len() != NODES {
        return Err(format!("a cluster needs {NODES} placements"));
    }
    let mut cluster = Cluster {
        nodes: Vec::new(),
        placements: placements.to_vec(),
        dirs: Vec::new(),
        urls: placements
            .iter()
            .map(|p| format!("redis://{}", p.addr))
            .collect::<Vec<_>>()
            .join(","),
    };
    for placement in placements {
        let port = placement.addr.port();
        let dir =
            std::env::temp_dir().join(format!("retry-safe-cluster-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let child = spawn_node(placement, &dir)?;
        cluster.nodes.push((port, child));
        cluster.dirs.push(dir);
    }
    let addrs: Vec<SocketAddr> = placements.iter().map(|p| p.addr).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !addrs.iter().all(|&a| answers(a)) {
        if Instant::now() > deadline {
            return Err("the Redis Cluster nodes did not start listening".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let names: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    let status = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&names)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| {
            format!("could not run redis-cli ({e}); install it with `apt-get install redis-tools`")
        })?;
    if !status.success() {
        return Err(format!(
            "`redis-cli --cluster create {}` failed",
            names.join(" ")
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = addrs.iter().all(|&a| {
            cli(a, &["cluster", "info"]).is_ok_and(|info| {
                info.contains("cluster_state:ok") && info.contains("cluster_slots_assigned:16384")
            })
        });
        // And every replica in sync with its master, so that a master killed at once has a
        // replica ready to take over.
        let synced = ok
            && addrs.iter().all(|&a| {
                cli(a, &["info", "replication"]).is_ok_and(|info| {
                    !info.contains("role:slave") || info.contains("master_link_status:up")
                })
            });
        if synced {
            break;
        }
        if Instant::now() > deadline {
            return Err("the Redis Cluster did not reach cluster_state:ok".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("Redis Cluster of {NODES} nodes on {}", cluster.urls);
    Ok(cluster)
}

/// `cargo xtask cluster`: a cluster for running tests by hand, until standard input ends.
pub fn serve() -> Result<(), String> {
    let Some(cluster) = start()? else {
        return Err("REDIS_CLUSTER_URLS is set: a cluster is already there".into());
    };
    println!("REDIS_CLUSTER_URLS={}", cluster.urls);
    eprintln!("xtask: the cluster runs until standard input ends (Ctrl-D)");
    let mut sink = String::new();
    while std::io::stdin()
        .read_line(&mut sink)
        .map_err(|e| e.to_string())?
        > 0
    {}
    drop(cluster);
    Ok(())
}

/// One cluster-enabled `redis-server` at `placement`, keeping its state (`nodes.conf`) in `dir`.
fn spawn_node(placement: &Placement, dir: &std::path::Path) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("redis.log"))
        .map_err(|e| e.to_string())?;
    let mut command = match &placement.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "redis-server"]);
            c
        }
        None => Command::new("redis-server"),
    };
    if placement.netns.is_some() {
        // Its address is on a private network of this host's own namespaces, not loopback.
        command.args(["--protected-mode", "no"]);
    }
    let ip = placement.addr.ip().to_string();
    command
        .args([
        "--port",
        &placement.addr.port().to_string(),
        "--bind",
        &ip,
        "--cluster-announce-ip",
        &ip,
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "2000",
        // A replica always takes over a dead master, however long since their last
        // exchange: the fault tests kill masters of a cluster started seconds before.
        "--cluster-replica-validity-factor",
        "0",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        ])
        .arg(dir)
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
        format!("could not start redis-server ({e}); install it with `apt-get install redis-server`")
        })
}
