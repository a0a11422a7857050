//! The real services that store tests talk to: found, started, or reported.
//!
//! A service is needed when a crate that tests against it is part of the workspace. Its address
//! comes from the usual variable (`REDIS_URL`, `DATABASE_URL`, `NATS_URL`, `AMQP_URL`) or the local default. When nothing
//! answers there and the address is local, the service is started with the machine's own command;
//! if it still does not answer, the run fails with the command to start it by hand.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Service {
    name: &'static str,
    /// The workspace crates whose tests need it.
    needed_by: &'static [&'static str],
    url_var: &'static str,
    default_url: &'static str,
    default_port: u16,
    start: &'static str,
}

const SERVICES: &[Service] = &[
    Service {
        name: "Redis",
        needed_by: &[
            "crates/idem-store-redis",
            "crates/ratelimit-token-bucket",
            "crates/ratelimit-concurrent",
        ],
        url_var: "REDIS_URL",
        default_url: "redis://127.0.0.1:6379",
        default_port: 6379,
        start:
            "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no",
    },
    Service {
        name: "PostgreSQL",
        needed_by: &[
            "crates/idem-store-postgres",
            "crates/optimistic-lock",
            "crates/webhook-delivery",
            "crates/outbox",
        ],
        url_var: "DATABASE_URL",
        default_url: "postgres://postgres@127.0.0.1:5432/test",
        default_port: 5432,
        start: "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    },
    // The outbox's tests also start private nats-server processes: the package is installed
    // from apt when missing, even when NATS answers elsewhere.
    Service {
        name: "NATS (JetStream)",
        needed_by: &["crates/outbox"],
        url_var: "NATS_URL",
        default_url: "nats://127.0.0.1:4222",
        default_port: 4222,
        start: "mkdir -p /tmp/retry-safe-nats && setsid nats-server -a 127.0.0.1 -p 4222 -js \
                -sd /tmp/retry-safe-nats >/tmp/retry-safe-nats/log 2>&1 < /dev/null &",
    },
    Service {
        name: "RabbitMQ",
        needed_by: &["crates/outbox"],
        url_var: "AMQP_URL",
        default_url: "amqp://guest:guest@127.0.0.1:5672/%2f",
        default_port: 5672,
        start: "(command -v rabbitmq-server >/dev/null || apt-get install -y -q rabbitmq-server) \
                && rabbitmq-server -detached",
    },
];

/// Installs the system packages the tests run as processes of their own.
fn ensure_packages() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let present = |bin: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {bin} >/dev/null"))
            .status()
            .is_ok_and(|s| s.success())
    };
    if root.join("crates/outbox").exists() && !present("nats-server") {
        eprintln!("xtask: installing nats-server (apt)");
        let _ = Command::new("sh")
            .arg("-c")
            .arg("apt-get install -y -q nats-server || (apt-get update -q && apt-get install -y -q nats-server)")
            .status();
    }
}

/// Makes sure every service a workspace crate needs answers.
pub fn ensure_all() -> Result<(), String> {
    ensure_packages();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for s in SERVICES
        .iter()
        .filter(|s| s.needed_by.iter().any(|c| root.join(c).exists()))
    {
        ensure(s)?;
    }
    Ok(())
}

fn ensure(s: &Service) -> Result<(), String> {
    let url = std::env::var(s.url_var).unwrap_or_else(|_| s.default_url.to_owned());
    let (host, port) = host_port(&url, s.default_port)
        .ok_or_else(|| format!("{} is not a URL with a host: {url}", s.url_var))?;
    if answers(&host, port) {
        return Ok(());
    }
    let local = matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1");
    if local {
        eprintln!(
            "xtask: {} is not answering at {host}:{port}; starting it",
            s.name
        );
        let _ = Command::new("sh").arg("-c").arg(s.start).status();
        // RabbitMQ takes the longest to boot, up to half a minute.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if answers(&host, port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Err(format!(
        "{} is not reachable at {host}:{port} ({} = {url}). Start it with:\n    {}\n\
         or point {} at a running server.",
        s.name, s.url_var, s.start, s.url_var
    ))
}

fn answers(host: &str, port: u16) -> bool {
    let addrs: Vec<SocketAddr> = match (host, port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(_) => return false,
    };
    addrs
        .iter()
        .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok())
}

/// Host and port of `scheme://[user[:pass]@]host[:port][/…]`.
fn host_port(url: &str, default_port: u16) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']')?;
            (h, after.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn parses_service_urls() {
        assert_eq!(
            host_port("postgres://postgres@127.0.0.1:5432/test", 1),
            Some(("127.0.0.1".into(), 5432))
        );
        assert_eq!(
            host_port("redis://:secret@cache.internal/0", 6379),
            Some(("cache.internal".into(), 6379))
        );
        assert_eq!(
            host_port("redis://[::1]:7000", 1),
            Some(("::1".into(), 7000))
        );
        assert_eq!(
            host_port("amqp://guest:guest@127.0.0.1:5672/%2f", 1),
            Some(("127.0.0.1".into(), 5672))
        );
        assert_eq!(host_port("not a url", 1), None);
        assert_eq!(host_port("redis://:1", 1), None);
    }
}
