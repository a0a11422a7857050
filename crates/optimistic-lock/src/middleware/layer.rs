use super::service::OptimisticLockService;
use crate::store::VersionSource;
use http::Method;
use std::sync::Arc;
use tower_layer::Layer;

/// What the layer covers and requires.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) methods: Vec<Method>,
    pub(crate) require: bool,
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
///
/// The tower integration (feature `tower`): [`OptimisticLockLayer`] and its service.
///
/// | request | response |
/// |---|---|
/// | covered write (PUT, PATCH, DELETE) without `If-Match` / `If-None-Match`, policy requires one | 428 `precondition_required` |
/// | `If-Match` / `If-None-Match` malformed | 400 `precondition_malformed` |
/// | version source unreachable | 503 `version_source_unavailable` + `Retry-After: 1` (the handler does not run) |
/// | a precondition false (RFC 9110 §13.2.2) | 412 `precondition_failed` + the current `ETag` |
/// | GET/HEAD whose `If-None-Match` / `If-Modified-Since` says the client's copy is current | 304 + `ETag` |
/// | otherwise | the handler's response, with the request extension [`Expected`](crate::Expected); reads get `ETag` and `Last-Modified` when the handler set none |
///
/// Other methods (POST) pass through untouched.
pub struct OptimisticLockLayer<V> {
    pub(crate) source: Arc<V>,
    pub(crate) policy: Arc<Policy>,
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
