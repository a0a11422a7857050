//! `cargo xtask bench redis-server`: what each Redis operation of the workspace costs the Redis
//! server, in instructions (deterministic, unlike round-trip timings on a shared machine).
//!
//! Starts a private `redis-server` on a free loopback port under valgrind's callgrind, counting
//! only inside Redis' `call()` (the execution of a command, Lua scripts and the commands they
//! run included; not the event loop or the sockets), runs the release `redis-instructions`
//! binary against it (`REDIS_INSTR_CALLS` operations of each kind, default 2,000), prints its
//! table and stops the server it started.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type Result<T = ()> = std::result::Result<T, String>;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

pub fn run() -> Result {
    for (tool, package) in [
        ("valgrind", "valgrind"),
        ("callgrind_control", "valgrind"),
        ("redis-server", "redis-server"),
    ] {
        if !have(tool) {
            return Err(format!(
                "`{tool}` is not installed; install it with `apt-get install {package}`"
            ));
        }
    }
    let calls = std::env::var("REDIS_INSTR_CALLS").unwrap_or_else(|_| "2000".into());
    let binary = crate::release_binary("benchmarks", "redis-instructions")?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free loopback port: {e}"))?
        .port();
    let dir = std::env::temp_dir().join(format!("xtask-redis-instructions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let out = dir.join("callgrind.out");
    let mut server = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--toggle-collect=call")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .args([
            "redis-server",
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start valgrind redis-server: {e}"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let result = loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            eprintln!(
                "xtask: redis-server under callgrind on {addr} (pid {})",
                server.id()
            );
            let status = Command::new(&binary)
                .arg(format!("redis://{addr}"))
                .arg(server.id().to_string())
                .arg(&out)
                .arg(&calls)
                .status()
                .map_err(|e| format!("could not run {}: {e}", binary.display()));
            break match status {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => Err(format!("redis-instructions failed ({s})")),
                Err(e) => Err(e),
            };
        }
        if started.elapsed() > Duration::from_secs(60) {
            break Err("redis-server under valgrind did not answer within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
