use super::future::OptimisticLockFuture;
use super::layer::OptimisticLockLayer;
use crate::precondition::{evaluate, Conditions, Current, Evaluation};
use crate::store::VersionSource;
use crate::BoxError;
use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use retry_safe_core::Problem;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

/// The service made by [`OptimisticLockLayer`].
pub struct OptimisticLockService<S, V> {
    pub(crate) inner: S,
    pub(crate) layer: OptimisticLockLayer<V>,
}

impl<S, V> OptimisticLockService<S, V> {
    retry_safe_core::inner_service!(S);
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
    type Future = OptimisticLockFuture<S::Future, ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let method = req.method();
        let read = method == Method::GET || method == Method::HEAD;
        let covered = self.layer.policy.methods.contains(method);
        if !read && !covered {
            return OptimisticLockFuture::inner(self.inner.call(req), None);
        }
        let require = covered && self.layer.policy.require;
        let (mut parts, body) = req.into_parts();
        // Only a refusal needs to know whether it answers a gRPC call.
        let grpc = |parts: &Parts| retry_safe_core::grpc::is_grpc(&parts.headers);
        let conditions = match Conditions::from_headers(&parts.headers) {
            Ok(c) => c,
            Err(e) => {
                return OptimisticLockFuture::ready(
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "precondition_malformed",
                        "Malformed precondition header",
                    )
                    .with_detail(e.to_string())
                    .into_response_if_grpc(grpc(&parts)),
                )
            }
        };
        if require && !conditions.has_etag_condition() {
            return OptimisticLockFuture::ready(
                Problem::new(
                    StatusCode::PRECONDITION_REQUIRED,
                    "precondition_required",
                    "Precondition required",
                )
                .with_detail(
                    "this write must be conditional: send If-Match with the ETag you read \
                     (or If-None-Match: * to create)",
                )
                .into_response_if_grpc(grpc(&parts)),
            );
        }
        // A version source in memory answers in place: the inner service made ready by
        // `poll_ready` is called now, nothing is boxed or cloned.
        if let Some(current) = self.layer.source.current_now(&parts) {
            return match decide(read, &mut parts, &conditions, current) {
                Decided::Run(validators) => OptimisticLockFuture::inner(
                    self.inner.call(Request::from_parts(parts, body)),
                    validators,
                ),
                Decided::Answer(res) => OptimisticLockFuture::ready(res),
            };
        }
        // The version is read over the network: the inner service is called later, so the clone
        // that was made ready goes into the future and a fresh clone stays here.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let source = self.layer.source.clone();
        OptimisticLockFuture::boxed(Box::pin(async move {
            let current = source.current(&parts).await;
            match decide(read, &mut parts, &conditions, current) {
                Decided::Run(validators) => {
                    let mut res = inner.call(Request::from_parts(parts, body)).await?;
                    if let Some(current) = validators {
                        if res.status().is_success() {
                            add_validators(res.headers_mut(), &current);
                        }
                    }
                    Ok(res)
                }
                Decided::Answer(res) => Ok(res),
            }
        }))
    }
}

/// What the layer does once the current version is known.
enum Decided<B> {
    /// Run the handler (with [`Expected`](crate::Expected) in the request's extensions); a
    /// successful read's response gets these validators.
    Run(Option<Current>),
    /// Answer without running it.
    Answer(Response<B>),
}

fn decide<B: From<Bytes>>(
    read: bool,
    parts: &mut Parts,
    conditions: &Conditions,
    current: Result<Option<Current>, BoxError>,
) -> Decided<B> {
    // Only a refusal needs to know whether it answers a gRPC call.
    let grpc = |parts: &Parts| retry_safe_core::grpc::is_grpc(&parts.headers);
    let current = match current {
        Ok(current) => current,
        Err(e) => {
            tracing::error!(error = %e, "version source failed; refusing the request");
            return Decided::Answer(
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "version_source_unavailable",
                    "Version source unavailable",
                )
                .with_detail(
                    "the resource's current version could not be read; the request was not run",
                )
                .with_retry_after(Duration::from_secs(1))
                .into_response_if_grpc(grpc(parts)),
            );
        }
    };
    match evaluate(&parts.method, conditions, current.as_ref()) {
        Evaluation::NotModified => Decided::Answer(not_modified(current.as_ref())),
        Evaluation::Proceed(expected) => {
            parts.extensions.insert(expected);
            Decided::Run(if read { current } else { None })
        }
        _ => Decided::Answer(crate::store::precondition_failed_as(
            current.as_ref().map(|c| &c.version),
            grpc(parts),
        )),
    }
}

/// `ETag` and `Last-Modified` of `current`, where the response has none.
pub(crate) fn add_validators(headers: &mut http::HeaderMap, current: &Current) {
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
