//! Listeners (HTTP/1.1 and HTTP/2, optional TLS), the admin listener, SIGHUP reload and SIGTERM
//! drain.

use crate::config::{Config, Listener};
use crate::events::event;
use crate::front::Dispatch;
use crate::proxy::Peer;
use crate::stack::{self, Registry, Runtime};
use crate::{Body, BuildError};
use arc_swap::ArcSwap;
use http::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use retry_safe_core::Problem;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;
use trace_ctx::TraceContextLayer;

/// Why the gateway did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The config file (or a file it names) is unusable.
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
    /// The config parsed but could not be built (a secret missing, a store unreachable).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Checks the config at `path` as a start would, building everything (connecting to its stores)
/// and binding nothing: what `--check` runs.
pub async fn check(path: &Path) -> Result<(), StartError> {
    let config = Config::load(path)?;
    for l in &config.listeners {
        if let Some(tls) = &l.tls {
            crate::tls::server_config(tls)?;
        }
    }
    stack::build(config, &Registry::default()).await?;
    Ok(())
}

/// A running gateway's shared state.
struct Shared {
    path: PathBuf,
    current: Arc<ArcSwap<Runtime>>,
    tls: Vec<Option<Arc<ArcSwap<rustls::ServerConfig>>>>,
    listeners: Vec<Listener>,
}

/// Runs the gateway of the config at `path` until SIGTERM or SIGINT, then drains.
pub async fn run(path: &Path) -> Result<(), StartError> {
    let config = Config::load(path)?;
    let mut tls = Vec::new();
    for l in &config.listeners {
        tls.push(match &l.tls {
            Some(t) => Some(Arc::new(ArcSwap::from_pointee(crate::tls::server_config(
                t,
            )?))),
            None => None,
        });
    }
    let bound = bind_all(&config).await?;
    let admin = match &config.admin {
        Some(a) => Some(bind(a.address.get_ref()).await?),
        None => None,
    };
    let prometheus = recorder();
    let drain = config.limits.drain_timeout.0;
    let listeners = config.listeners.clone();
    let runtime = stack::build(config, &Registry::default()).await?;
    let shared = Arc::new(Shared {
        path: path.to_owned(),
        current: Arc::new(ArcSwap::from_pointee(runtime)),
        tls,
        listeners,
    });
    let (stop_tx, stop) = watch::channel(false);
    let graceful = Arc::new(GracefulShutdown::new());
    let mut tasks = Vec::new();
    for (i, listener) in bound.into_iter().enumerate() {
        event(
            "listening",
            json!({"address": listener.local_addr().ok().map(|a| a.to_string()), "tls": shared.tls[i].is_some()}),
        );
        tasks.push(tokio::spawn(accept_loop(
            listener,
            i,
            shared.clone(),
            graceful.clone(),
            stop.clone(),
        )));
    }
    if let Some(admin) = admin {
        event(
            "admin_listening",
            json!({"address": admin.local_addr().ok().map(|a| a.to_string())}),
        );
        tokio::spawn(crate::admin::serve(
            admin,
            shared.current.clone(),
            prometheus,
            stop.clone(),
        ));
    }
    signals(&shared).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    event("draining", json!({"timeout_ms": drain.as_millis() as u64}));
    // The accept loops have returned, so this is the last reference.
    let graceful = Arc::try_unwrap(graceful).unwrap_or_default();
    let drained = tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_ok();
    event("stopped", json!({"drained": drained}));
    Ok(())
}

fn recorder() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

async fn bind(address: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind {
            address: address.to_owned(),
            source,
        })
}

async fn bind_all(config: &Config) -> Result<Vec<TcpListener>, StartError> {
    let mut bound = Vec::new();
    for l in &config.listeners {
        bound.push(bind(l.address.get_ref()).await?);
    }
    Ok(bound)
}

/// Waits for SIGTERM or SIGINT, reloading on every SIGHUP meanwhile.
async fn signals(shared: &Shared) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        event("signals_unavailable", json!({}));
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => reload(shared).await,
            _ = term.recv() => return,
            _ = int.recv() => return,
        }
    }
}

/// Loads the config file again and swaps it in whole, or keeps the running one and says why.
async fn reload(shared: &Shared) {
    let config = match Config::load(&shared.path) {
        Ok(c) => c,
        Err(e) => return event("reload_refused", json!({"error": e.to_string()})),
    };
    if config.listeners != shared.listeners {
        event(
            "reload_note",
            json!({"note": "listener addresses change only at a restart; the running ones are kept"}),
        );
    }
    for (l, slot) in config.listeners.iter().zip(&shared.tls) {
        if let (Some(t), Some(slot)) = (&l.tls, slot) {
            match crate::tls::server_config(t) {
                Ok(c) => slot.store(Arc::new(c)),
                Err(e) => return event("reload_refused", json!({"error": e.to_string()})),
            }
        }
    }
    let old = shared.current.load_full();
    match stack::build(config, &old.registry).await {
        Ok(rt) => {
            let routes = rt.routes.len();
            shared.current.store(Arc::new(rt));
            event("reloaded", json!({"routes": routes}));
        }
        Err(e) => event("reload_refused", json!({"error": e.to_string()})),
    }
}

async fn accept_loop(
    listener: TcpListener,
    index: usize,
    shared: Arc<Shared>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let tls = shared.tls[index].as_ref().map(|c| c.load_full());
        let limits = ConnLimits::of(&shared.current.load().config.limits);
        let service = connection_service(&shared, addr, tls.is_some());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match tls {
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    let handshake = acceptor.accept(stream);
                    // A failed or slow handshake asked nothing: there is nothing to answer.
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(limits.header_timeout, handshake).await
                    {
                        serve(TokioIo::new(tls), service, &limits, watcher).await;
                    }
                }
                None => serve(TokioIo::new(stream), service, &limits, watcher).await,
            }
        });
    }
}

/// What a connection reads of `[limits]` (copied per connection, not the whole section).
#[derive(Clone, Copy)]
struct ConnLimits {
    header_timeout: Duration,
    max_header_bytes: usize,
}

impl ConnLimits {
    fn of(limits: &crate::config::RequestLimits) -> Self {
        Self {
            header_timeout: limits.header_timeout.0,
            max_header_bytes: limits.max_header_bytes,
        }
    }
}

/// The per-connection service: the peer recorded, the trace-context layer, the dispatcher.
fn connection_service(
    shared: &Shared,
    addr: SocketAddr,
    tls: bool,
) -> impl tower_service::Service<
    Request<hyper::body::Incoming>,
    Response = Response<Body>,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
       + Send
       + 'static {
    let dispatch = Dispatch {
        current: shared.current.clone(),
    };
    let traced = tower::Layer::layer(&TraceContextLayer::new(), dispatch);
    let peer = Peer { addr, tls };
    traced.map_request(move |req: Request<hyper::body::Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(peer);
        req
    })
}

async fn serve<I, S>(io: TokioIo<I>, service: S, limits: &ConnLimits, watcher: Watcher)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tower_service::Service<
            Request<hyper::body::Incoming>,
            Response = Response<Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32);
    let hyper_service = hyper_util::service::TowerToHyperService::new(service);
    let conn = builder.serve_connection_with_upgrades(io, hyper_service);
    let _ = watcher.watch(conn.into_owned()).await;
}

/// The answer of a request the gateway could not serve at all (used by the admin listener).
pub(crate) fn unavailable(detail: String) -> Response<Body> {
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "Not ready")
        .with_detail(detail)
        .into_response()
}
