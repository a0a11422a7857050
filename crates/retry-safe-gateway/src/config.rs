//! The config file: TOML, every key known (an unknown one is an error), every error located.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A config file that cannot be used: where (line and column, 1-based), which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {key}: {reason}", .file.as_deref().map_or("<config>".into(), |p| p.display().to_string()))]
#[non_exhaustive]
pub struct ConfigError {
    /// The file, when the config came from one.
    pub file: Option<PathBuf>,
    /// The line of the offending key or value (1-based; 0 when the file could not be read).
    pub line: usize,
    /// Its column (1-based).
    pub column: usize,
    /// The key's dotted path (`route[2].idempotency.retention`), or `""` for the whole file.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn at(
        src: &str,
        span: Option<std::ops::Range<usize>>,
        key: &str,
        reason: impl fmt::Display,
    ) -> Self {
        let (line, column) = span.map_or((1, 1), |s| line_col(src, s.start));
        Self {
            file: None,
            line,
            column,
            key: key.to_owned(),
            reason: reason.to_string(),
        }
    }

    /// A file that cannot be used at all (unreadable, not PEM…): no line to point at.
    pub(crate) fn of_file(file: &Path, reason: impl fmt::Display) -> Self {
        Self {
            file: Some(file.to_owned()),
            line: 0,
            column: 0,
            key: String::new(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_owned());
        self
    }
}

/// The 1-based line and column of byte `offset` in `src`.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A trusted proxy: a CIDR network, or one address.
pub(crate) fn parse_net(text: &str) -> Option<retry_safe_core::IpNet> {
    text.parse().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(retry_safe_core::IpNet::from)
    })
}

/// A duration written as `250ms`, `10s`, `5m`, `24h` (humantime's syntax).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration ({e}); write e.g. `250ms`, `10s`, `24h`"
            ))
        })
    }
}

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// `[[listener]]`: where clients connect (at least one).
    #[serde(rename = "listener", default)]
    pub listeners: Vec<Listener>,
    /// `[admin]`: `/metrics`, `/healthz`, `/readyz` on their own address.
    pub admin: Option<Admin>,
    /// `[limits]`: what every request is held to before it reaches a route.
    #[serde(default)]
    pub limits: RequestLimits,
    /// `[store]`: where idempotency records (and shared limits) live.
    #[serde(default)]
    pub store: StoreConfig,
    /// `[shedding]`: the priority load shedder in front of every route.
    #[serde(default)]
    pub shedding: Shedding,
    /// `[upstreams.NAME]`: the servers routes send to.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Spanned<Upstream>>,
    /// `[plans.NAME]`: usage plans that API keys name.
    #[serde(default)]
    pub plans: BTreeMap<String, Plan>,
    /// `[api_keys]`: the keys file and the header keys come in.
    pub api_keys: Option<ApiKeys>,
    /// `[[route]]`: method and path pattern to an upstream, with its policies; the first match wins.
    #[serde(rename = "route", default)]
    pub routes: Vec<Spanned<Route>>,
}

/// `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Listener {
    /// `address = "127.0.0.1:8080"`.
    pub address: Spanned<String>,
    /// `tls = { cert = "cert.pem", key = "key.pem" }`: terminate TLS here (reloaded on SIGHUP).
    pub tls: Option<Tls>,
}

/// A listener's certificate chain and key, PEM files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Tls {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Admin {
    /// `address = "127.0.0.1:9090"`.
    pub address: Spanned<String>,
}

/// `[limits]`: how much of a request the gateway reads, and how fast it must come.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct RequestLimits {
    /// The largest request head (request line and headers), bytes. Default 16 KiB.
    pub max_header_bytes: usize,
    /// How long a client may take to send its head. Default `10s`.
    pub header_timeout: Dur,
    /// The largest request body, bytes; larger ones get 413. Default 1 MiB.
    pub max_body_bytes: usize,
    /// How long a whole request body may take. Default `30s`.
    pub body_timeout: Dur,
    /// The slowest body accepted, bytes per second after `min_body_rate_grace`. Default 1024.
    pub min_body_rate: u32,
    /// How long a body may arrive below `min_body_rate` at its start. Default `2s`.
    pub min_body_rate_grace: Dur,
    /// How long SIGTERM waits for requests in flight. Default `30s`.
    pub drain_timeout: Dur,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` entries are believed (CIDR). Default none.
    pub trust_proxies: Vec<String>,
    /// One JSON line per request on stdout. Default true.
    pub access_log: bool,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            header_timeout: Dur(Duration::from_secs(10)),
            max_body_bytes: 1024 * 1024,
            body_timeout: Dur(Duration::from_secs(30)),
            min_body_rate: 1024,
            min_body_rate_grace: Dur(Duration::from_secs(2)),
            drain_timeout: Dur(Duration::from_secs(30)),
            trust_proxies: Vec::new(),
            access_log: true,
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct StoreConfig {
    /// `memory` (default), `redis`, `redis-cluster` or `postgres`.
    pub kind: StoreKind,
    /// The server's URL (`redis` / `postgres`); `$NAME` reads it from the environment.
    pub url: Option<String>,
    /// The cluster's nodes (`redis-cluster`).
    pub urls: Vec<String>,
    /// The prefix of every key (Redis). Default `gw`.
    pub prefix: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Memory,
            url: None,
            urls: Vec::new(),
            prefix: "gw".to_owned(),
        }
    }
}

/// Where state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum StoreKind {
    /// In this process (the default): nothing shared with other gateways.
    Memory,
    /// One Redis server.
    Redis,
    /// A Redis Cluster.
    RedisCluster,
    /// PostgreSQL (idempotency records; limits stay in memory).
    Postgres,
}

/// `[shedding]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Shedding {
    /// Requests in flight through the gateway before the lower classes are shed. Default 1024.
    pub capacity: u32,
    /// Requests in flight through every gateway sharing the `[store]`'s Redis, with the same
    /// reserve for the higher classes (leases on Redis). Default: no fleet-wide count.
    pub fleet_capacity: Option<u32>,
}

impl Default for Shedding {
    fn default() -> Self {
        Self {
            capacity: 1024,
            fleet_capacity: None,
        }
    }
}

/// `[upstreams.NAME]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Upstream {
    /// `address = "127.0.0.1:8000"` (host:port, plain HTTP/1.1).
    pub address: Spanned<String>,
    /// How long connecting may take. Default `1s`.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// How long the upstream may take to answer (its head). Default `30s`.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Dur,
    /// Idle keep-alive connections kept. Default 64.
    #[serde(default = "default_pool")]
    pub pool_max_idle: usize,
    /// How long an idle connection is kept. Default `90s`.
    #[serde(default = "default_pool_idle")]
    pub pool_idle_timeout: Dur,
}

fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_request_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_pool() -> usize {
    64
}
fn default_pool_idle() -> Dur {
    Dur(Duration::from_secs(90))
}

/// `[plans.NAME]`: what a principal with this plan may do.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Plan {
    /// Requests per `period`.
    pub rate: u64,
    /// The rate's period. Default `1s`.
    #[serde(default = "one_second")]
    pub period: Dur,
    /// The burst allowed above the rate. Default: `rate`.
    pub burst: Option<u64>,
    /// Requests in flight at once. Default: unlimited.
    pub concurrency: Option<u32>,
    /// Requests per day. Default: unlimited.
    pub daily_quota: Option<u64>,
}

fn one_second() -> Dur {
    Dur(Duration::from_secs(1))
}

/// `[api_keys]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ApiKeys {
    /// The keys file: `[[key]] sha256 = "…", principal = "…", plan = "…"`.
    pub file: PathBuf,
    /// The header a key comes in: `authorization` (as `Bearer <key>`, the default) or another
    /// header holding the bare key (`x-api-key`).
    #[serde(default = "default_key_header")]
    pub header: String,
}

fn default_key_header() -> String {
    "authorization".to_owned()
}

/// `[[route]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Route {
    /// A path pattern: `/orders`, `/orders/{id}`, `/static/{*rest}`.
    pub path: Spanned<String>,
    /// The methods it serves. Default: all.
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    /// The upstream's name.
    pub upstream: Spanned<String>,
    /// The load-shedding class: `critical`, `write`, `read` or `test`. Default: by method.
    pub class: Option<ClassName>,
    /// Requires an API key from `[api_keys]` (401 without a known one). Default false.
    #[serde(default)]
    pub auth: bool,
    /// `[route.idempotency]`.
    pub idempotency: Option<Idempotency>,
    /// `[[route.rate_limit]]`: every one must admit the request.
    #[serde(default)]
    pub rate_limit: Vec<Spanned<RateLimit>>,
    /// `[route.concurrency]`.
    pub concurrency: Option<Spanned<Concurrency>>,
    /// `[route.webhook]`: verify inbound webhooks' signatures.
    pub webhook: Option<Spanned<Webhook>>,
    /// `[route.retry]`: retry the upstream's safe failures.
    pub retry: Option<Retry>,
}

/// A load-shedding class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ClassName {
    /// Shed last; the fleet's reserve is kept for it.
    Critical,
    /// Writes.
    Write,
    /// Reads.
    Read,
    /// Test traffic, shed first.
    Test,
}

/// `[route.idempotency]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Idempotency {
    /// Requests without `Idempotency-Key` get 400. Default false.
    #[serde(default)]
    pub required: bool,
    /// Whose keys are these: `principal` (the API key's, the default), `client_ip`, `global`,
    /// or `header:NAME`.
    #[serde(default = "principal")]
    pub scope: KeyBy,
    /// How long a completed answer is replayed. Default `24h`.
    #[serde(default = "day")]
    pub retention: Dur,
    /// How long one attempt holds its key. Default `30s`.
    #[serde(default = "thirty_seconds")]
    pub lease: Dur,
    /// A duplicate in flight waits this long for the first answer (else 409 at once).
    pub wait_for_result: Option<Dur>,
    /// The largest response stored for replay; larger ones pass through unstored. Default 1 MiB.
    #[serde(default = "mebibyte")]
    pub max_response_bytes: usize,
}

fn principal() -> KeyBy {
    KeyBy::Principal
}
fn day() -> Dur {
    Dur(Duration::from_secs(24 * 3600))
}
fn thirty_seconds() -> Dur {
    Dur(Duration::from_secs(30))
}
fn mebibyte() -> usize {
    1024 * 1024
}

/// `[[route.rate_limit]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RateLimit {
    /// Whose budget: `client_ip` (default), `principal`, `global`, `header:NAME`.
    #[serde(default = "client_ip")]
    pub key: KeyBy,
    /// Requests per `period`.
    pub rate: u64,
    /// Default `1s`.
    #[serde(default = "one_second")]
    pub period: Dur,
    /// Default: `rate`.
    pub burst: Option<u64>,
    /// Counted on the `[store]`'s Redis, for every gateway sharing it. Default false.
    #[serde(default)]
    pub shared: bool,
}

fn client_ip() -> KeyBy {
    KeyBy::ClientIp
}

/// `[route.concurrency]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Concurrency {
    /// Whose cap: `client_ip` (default), `principal`, `global`, `header:NAME`.
    #[serde(default = "client_ip")]
    pub key: KeyBy,
    /// Requests in flight at once.
    pub max: u32,
    /// Counted on the `[store]`'s Redis, for every gateway sharing it. Default false.
    #[serde(default)]
    pub shared: bool,
}

/// What a limit or an idempotency scope is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyBy {
    /// The client's address (through trusted proxies).
    ClientIp,
    /// The API key's principal (`anonymous` without one).
    Principal,
    /// One budget for everyone.
    Global,
    /// A request header's value (requests without it are not limited).
    Header(http::HeaderName),
}

impl<'de> Deserialize<'de> for KeyBy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "client_ip" => Ok(Self::ClientIp),
            "principal" => Ok(Self::Principal),
            "global" => Ok(Self::Global),
            other => match other.strip_prefix("header:") {
                Some(name) => http::HeaderName::try_from(name)
                    .map(Self::Header)
                    .map_err(|_| {
                        serde::de::Error::custom(format!("`{name}` is not a header name"))
                    }),
                None => Err(serde::de::Error::custom(format!(
                    "`{other}`: expected `client_ip`, `principal`, `global` or `header:NAME`"
                ))),
            },
        }
    }
}

/// `[route.webhook]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Webhook {
    /// `standard-webhooks`, `stripe` or `github`.
    pub scheme: WebhookScheme,
    /// The environment variable holding the secret.
    pub secret_env: Option<String>,
    /// The file holding the secret.
    pub secret_file: Option<PathBuf>,
}

/// A webhook signature scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum WebhookScheme {
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    StandardWebhooks,
    /// Stripe (`Stripe-Signature`).
    Stripe,
    /// GitHub (`X-Hub-Signature-256`).
    Github,
}

/// `[route.retry]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Retry {
    /// Attempts in all, the first included. Default 3.
    #[serde(default = "three")]
    pub attempts: u32,
    /// Retries allowed per request sent, over 10 s (the retry budget). Default 0.2.
    #[serde(default = "fifth")]
    pub budget_ratio: f64,
    /// Retries allowed per second whatever the ratio. Default 10.
    #[serde(default = "ten")]
    pub budget_min_per_sec: u32,
}

fn three() -> u32 {
    3
}
fn fifth() -> f64 {
    0.2
}
fn ten() -> u32 {
    10
}

impl Config {
    /// Parses and checks `src` (the text of a config file).
    pub fn parse(src: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(src)
            .map_err(|e| ConfigError::at(src, e.span(), "", e.message()))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            // `Spanned` values add a segment of their own to the path; the user wrote none.
            let key = e
                .path()
                .to_string()
                .replace("$__serde_spanned_private_value.", "");
            let key = if key == "." { String::new() } else { key };
            ConfigError::at(src, e.inner().span(), &key, e.inner().message())
        })?;
        config.check(src)?;
        Ok(config)
    }

    /// Reads, parses and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let src = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::of_file(path, format_args!("cannot read the file: {e}")))?;
        Self::parse(&src).map_err(|e| e.in_file(path))
    }

    /// The checks serde cannot make: names that must exist, addresses, patterns, quotas.
    fn check(&self, src: &str) -> Result<(), ConfigError> {
        let err = |span: std::ops::Range<usize>, key: String, reason: String| {
            Err(ConfigError::at(src, Some(span), &key, reason))
        };
        if self.listeners.is_empty() {
            return Err(ConfigError::at(
                src,
                None,
                "listener",
                "at least one [[listener]] is needed",
            ));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if l.address.get_ref().parse::<SocketAddr>().is_err() {
                return err(
                    l.address.span(),
                    format!("listener[{i}].address"),
                    format!("`{}` is not an IP address and port", l.address.get_ref()),
                );
            }
        }
        if let Some(admin) = &self.admin {
            if admin.address.get_ref().parse::<SocketAddr>().is_err() {
                return err(
                    admin.address.span(),
                    "admin.address".into(),
                    format!(
                        "`{}` is not an IP address and port",
                        admin.address.get_ref()
                    ),
                );
            }
        }
        self.check_limits(src)?;
        for (name, up) in &self.upstreams {
            if crate::proxy::authority(up.get_ref().address.get_ref()).is_none() {
                let a = &up.get_ref().address;
                return err(
                    a.span(),
                    format!("upstreams.{name}.address"),
                    format!("`{}` is not host:port", a.get_ref()),
                );
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            self.check_route(src, i, route.get_ref())?;
        }
        crate::routes::Table::build(&self.routes)
            .map(drop)
            .map_err(|(i, reason)| {
                ConfigError::at(
                    src,
                    Some(self.routes[i].get_ref().path.span()),
                    &format!("route[{i}].path"),
                    reason,
                )
            })
    }

    fn check_limits(&self, src: &str) -> Result<(), ConfigError> {
        for net in &self.limits.trust_proxies {
            if parse_net(net).is_none() {
                return Err(ConfigError::at(
                    src,
                    None,
                    "limits.trust_proxies",
                    format!("`{net}` is not an address or CIDR network"),
                ));
            }
        }
        if self.shedding.capacity == 0 || self.shedding.fleet_capacity == Some(0) {
            return Err(ConfigError::at(
                src,
                None,
                "shedding",
                "capacities must be at least 1",
            ));
        }
        let redis = matches!(self.store.kind, StoreKind::Redis | StoreKind::RedisCluster);
        if self.shedding.fleet_capacity.is_some() && !redis {
            return Err(ConfigError::at(
                src,
                None,
                "shedding.fleet_capacity",
                "a fleet-wide count needs a redis or redis-cluster [store]",
            ));
        }
        let store = &self.store;
        match store.kind {
            StoreKind::Redis | StoreKind::Postgres if store.url.is_none() => {
                return Err(ConfigError::at(
                    src,
                    None,
                    "store.url",
                    "a redis or postgres store needs `url`",
                ));
            }
            StoreKind::RedisCluster if store.urls.is_empty() => {
                return Err(ConfigError::at(
                    src,
                    None,
                    "store.urls",
                    "a redis-cluster store needs `urls`",
                ));
            }
            _ => {}
        }
        for (name, plan) in &self.plans {
            if plan.rate == 0 || plan.concurrency == Some(0) || plan.daily_quota == Some(0) {
                return Err(ConfigError::at(
                    src,
                    None,
                    &format!("plans.{name}"),
                    "rate, concurrency and daily_quota must be at least 1",
                ));
            }
        }
        Ok(())
    }

    fn check_route(&self, src: &str, i: usize, route: &Route) -> Result<(), ConfigError> {
        let at = |span: std::ops::Range<usize>, key: &str, reason: String| {
            ConfigError::at(src, Some(span), &format!("route[{i}].{key}"), reason)
        };
        if !self.upstreams.contains_key(route.upstream.get_ref()) {
            return Err(at(
                route.upstream.span(),
                "upstream",
                format!("no [upstreams.{}] is defined", route.upstream.get_ref()),
            ));
        }
        if !route.path.get_ref().starts_with('/') {
            return Err(at(
                route.path.span(),
                "path",
                "a path pattern starts with `/`".into(),
            ));
        }
        for m in &route.methods {
            if http::Method::from_bytes(m.get_ref().as_bytes()).is_err() {
                return Err(at(
                    m.span(),
                    "methods",
                    format!("`{}` is not a method", m.get_ref()),
                ));
            }
        }
        if route.auth && self.api_keys.is_none() {
            return Err(at(
                route.path.span(),
                "auth",
                "needs an [api_keys] section".into(),
            ));
        }
        let redis = matches!(self.store.kind, StoreKind::Redis | StoreKind::RedisCluster);
        for (j, rl) in route.rate_limit.iter().enumerate() {
            let r = rl.get_ref();
            if r.rate == 0 || r.burst == Some(0) {
                return Err(at(
                    rl.span(),
                    &format!("rate_limit[{j}]"),
                    "rate and burst must be at least 1".into(),
                ));
            }
            if r.shared && !redis {
                return Err(at(
                    rl.span(),
                    &format!("rate_limit[{j}].shared"),
                    "a shared limit needs a redis or redis-cluster [store]".into(),
                ));
            }
        }
        if let Some(c) = &route.concurrency {
            if c.get_ref().max == 0 {
                return Err(at(c.span(), "concurrency.max", "must be at least 1".into()));
            }
            if c.get_ref().shared && !redis {
                return Err(at(
                    c.span(),
                    "concurrency.shared",
                    "a shared cap needs a redis or redis-cluster [store]".into(),
                ));
            }
        }
        if let Some(w) = &route.webhook {
            let hook = w.get_ref();
            if hook.secret_env.is_some() == hook.secret_file.is_some() {
                return Err(at(
                    w.span(),
                    "webhook",
                    "set exactly one of `secret_env` and `secret_file`".into(),
                ));
            }
        }
        if let Some(r) = &route.retry {
            if r.attempts == 0 || !(0.0..=10.0).contains(&r.budget_ratio) {
                return Err(at(
                    route.path.span(),
                    "retry",
                    "attempts must be at least 1 and budget_ratio within 0..=10".into(),
                ));
            }
        }
        Ok(())
    }
}
