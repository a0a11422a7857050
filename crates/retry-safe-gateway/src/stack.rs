//! A config made into services: each route's layers around its upstream, built from the
//! workspace's layers; state (stores, limiters, caps, pools) carried over from the previous
//! config wherever its part of the config did not change.

use crate::config::{self, ClassName, Config, KeyBy, StoreKind};
use crate::keys::{KeyRing, Principal};
use crate::proxy::Upstream;
use crate::{Body, BoxError};
use http::request::Parts;
use http::{Request, Response};
use idem_core::{IdempotencyLayer, IdempotencyPolicy, IdempotencyStore, MemoryStore};
use loadshed_fleet::{Class, FleetShedder, PriorityShedLayer, Shares, Shedder};
use ratelimit_concurrent::{
    Caps, ConcurrencyLimiter, KeyedConcurrencyLimitLayer, RedisConcurrencyLimiter,
};
use ratelimit_token_bucket::{
    KeyedLimiter, KeyedRateLimitLayer, Limiter, Quota, Quotas, RedisLimiter,
};
use retry_safe_core::redis::{RedisRunner, RedisSettings};
use retry_safe_core::stable_hash;
use std::any::Any;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use tower::{Layer, ServiceExt};
use webhook_sig::{ReplayGuard, Scheme, Secret, Verifier, WebhookLayer};

/// A route's whole stack, boxed: every rejection is already a response.
///
/// Shared behind an `Arc`: every layer clones its inner service once per request, and a clone here
/// is one reference count, where a `BoxCloneSyncService` would allocate a copy of the whole chain.
#[derive(Clone)]
pub(crate) struct RouteService(Arc<dyn Fn(Request<Body>) -> RouteFuture + Send + Sync>);

/// A route's answer.
pub(crate) type RouteFuture =
    futures_util::future::BoxFuture<'static, Result<Response<Body>, Infallible>>;

impl RouteService {
    /// The service that answers with `f`'s future.
    pub(crate) fn new(f: impl Fn(Request<Body>) -> RouteFuture + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl tower_service::Service<Request<Body>> for RouteService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = RouteFuture;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> RouteFuture {
        (self.0)(req)
    }
}

/// The idempotency store chosen by `[store]`.
pub(crate) type Store = Arc<dyn IdempotencyStore>;

/// Parts built for one config, by what they were built from, so the next config can take the ones
/// whose description it shares.
#[derive(Default)]
pub(crate) struct Registry {
    parts: HashMap<String, Arc<dyn Any + Send + Sync>>,
}

impl Registry {
    /// The part described by `key`: the previous config's when it had one, else `make`'s.
    async fn reuse<T, F>(
        &mut self,
        old: &Registry,
        key: String,
        make: F,
    ) -> Result<T, crate::BuildError>
    where
        T: Clone + Send + Sync + 'static,
        F: std::future::Future<Output = Result<T, crate::BuildError>>,
    {
        if let Some(part) = self
            .parts
            .get(&key)
            .or_else(|| old.parts.get(&key))
            .and_then(|p| p.downcast_ref::<T>())
        {
            let part = part.clone();
            self.parts.insert(key, Arc::new(part.clone()));
            return Ok(part);
        }
        let part = make.await?;
        self.parts.insert(key, Arc::new(part.clone()));
        Ok(part)
    }
}

/// The backends of `[store]`, for the routes and for `/readyz`.
#[derive(Clone)]
pub(crate) struct Backends {
    pub(crate) store: Store,
    pub(crate) redis: Option<RedisRunner>,
    pub(crate) postgres: Option<sqlx::PgPool>,
}

/// One route as the dispatcher runs it.
pub(crate) struct RouteRuntime {
    /// `METHODS /path`, the route's name in logs and metrics.
    pub(crate) name: Arc<str>,
    /// Requires an API key.
    pub(crate) auth: bool,
    /// The stack for principals without a plan.
    pub(crate) base: RouteService,
    /// The stack for each plan (the plan's limits, then `base`), by plan index.
    pub(crate) plans: Vec<RouteService>,
    /// `gateway_requests_total` of this route.
    pub(crate) counters: crate::metrics::StatusCounters,
}

/// Everything one config makes.
pub(crate) struct Runtime {
    pub(crate) config: Config,
    pub(crate) table: crate::routes::Table,
    pub(crate) routes: Vec<RouteRuntime>,
    /// `gateway_requests_total` of the requests no route took (404, 405, refused framing).
    pub(crate) unrouted: crate::metrics::StatusCounters,
    pub(crate) keys: Option<(Arc<KeyRing>, http::HeaderName)>,
    pub(crate) body: retry_safe_core::body::BodyLimits,
    pub(crate) backends: Backends,
    pub(crate) client_ip: retry_safe_core::ClientIp,
    pub(crate) registry: Registry,
}

/// The principal a request carries (set by the dispatcher), or `anonymous`.
pub(crate) fn principal_of(parts: &Parts) -> Arc<str> {
    parts
        .extensions
        .get::<Principal>()
        .map_or_else(|| "anonymous".into(), |p| p.name.clone())
}

/// The key function of `by`: a limit's key of a request, `None` when it is not limited.
fn key_fn(
    by: &KeyBy,
    ips: &retry_safe_core::ClientIp,
) -> impl Fn(&Parts) -> Option<u64> + Send + Sync + Clone + 'static {
    let (by, ips) = (by.clone(), ips.clone());
    move |parts: &Parts| match &by {
        KeyBy::ClientIp => ips.of(parts).map(|ip| match ip {
            // The address's octets, not its text: no allocation per request.
            std::net::IpAddr::V4(v4) => stable_hash(&[b"ip4:", &v4.octets()]),
            std::net::IpAddr::V6(v6) => stable_hash(&[b"ip6:", &v6.octets()]),
        }),
        KeyBy::Principal => Some(stable_hash(&[
            b"principal:",
            principal_of(parts).as_bytes(),
        ])),
        KeyBy::Global => Some(0),
        KeyBy::Header(name) => parts
            .headers
            .get(name)
            .map(|v| stable_hash(&[b"header:", name.as_str().as_bytes(), b":", v.as_bytes()])),
    }
}

/// Interned quota names: `Quota::named` takes a `&'static str`, and reloads must not leak one
/// per reload.
fn intern(name: &str) -> &'static str {
    static NAMES: parking_lot::Mutex<Vec<&'static str>> = parking_lot::Mutex::new(Vec::new());
    let mut names = NAMES.lock();
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.push(leaked);
    leaked
}

fn quota(rate: u64, period: std::time::Duration, burst: Option<u64>, name: &str) -> Quota {
    Quota::new(rate, period)
        .burst(burst.unwrap_or(rate))
        .named(intern(name))
}

fn boxed<S, B>(svc: S) -> RouteService
where
    S: tower_service::Service<Request<Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    RouteService::new(move |req| {
        let answer = svc.clone().oneshot(req);
        Box::pin(async move { answer.await.map(|res| res.map(Body::new)) })
    })
}

/// Builds what `config` describes, taking unchanged parts from `old`.
pub(crate) async fn build(config: Config, old: &Registry) -> Result<Runtime, crate::BuildError> {
    let mut reg = Registry::default();
    let backends = backends(&config, old, &mut reg).await?;
    let mut client_ip = retry_safe_core::ClientIp::new().peer_from(|parts| {
        parts
            .extensions
            .get::<crate::proxy::Peer>()
            .map(|p| p.addr.ip())
    });
    for net in &config.limits.trust_proxies {
        let net = crate::config::parse_net(net)
            .ok_or_else(|| crate::BuildError::Config(format!("trust_proxies: `{net}`")))?;
        client_ip = client_ip.trust(net);
    }
    let shedder: Arc<Shedder> = reg
        .reuse(
            old,
            format!("shedder|{}", config.shedding.capacity),
            async {
                Shedder::new(config.shedding.capacity)
                    .map(Arc::new)
                    .map_err(|e| crate::BuildError::Config(e.to_string()))
            },
        )
        .await?;
    let fleet = fleet_shedder(&config, &backends, old, &mut reg).await?;
    let plan_names: Vec<&str> = config.plans.keys().map(String::as_str).collect();
    let keys = match &config.api_keys {
        Some(k) => {
            let ring = KeyRing::load(&k.file, &plan_names).map_err(crate::BuildError::File)?;
            let header = http::HeaderName::try_from(k.header.as_str()).map_err(|_| {
                crate::BuildError::Config(format!("api_keys.header: `{}`", k.header))
            })?;
            Some((Arc::new(ring), header))
        }
        None => None,
    };
    let mut routes = Vec::with_capacity(config.routes.len());
    let ctx = Ctx {
        config: &config,
        backends: &backends,
        client_ip: &client_ip,
        shedder: &shedder,
        fleet: fleet.as_ref(),
    };
    for route in &config.routes {
        routes.push(ctx.route(route.get_ref(), old, &mut reg).await?);
    }
    let table = crate::routes::Table::build(&config.routes)
        .map_err(|(_, e)| crate::BuildError::Config(e))?;
    let limits = &config.limits;
    let body = retry_safe_core::body::BodyLimits::new(limits.max_body_bytes, limits.body_timeout.0)
        .min_rate(limits.min_body_rate, limits.min_body_rate_grace.0);
    Ok(Runtime {
        unrouted: crate::metrics::StatusCounters::new(""),
        table,
        routes,
        keys,
        body,
        backends,
        client_ip,
        registry: reg,
        config,
    })
}

async fn backends(
    config: &Config,
    old: &Registry,
    reg: &mut Registry,
) -> Result<Backends, crate::BuildError> {
    let s = &config.store;
    let key = format!("store|{s:?}");
    reg.reuse(old, key, async {
        let env = |url: &str| -> Result<String, crate::BuildError> {
            match url.strip_prefix('$') {
                Some(var) => std::env::var(var).map_err(|_| {
                    crate::BuildError::Config(format!("store.url: the environment has no `{var}`"))
                }),
                None => Ok(url.to_owned()),
            }
        };
        let settings = RedisSettings::default();
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            crate::BuildError::Backend(format!("{what}: {e}"))
        };
        Ok(match s.kind {
            StoreKind::Memory => Backends {
                store: Arc::new(MemoryStore::new()),
                redis: None,
                postgres: None,
            },
            StoreKind::Redis => {
                let url = env(s.url.as_deref().unwrap_or_default())?;
                let runner = RedisRunner::connect(&url, &settings).await;
                redis_backends(runner.map_err(|e| unavailable("redis", &e))?, &s.prefix)
            }
            StoreKind::RedisCluster => {
                let nodes = s
                    .urls
                    .iter()
                    .map(|u| env(u))
                    .collect::<Result<Vec<_>, _>>()?;
                let runner = RedisRunner::connect_cluster(nodes, &settings).await;
                redis_backends(
                    runner.map_err(|e| unavailable("redis-cluster", &e))?,
                    &s.prefix,
                )
            }
            StoreKind::Postgres => {
                let store = idem_store_postgres::PostgresStore::connect(&env(s
                    .url
                    .as_deref()
                    .unwrap_or_default())?)
                .await
                .map_err(|e| unavailable("postgres", &e))?;
                store
                    .migrate()
                    .await
                    .map_err(|e| unavailable("postgres migration", &e))?;
                let pool = store.pool().clone();
                Backends {
                    store: Arc::new(store),
                    redis: None,
                    postgres: Some(pool),
                }
            }
        })
    })
    .await
}

/// The backends of a Redis (or Redis Cluster) store: the idempotency records under `prefix`, and
/// the runner the shared limits use.
fn redis_backends(runner: RedisRunner, prefix: &str) -> Backends {
    let store = idem_store_redis::RedisStore::with_connection(runner.clone()).prefix(prefix);
    Backends {
        store: Arc::new(store),
        redis: Some(runner),
        postgres: None,
    }
}

/// The fleet-wide shedder of `[shedding] fleet_capacity`, on the store's Redis: every gateway
/// sharing it counts its requests in flight there, with the same reserve per class.
async fn fleet_shedder(
    config: &Config,
    backends: &Backends,
    old: &Registry,
    reg: &mut Registry,
) -> Result<Option<FleetShedder>, crate::BuildError> {
    let (Some(capacity), Some(redis)) = (config.shedding.fleet_capacity, &backends.redis) else {
        return Ok(None);
    };
    let key = format!("fleet-shedder|{capacity}|{:?}", config.store);
    let fleet = reg
        .reuse(old, key, async {
            FleetShedder::with_connection(redis.clone(), capacity, Shares::default())
                .map(|f| f.prefix(&config.store.prefix))
                .map_err(|e| crate::BuildError::Config(format!("shedding.fleet_capacity: {e}")))
        })
        .await?;
    Ok(Some(fleet))
}

/// What every route's build reads.
struct Ctx<'a> {
    config: &'a Config,
    backends: &'a Backends,
    client_ip: &'a retry_safe_core::ClientIp,
    shedder: &'a Arc<Shedder>,
    fleet: Option<&'a FleetShedder>,
}

impl Ctx<'_> {
    async fn route(
        &self,
        route: &config::Route,
        old: &Registry,
        reg: &mut Registry,
    ) -> Result<RouteRuntime, crate::BuildError> {
        let methods: Vec<&str> = route.methods.iter().map(|m| m.get_ref().as_str()).collect();
        let name: Arc<str> = format!(
            "{} {}",
            if methods.is_empty() {
                "*".to_owned()
            } else {
                methods.join(",")
            },
            route.path.get_ref()
        )
        .into();
        let up_name = route.upstream.get_ref();
        let up_config = self.config.upstreams[up_name].get_ref();
        let upstream: Upstream = reg
            .reuse(old, format!("upstream|{up_name}|{up_config:?}"), async {
                Ok(Upstream::new(up_name, up_config))
            })
            .await?;
        let mut svc = crate::retry::upstream_service(
            upstream,
            route.retry.as_ref(),
            up_config.request_timeout.0,
        );
        if let Some(idem) = &route.idempotency {
            svc = boxed(self.idempotency(idem).layer(svc));
        }
        if let Some(hook) = &route.webhook {
            svc = self.webhook(&name, hook.get_ref(), svc).await?;
        }
        if let Some(c) = &route.concurrency {
            let c = c.get_ref();
            let caps: Caps<u64> = reg
                .reuse(old, format!("caps|{name}|{c:?}"), async {
                    self.caps(&name, c.max, c.shared)
                })
                .await?;
            svc = boxed(
                KeyedConcurrencyLimitLayer::new(caps, key_fn(&c.key, self.client_ip)).layer(svc),
            );
        }
        for (j, rl) in route.rate_limit.iter().enumerate().rev() {
            let r = rl.get_ref();
            let q = quota(r.rate, r.period.0, r.burst, &format!("route-{j}"));
            let limiter = reg
                .reuse(old, format!("rate|{name}|{j}|{r:?}"), async {
                    self.limiter(&format!("{name}|{j}"), q, r.shared)
                })
                .await?;
            svc =
                boxed(KeyedRateLimitLayer::new(limiter, key_fn(&r.key, self.client_ip)).layer(svc));
        }
        let class = route.class;
        let shed = PriorityShedLayer::from_shared(self.shedder.clone(), move |parts: &Parts| {
            class_of(class, &parts.method)
        });
        let shed = match self.fleet {
            Some(fleet) => shed.with_fleet(fleet.clone()),
            None => shed,
        };
        svc = boxed(shed.layer(svc));
        let mut plans = Vec::new();
        for (plan_name, plan) in &self.config.plans {
            plans.push(
                self.plan_stack(plan_name, plan, svc.clone(), old, reg)
                    .await?,
            );
        }
        Ok(RouteRuntime {
            counters: crate::metrics::StatusCounters::new(&name),
            name,
            auth: route.auth,
            base: svc,
            plans,
        })
    }

    /// A plan's limits around a route: its rate (and daily quota) and its concurrency, per
    /// principal; one budget per principal across every route.
    async fn plan_stack(
        &self,
        name: &str,
        plan: &config::Plan,
        inner: RouteService,
        old: &Registry,
        reg: &mut Registry,
    ) -> Result<RouteService, crate::BuildError> {
        let by_principal = key_fn(&KeyBy::Principal, self.client_ip);
        let mut quotas = vec![quota(plan.rate, plan.period.0, plan.burst, "plan")];
        if let Some(daily) = plan.daily_quota {
            quotas.push(Quota::per_day(daily).named(intern("daily")));
        }
        let shared = self.backends.redis.is_some();
        let limiter: Arc<dyn Limiter<u64>> = reg
            .reuse(old, format!("plan-rate|{name}|{plan:?}|{shared}"), async {
                let quotas = Quotas::new(quotas)
                    .map_err(|e| crate::BuildError::Config(format!("plans.{name}: {e}")))?;
                Ok(match &self.backends.redis {
                    Some(r) => Arc::new(
                        RedisLimiter::with_connection(r.clone(), quotas)
                            .prefix(&format!("{}:plan:{name}", self.config.store.prefix)),
                    ) as Arc<dyn Limiter<u64>>,
                    None => Arc::new(KeyedLimiter::<u64>::new(quotas)),
                })
            })
            .await?;
        let mut svc = inner;
        if let Some(max) = plan.concurrency {
            let caps: Caps<u64> = reg
                .reuse(old, format!("plan-caps|{name}|{max}|{shared}"), async {
                    self.caps(&format!("plan:{name}"), max, shared)
                })
                .await?;
            svc = boxed(KeyedConcurrencyLimitLayer::new(caps, by_principal.clone()).layer(svc));
        }
        Ok(boxed(
            KeyedRateLimitLayer::new(limiter, by_principal).layer(svc),
        ))
    }

    fn caps(&self, name: &str, max: u32, shared: bool) -> Result<Caps<u64>, crate::BuildError> {
        match (&self.backends.redis, shared) {
            (Some(r), true) => Ok(Caps::Fleet(
                RedisConcurrencyLimiter::with_connection(r.clone(), max)
                    .prefix(&format!("{}:caps:{name}", self.config.store.prefix)),
            )),
            _ => ConcurrencyLimiter::new(max)
                .map(Caps::Local)
                .map_err(|e| crate::BuildError::Config(e.to_string())),
        }
    }

    fn limiter(
        &self,
        name: &str,
        q: Quota,
        shared: bool,
    ) -> Result<Arc<dyn Limiter<u64>>, crate::BuildError> {
        let quotas =
            Quotas::new([q]).map_err(|e| crate::BuildError::Config(format!("{name}: {e}")))?;
        Ok(match (&self.backends.redis, shared) {
            (Some(r), true) => Arc::new(
                RedisLimiter::with_connection(r.clone(), quotas)
                    .prefix(&format!("{}:rate:{name}", self.config.store.prefix)),
            ),
            _ => Arc::new(KeyedLimiter::<u64>::new(quotas)),
        })
    }

    fn idempotency(&self, idem: &config::Idempotency) -> IdempotencyLayer<Store> {
        let scope = idem.scope.clone();
        let ips = self.client_ip.clone();
        let mut policy = IdempotencyPolicy::default()
            .require_key(idem.required)
            .scope_with(move |parts| match &scope {
                KeyBy::Global => "global".to_owned(),
                KeyBy::Header(h) => format!(
                    "header:{}",
                    String::from_utf8_lossy(
                        parts.headers.get(h).map_or(&b""[..], |v| v.as_bytes())
                    )
                ),
                KeyBy::ClientIp => match ips.of(parts) {
                    Some(ip) => format!("ip:{ip}"),
                    None => "ip:unknown".to_owned(),
                },
                KeyBy::Principal => format!("principal:{}", principal_of(parts)),
            })
            .retention(idem.retention.0)
            .lease(idem.lease.0)
            .wait_for_result(idem.wait_for_result.map(|d| d.0))
            .max_request_bytes(self.config.limits.max_body_bytes)
            .max_response_bytes(idem.max_response_bytes);
        policy = policy.body_timeout(self.config.limits.body_timeout.0);
        IdempotencyLayer::new(self.backends.store.clone(), policy)
    }

    async fn webhook(
        &self,
        route: &str,
        hook: &config::Webhook,
        inner: RouteService,
    ) -> Result<RouteService, crate::BuildError> {
        let text = match (&hook.secret_env, &hook.secret_file) {
            (Some(var), _) => std::env::var(var).map_err(|_| {
                crate::BuildError::Config(format!(
                    "{route}: webhook.secret_env: the environment has no `{var}`"
                ))
            })?,
            (_, Some(file)) => tokio::fs::read_to_string(file)
                .await
                .map_err(|e| {
                    crate::BuildError::Config(format!(
                        "{route}: webhook.secret_file `{}`: {e}",
                        file.display()
                    ))
                })?
                .trim()
                .to_owned(),
            (None, None) => {
                return Err(crate::BuildError::Config(format!(
                    "{route}: webhook needs a secret"
                )))
            }
        };
        let scheme = match hook.scheme {
            config::WebhookScheme::StandardWebhooks => Scheme::StandardWebhooks,
            config::WebhookScheme::Stripe => Scheme::Stripe,
            config::WebhookScheme::Github => Scheme::GitHub,
        };
        // The secret's text is not in the error: only which route's secret was refused.
        let secret = Secret::for_scheme(scheme, &text).map_err(|e| {
            crate::BuildError::Config(format!("{route}: webhook secret refused: {e}"))
        })?;
        let guard =
            ReplayGuard::new(self.backends.store.clone()).scope(&format!("webhook:{route}"));
        let layer = WebhookLayer::new(Verifier::new(scheme, secret))
            .max_body(self.config.limits.max_body_bytes)
            .replay_guard(guard);
        Ok(boxed(layer.layer(inner)))
    }
}

/// A request's load-shedding class: its route's, else by its method.
fn class_of(class: Option<ClassName>, method: &http::Method) -> Class {
    match class {
        Some(ClassName::Critical) => Class::Critical,
        Some(ClassName::Write) => Class::Write,
        Some(ClassName::Read) => Class::Read,
        Some(ClassName::Test) => Class::TestMode,
        None if method.is_safe() => Class::Read,
        None => Class::Write,
    }
}
