//! The real services that store tests talk to: found, started, or reported.
//!
//! A service is needed when a crate that tests against it is part of the workspace. Its address
//! comes from the usual variable (`REDIS_URL`, `DATABASE_URL`) or the local default. When nothing
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
        ],
        url_var: "DATABASE_URL",
        default_url: "postgres://postgres@127.0.0.1:5432/test",
        default_port: 5432,
        start: "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    },
];

/// Makes sure every service a workspace crate needs answers.
pub fn ensure_all() -> Result<(), String> {
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
        let deadline = Instant::now() + Duration::from_secs(20);
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
        assert_eq!(host_port("not a url", 1), None);
        assert_eq!(host_port("redis://:1", 1), None);
    }
}
