//! The client's IP address, for limits keyed by source: the peer address, or — only when the peer
use http::request::Parts;
use http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// How to find the peer address in a request's extensions.
pub type PeerFn = Arc<dyn Fn(&Parts) -> Option<IpAddr> + Send + Sync>;

/// Finds a request's client IP.
///
/// ```
/// use retry_safe_core::ClientIp;
/// use std::net::{IpAddr, SocketAddr};
///
/// let ips = ClientIp::new().trust("10.0.0.0/8".parse().unwrap());
/// let mut req = http::Request::get("/")
///     // The client claims to be 1.2.3.4; our load balancer (10.0.0.5) appended the real address.
///     .header("x-forwarded-for", "1.2.3.4, 198.51.100.7")
///     .body(())
///     .unwrap();
/// req.extensions_mut().insert(SocketAddr::from(([10, 0, 0, 5], 443)));
/// let (parts, ()) = req.into_parts();
/// assert_eq!(ips.of(&parts), Some("198.51.100.7".parse::<IpAddr>().unwrap()));
/// ```
///
/// The client's IP address, for limits keyed by source: the peer address, or — only when the peer
/// is a proxy you trust — the right-most untrusted address of `Forwarded` / `X-Forwarded-For`.
///
/// The left-most entries of those headers are whatever the client wrote; only entries appended by
/// your own proxies can be believed. So the list is read from the right: each trusted proxy's
/// entry is skipped, and the first address that is not a trusted proxy is the client. A request
/// that did not come through a trusted proxy is keyed by its peer address, whatever its headers
/// say.
#[derive(Clone)]
pub struct ClientIp {
    trusted: Vec<IpNet>,
    peer: PeerFn,
}

impl std::fmt::Debug for ClientIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIp")
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

impl Default for ClientIp {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientIp {
    /// No trusted proxy: the client is the peer. The peer is read from a
    /// [`SocketAddr`] request extension (hyper-util and axum's `ConnectInfo` users copy it there;
    /// see [`ClientIp::peer_from`] to read it elsewhere).
    pub fn new() -> Self {
        Self {
            trusted: Vec::new(),
            peer: Arc::new(|parts: &Parts| {
                parts.extensions.get::<SocketAddr>().map(SocketAddr::ip)
            }),
        }
    }

    /// Trusts the proxies in `net` (a load balancer's subnet): their forwarding entries are read.
    pub fn trust(mut self, net: IpNet) -> Self {
        self.trusted.push(net);
        self
    }

    /// Reads the peer address with `f` (e.g. from axum's `ConnectInfo<SocketAddr>`).
    pub fn peer_from(
        mut self,
        f: impl Fn(&Parts) -> Option<IpAddr> + Send + Sync + 'static,
    ) -> Self {
        self.peer = Arc::new(f);
        self
    }

    fn trusted(&self, ip: &IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(ip))
    }

    /// The client IP of a request: `None` when the peer address is unknown.
    pub fn of(&self, parts: &Parts) -> Option<IpAddr> {
        let peer = (self.peer)(parts)?;
        Some(self.resolve(peer, &parts.headers))
    }

    /// The client IP given the peer address and the headers.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusted(&peer) {
            return peer;
        }
        let hops = if headers.contains_key(http::header::FORWARDED) {
            forwarded_for(headers)
        } else {
            x_forwarded_for(headers)
        };
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            match hop {
                // An entry we cannot read (garbage, "unknown", an obfuscated name): nothing to
                // its left can be believed; the last trusted hop is the best we know.
                None => return client,
                Some(ip) if self.trusted(&ip) => client = ip,
                Some(ip) => return ip,
            }
        }
        client
    }
}

/// The `X-Forwarded-For` entries, left to right, over every field line.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| {
            v.to_str()
                .unwrap_or("\u{0}")
                .split(',')
                .map(|s| parse_node(s.trim()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The `for=` node of each `Forwarded` element (RFC 7239), left to right.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut out = Vec::new();
    for value in headers.get_all(http::header::FORWARDED) {
        let Ok(value) = value.to_str() else {
            out.push(None);
            continue;
        };
        for element in value.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
            });
            out.push(node.and_then(parse_node));
        }
    }
    out
}

/// An address from a node: `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = node.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    node.strip_prefix('[')
        .and_then(|rest| rest.split(']').next())
        .and_then(|ip| ip.parse().ok())
}
