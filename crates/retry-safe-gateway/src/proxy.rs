//! The proxy core: a pooled HTTP/1.1 client per upstream, the forwarding headers of RFC 9110
//! §7.6 and RFC 7239, hop-by-hop headers removed, upgrades (WebSocket) passed through.

use crate::Body;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use retry_safe_core::Problem;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

/// Who sent a request, as the listener saw it: put into the request's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    /// The TCP peer.
    pub(crate) addr: SocketAddr,
    /// Whether the connection was TLS.
    pub(crate) tls: bool,
}

/// `host:port` as an authority, when it is one (with a port).
pub(crate) fn authority(address: &str) -> Option<Authority> {
    let a: Authority = address.parse().ok()?;
    a.port_u16().is_some().then_some(a)
}

/// Why the upstream gave no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// Connecting failed, or the connection broke before the answer's head.
    #[error("the upstream could not be reached")]
    Transport(#[source] hyper_util::client::legacy::Error),
    /// No answer's head within the request timeout.
    #[error("the upstream did not answer within {0:?}")]
    Timeout(Duration),
}

impl UpstreamError {
    /// The gateway's answer: 502 `upstream_unavailable` or 504 `upstream_timeout`.
    pub(crate) fn problem(&self, upstream: &str) -> Problem {
        match self {
            Self::Transport(e) if e.is_connect() => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "Upstream unavailable",
            )
            .with_detail(format!(
                "the upstream `{upstream}` refused or did not accept the connection"
            )),
            Self::Transport(_) => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "Upstream unavailable",
            )
            .with_detail(format!(
                "the connection to the upstream `{upstream}` broke before its answer"
            )),
            Self::Timeout(after) => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "Upstream timeout",
            )
            .with_detail(format!(
                "the upstream `{upstream}` did not answer within {after:?}"
            )),
        }
    }
}

/// One upstream: its pooled client, its address and its timeout.
#[derive(Clone)]
pub(crate) struct Upstream {
    client: Arc<Client<HttpConnector, Body>>,
    authority: Authority,
    pub(crate) name: Arc<str>,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// The upstream `name` of `config` (whose address the config check accepted).
    pub(crate) fn new(name: &str, config: &crate::config::Upstream) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout.0));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.pool_max_idle)
            .pool_idle_timeout(config.pool_idle_timeout.0)
            .build(connector);
        Self {
            client: Arc::new(client),
            authority: authority(config.address.get_ref()).expect("checked by Config::check"),
            name: name.into(),
            timeout: Some(config.request_timeout.0),
        }
    }

    /// The same upstream without its own timeout (the retry layer times each attempt instead).
    pub(crate) fn untimed(mut self) -> Self {
        self.timeout = None;
        self
    }

    fn target(&self, uri: &Uri) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = uri
            .path_and_query()
            .cloned()
            .or_else(|| Some("/".parse().expect("a path")));
        Uri::from_parts(parts).expect("scheme, authority and path make a URI")
    }
}

impl Service<Request<Body>> for Upstream {
    type Response = Response<Body>;
    type Error = UpstreamError;
    type Future = BoxFuture<'static, Result<Response<Body>, UpstreamError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .filter(|_| wants_upgrade(&parts.headers));
        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let peer = parts.extensions.get::<Peer>().copied();
        prepare_request(
            &mut parts.headers,
            parts.version,
            peer,
            host,
            upgrade.is_some(),
        );
        parts.uri = self.target(&parts.uri);
        parts.version = http::Version::HTTP_11;
        let sent = self.client.request(Request::from_parts(parts, body));
        let timeout = self.timeout;
        Box::pin(async move {
            let answer = match timeout {
                Some(t) => tokio::time::timeout(t, sent)
                    .await
                    .map_err(|_| UpstreamError::Timeout(t))?,
                None => sent.await,
            };
            let mut res = answer.map_err(UpstreamError::Transport)?;
            let switching = res.status() == StatusCode::SWITCHING_PROTOCOLS;
            if let (true, Some(client)) = (switching, upgrade) {
                tunnel(client, hyper::upgrade::on(&mut res));
            }
            let (mut parts, body) = res.into_parts();
            prepare_response(&mut parts.headers, switching);
            Ok(Response::from_parts(parts, Body::new(body)))
        })
    }
}

/// Whether a request asks to switch protocols (`Connection: upgrade` with an `Upgrade`).
pub(crate) fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Joins the client's and the upstream's upgraded connections, copying both ways until either ends.
fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (Ok(client), Ok(upstream)) = (client.await, upstream.await) else {
            return;
        };
        let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(upstream));
        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
    });
}

/// The headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes the hop-by-hop headers and those `Connection` names; keeps `Connection: upgrade` and
/// `Upgrade` when the message switches protocols.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrading: bool) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::try_from(t).ok())
        .collect();
    let upgrade = headers.remove(header::UPGRADE);
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if let (true, Some(protocols)) = (upgrading, upgrade) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocols);
    }
}

/// `Via`'s entry for this gateway, by the protocol version the message came in.
fn via(version: http::Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        http::Version::HTTP_2 => "2 retry-safe-gateway",
        http::Version::HTTP_10 => "1.0 retry-safe-gateway",
        _ => "1.1 retry-safe-gateway",
    })
}

/// The request as the upstream gets it: hop-by-hop headers gone, `Host` kept, and the client
/// recorded in `Forwarded`, `X-Forwarded-For` / `-Proto` / `-Host` and `Via` (appended to any
/// entries earlier proxies made).
fn prepare_request(
    headers: &mut HeaderMap,
    version: http::Version,
    peer: Option<Peer>,
    host: Option<HeaderValue>,
    upgrading: bool,
) {
    use std::fmt::Write;
    strip_hop_by_hop(headers, upgrading);
    headers.append(header::VIA, via(version));
    let Some(peer) = peer else { return };
    let proto = if peer.tls { "https" } else { "http" };
    let ip = peer.addr.ip();
    // One buffer for the address and the `Forwarded` element (RFC 7239 §4: an IPv6 node is
    // quoted and bracketed; the host is a quoted-string).
    let mut forwarded = String::with_capacity(96);
    let _ = write!(forwarded, "{ip}");
    let ip_len = forwarded.len();
    forwarded.insert_str(0, "for=");
    if ip.is_ipv6() {
        forwarded.insert_str(4, "\"[");
        forwarded.push_str("]\"");
    }
    let _ = write!(forwarded, ";proto={proto}");
    if let Some(h) = host.as_ref().and_then(|h| h.to_str().ok()) {
        forwarded.push_str(";host=\"");
        forwarded.extend(h.chars().filter(|c| !matches!(c, '"' | '\\')));
        forwarded.push('"');
    }
    let ip_at = if ip.is_ipv6() { 6 } else { 4 };
    append_csv(
        headers,
        HeaderName::from_static("x-forwarded-for"),
        &forwarded[ip_at..ip_at + ip_len],
    );
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.append(header::FORWARDED, v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(proto),
    );
    if let Some(h) = host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), h.clone());
        headers.insert(header::HOST, h);
    }
}

/// Appends `value` to the comma-separated list in header `name` (one field line).
fn append_csv(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    let joined = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.is_empty() => HeaderValue::from_str(&format!("{prior}, {value}")),
        _ => HeaderValue::from_str(value),
    };
    if let Ok(v) = joined {
        headers.insert(name, v);
    }
}

/// The response as the client gets it: hop-by-hop headers gone, this gateway in `Via`.
fn prepare_response(headers: &mut HeaderMap, upgrading: bool) {
    strip_hop_by_hop(headers, upgrading);
    headers.append(header::VIA, via(http::Version::HTTP_11));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(peer: &str, prior_xff: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(v) = prior_xff {
            headers.insert("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers.insert(header::CONNECTION, HeaderValue::from_static("close, x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        let peer = Peer {
            addr: peer.parse().unwrap(),
            tls: true,
        };
        prepare_request(
            &mut headers,
            http::Version::HTTP_2,
            Some(peer),
            Some(HeaderValue::from_static("shop.example")),
            false,
        );
        headers
    }

    #[test]
    fn an_ipv6_client_is_quoted_and_bracketed_in_forwarded_and_bare_in_x_forwarded_for() {
        let h = prepared("[2001:db8::7]:443", Some("203.0.113.1"));
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::7]\";proto=https;host=\"shop.example\""
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.1, 2001:db8::7");
        assert_eq!(
            (&h["x-forwarded-proto"], &h["via"]),
            (
                &HeaderValue::from_static("https"),
                &HeaderValue::from_static("2 retry-safe-gateway")
            )
        );
        assert!(h.get("x-hop").is_none() && h.get(header::CONNECTION).is_none());
    }

    #[test]
    fn an_ipv4_client_is_bare_in_both() {
        let h = prepared("198.51.100.4:5000", None);
        assert_eq!(
            h["forwarded"],
            "for=198.51.100.4;proto=https;host=\"shop.example\""
        );
        assert_eq!(h["x-forwarded-for"], "198.51.100.4");
        assert_eq!(h["x-forwarded-host"], "shop.example");
    }
}
