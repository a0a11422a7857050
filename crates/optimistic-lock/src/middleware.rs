//! The tower integration (feature `tower`): [`OptimisticLockLayer`] and its service.
//!
//! | request | response |
//! |---|---|
//! | covered write (PUT, PATCH, DELETE) without `If-Match` / `If-None-Match`, policy requires one | 428 `precondition_required` |
//! | `If-Match` / `If-None-Match` malformed | 400 `precondition_malformed` |
//! | version source unreachable | 503 `version_source_unavailable` + `Retry-After: 1` (the handler does not run) |
//! | a precondition false (RFC 9110 §13.2.2) | 412 `precondition_failed` + the current `ETag` |
//! | GET/HEAD whose `If-None-Match` / `If-Modified-Since` says the client's copy is current | 304 + `ETag` |
//! | otherwise | the handler's response, with the request extension [`Expected`](crate::Expected); reads get `ETag` and `Last-Modified` when the handler set none |
//!
//! Other methods (POST) pass through untouched.

use crate::precondition::{evaluate, Conditions, Current, Evaluation};
use crate::store::VersionSource;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use retry_safe_core::Problem;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

/// What the layer covers and requires.
#[derive(Debug, Clone)]
struct Policy {
    methods: Vec<Method>,
    require: bool,
}

/// Conditional requests for a tower service: `428` / `412` / `304` per RFC 9110 and RFC 6585,
/// `ETag` on reads, and the [`Expected`](crate::Expected) version handed to the handler for its compare-and-set.
///
/// Place it **inside** the idempotency layer: a retried write (same `Idempotency-Key`, same
/// `If-Match`) is then answered with the first attempt's stored response before its now-stale
/// precondition is evaluated again.
///
/// ```
/// use axum::{extract::Path, routing::get, Extension, Router};
/// use optimistic_lock::{Expected, OptimisticLockLayer, VersionedMap};
///
/// let orders: VersionedMap<String, u32> = VersionedMap::new();
/// let source = orders.source(|parts| {
///     parts.uri.path().strip_prefix("/orders/").map(str::to_owned)
/// });
/// let app: Router = Router::new()
///     .route("/orders/{id}", get(|| async { "{}" }).patch(
///         move |Path(id): Path<String>, Extension(expected): Extension<Expected>| async move {
///             match orders.compare_and_set(id, &expected, 3) {
///                 Ok(_) => axum::response::Response::new(axum::body::Body::from("updated")),
///                 Err(conflict) => conflict.into_response(),
///             }
///         },
///     ))
///     .layer(OptimisticLockLayer::new(source));
/// ```
pub struct OptimisticLockLayer<V> {
    source: Arc<V>,
    policy: Arc<Policy>,
}

impl<V> Clone for OptimisticLockLayer<V> {
    fn clone(&self) -> Self {
        Self {
            source: self.source.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl<V> std::fmt::Debug for OptimisticLockLayer<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OptimisticLockLayer")
            .field("methods", &self.policy.methods)
            .field("require_precondition", &self.policy.require)
            .finish_non_exhaustive()
    }
}

impl<V: VersionSource> OptimisticLockLayer<V> {
    /// A layer reading current versions from `source`, covering PUT, PATCH and DELETE and
    /// requiring them to be conditional.
    pub fn new(source: V) -> Self {
        Self {
            source: Arc::new(source),
            policy: Arc::new(Policy {
                methods: vec![Method::PUT, Method::PATCH, Method::DELETE],
                require: true,
            }),
        }
    }

    /// Whether covered writes without `If-Match` / `If-None-Match` get `428` (default `true`).
    /// When `false` they run with [`Expected::Unconditional`](crate::Expected::Unconditional).
    pub fn require_precondition(mut self, require: bool) -> Self {
        Arc::make_mut(&mut self.policy).require = require;
        self
    }

    /// The write methods the layer covers (default PUT, PATCH, DELETE). GET and HEAD are always
    /// handled as reads.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        Arc::make_mut(&mut self.policy).methods = methods.into_iter().collect();
        self
    }
}

impl<S, V> Layer<S> for OptimisticLockLayer<V> {
    type Service = OptimisticLockService<S, V>;
    fn layer(&self, inner: S) -> Self::Service {
        OptimisticLockService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`OptimisticLockLayer`].
pub struct OptimisticLockService<S, V> {
    inner: S,
    layer: OptimisticLockLayer<V>,
}

impl<S: Clone, V> Clone for OptimisticLockService<S, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, V> std::fmt::Debug for OptimisticLockService<S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OptimisticLockService")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, V, ReqB, ResB> Service<Request<ReqB>> for OptimisticLockService<S, V>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    V: VersionSource,
    ReqB: Send + 'static,
    ResB: From<Bytes> + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<ResB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let method = req.method().clone();
        let read = method == Method::GET || method == Method::HEAD;
        let covered = self.layer.policy.methods.contains(&method);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if !read && !covered {
            return Box::pin(inner.call(req));
        }
        let source = self.layer.source.clone();
        let require = covered && self.layer.policy.require;
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let grpc = retry_safe_core::grpc::is_grpc(&parts.headers);
            let conditions = match Conditions::from_headers(&parts.headers) {
                Ok(c) => c,
                Err(e) => {
                    return Ok(Problem::new(
                        StatusCode::BAD_REQUEST,
                        "precondition_malformed",
                        "Malformed precondition header",
                    )
                    .with_detail(e.to_string())
                    .into_response_if_grpc(grpc))
                }
            };
            if require && !conditions.has_etag_condition() {
                return Ok(Problem::new(
                    StatusCode::PRECONDITION_REQUIRED,
                    "precondition_required",
                    "Precondition required",
                )
                .with_detail(
                    "this write must be conditional: send If-Match with the ETag you read \
                     (or If-None-Match: * to create)",
                )
                .into_response_if_grpc(grpc));
            }
            let current = match source.current(&parts).await {
                Ok(current) => current,
                Err(e) => {
                    tracing::error!(error = %e, "version source failed; refusing the request");
                    return Ok(Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "version_source_unavailable",
                        "Version source unavailable",
                    )
                    .with_detail(
                        "the resource's current version could not be read; the request was not run",
                    )
                    .with_retry_after(Duration::from_secs(1))
                    .into_response_if_grpc(grpc));
                }
            };
            match evaluate(&parts.method, &conditions, current.as_ref()) {
                Evaluation::NotModified => Ok(not_modified(current.as_ref())),
                Evaluation::Proceed(expected) => {
                    parts.extensions.insert(expected);
                    let mut res = inner.call(Request::from_parts(parts, body)).await?;
                    if read && res.status().is_success() {
                        if let Some(current) = &current {
                            add_validators(res.headers_mut(), current);
                        }
                    }
                    Ok(res)
                }
                _ => Ok(crate::store::precondition_failed_as(
                    current.as_ref().map(|c| &c.version),
                    grpc,
                )),
            }
        })
    }
}

/// `ETag` and `Last-Modified` of `current`, where the response has none.
fn add_validators(headers: &mut http::HeaderMap, current: &Current) {
    if !headers.contains_key(header::ETAG) {
        headers.insert(header::ETAG, current.version.etag().to_header_value());
    }
    if let Some(at) = current.last_modified {
        if !headers.contains_key(header::LAST_MODIFIED) {
            if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(at)) {
                headers.insert(header::LAST_MODIFIED, v);
            }
        }
    }
}

fn not_modified<B: From<Bytes>>(current: Option<&Current>) -> Response<B> {
    let mut res = Response::new(B::from(Bytes::new()));
    *res.status_mut() = StatusCode::NOT_MODIFIED;
    if let Some(current) = current {
        add_validators(res.headers_mut(), current);
    }
    res
}
