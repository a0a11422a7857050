use super::future::IdempotencyFuture;
use super::layer::{Event, Metrics};
use super::{IdempotencyBody, IDEMPOTENT_REPLAYED};
use crate::key::IDEMPOTENCY_KEY;
use crate::store::{BoxError, StoreError};
use crate::Problem;
use crate::{
    BeginOutcome, FailMode, Fence, Fingerprint, IdempotencyKey, IdempotencyPolicy,
    IdempotencyStore, StoredResponse,
};
use crate::{CompletedByHandler, IdempotencyAttempt};
use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use retry_safe_core::body::{declared_length, read_body, BodyCodes, BodyLimits};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// The service made by [`IdempotencyLayer`](super::IdempotencyLayer).
///
/// Request bodies of any type that can be rebuilt from bytes (`From<Bytes>`) work: axum's `Body`,
/// `http_body_util::Full<Bytes>`, and the like. Responses come back with an [`IdempotencyBody`]:
/// the handler's body as it streams, or the buffered bytes with their trailers.
pub struct IdempotencyService<Inner, S> {
    pub(crate) inner: Inner,
    pub(crate) store: Arc<S>,
    pub(crate) policy: Arc<IdempotencyPolicy>,
    pub(crate) metrics: Arc<Metrics>,
}

impl<Inner, S> IdempotencyService<Inner, S> {
    retry_safe_core::inner_service!(Inner);
}

impl<Inner: Clone, S> Clone for IdempotencyService<Inner, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            store: self.store.clone(),
            policy: self.policy.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<Inner: std::fmt::Debug, S> std::fmt::Debug for IdempotencyService<Inner, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyService")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<Inner, S, B, RB> Service<Request<B>> for IdempotencyService<Inner, S>
where
    Inner: Service<Request<B>, Response = Response<RB>, Future: Send, Error: Send>,
    Inner: Clone + Send + 'static,
    S: IdempotencyStore,
    B: Body<Data: Send, Error: Into<BoxError>> + From<Bytes> + Send + 'static,
    RB: Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
{
    type Response = Response<IdempotencyBody<RB>>;
    type Error = Inner::Error;
    type Future = IdempotencyFuture<Inner::Future, RB, Inner::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !self.policy.methods.contains(req.method()) {
            return IdempotencyFuture::pass_through(self.inner.call(req));
        }
        let grpc = retry_safe_core::grpc::is_grpc(req.headers());
        let key = match read_key(&req, &self.policy) {
            Ok(Some(key)) => key,
            Ok(None) => return IdempotencyFuture::pass_through(self.inner.call(req)),
            Err(problem) => {
                return IdempotencyFuture::ready(problem.into_response_if_grpc(grpc));
            }
        };
        // The clone that was driven to readiness serves this request (later, after `begin`); a
        // fresh clone stays here for the next `poll_ready`.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let ctx = Ctx {
            store: self.store.clone(),
            policy: self.policy.clone(),
            metrics: self.metrics.clone(),
            key,
            grpc,
        };
        IdempotencyFuture::boxed(Box::pin(serve(inner, ctx, req)))
    }
}

/// The key of a covered request; `Ok(None)` when it has none and none is required.
fn read_key<B>(
    req: &Request<B>,
    policy: &IdempotencyPolicy,
) -> Result<Option<IdempotencyKey>, Problem> {
    let mut values = req.headers().get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        if policy.key_required {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "idempotency_key_missing",
                "Idempotency-Key header missing",
            )
            .with_detail("this endpoint requires an Idempotency-Key header"));
        }
        return Ok(None);
    };
    let invalid = |detail: String| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "idempotency_key_invalid",
            "Idempotency-Key header invalid",
        )
        .with_detail(detail)
    };
    if values.next().is_some() {
        return Err(invalid("more than one Idempotency-Key header".into()));
    }
    IdempotencyKey::parse(value.as_bytes())
        .map(Some)
        .map_err(|e| invalid(e.to_string()))
}

/// What one covered request's steps share.
struct Ctx<S> {
    store: Arc<S>,
    policy: Arc<IdempotencyPolicy>,
    metrics: Arc<Metrics>,
    key: IdempotencyKey,
    /// The request is gRPC: rejections are gRPC statuses.
    grpc: bool,
}

async fn serve<Inner, S, B, RB>(
    mut inner: Inner,
    ctx: Ctx<S>,
    req: Request<B>,
) -> Result<Response<IdempotencyBody<RB>>, Inner::Error>
where
    Inner: Handler<B, RB>,
    S: IdempotencyStore,
    B: RequestBody,
    RB: ResponseBody,
{
    let (parts, body) = req.into_parts();
    let limits = BodyLimits::new(ctx.policy.max_request_bytes, ctx.policy.body_timeout);
    let body = match read_body(body, declared_length(&parts.headers), limits).await {
        Ok(body) => body,
        Err(e) => {
            let problem = e.problem(&BODY_CODES);
            let detail = format!(
                "{}; retry it with the same Idempotency-Key",
                problem.detail().unwrap_or_default()
            );
            return Ok(problem.with_detail(detail).into_response_if_grpc(ctx.grpc));
        }
    };
    let scope = (ctx.policy.scope)(&parts);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let fingerprint = Fingerprint::of_request(parts.method.as_str(), path, &body);
    let mut req = Request::from_parts(parts, B::from(body));

    if ctx.policy.single_commit {
        // The handler begins, writes and completes in one transaction of its own.
        req.extensions_mut().insert(crate::PendingAttempt {
            scope,
            key: ctx.key.clone(),
            fingerprint,
            lease: ctx.policy.lease,
            retention: ctx.policy.retention,
        });
        ctx.metrics.record(Event::Executed);
        return inner
            .call(req)
            .await
            .map(|res| res.map(IdempotencyBody::streaming));
    }

    let fence = match ctx.begin(&scope, &fingerprint).await {
        Ok(fence) => fence,
        Err(Decided::Respond(res)) => return Ok(res),
        Err(Decided::RunUnprotected) => {
            return inner
                .call(req)
                .await
                .map(|res| res.map(IdempotencyBody::streaming))
        }
    };
    ctx.metrics.record(Event::Executed);
    execute(inner, ctx, req, scope, fence).await
}

/// The bounds of the inner service the layer wraps, in one place.
trait Handler<B, RB>:
    Service<Request<B>, Response = Response<RB>, Future: Send, Error: Send> + Send + 'static
{
}

impl<T, B, RB> Handler<B, RB> for T where
    T: Service<Request<B>, Response = Response<RB>, Future: Send, Error: Send> + Send + 'static
{
}

/// The bounds of a request body the layer buffers.
trait RequestBody: Body<Data: Send, Error: Into<BoxError>> + From<Bytes> + Send + 'static {}

impl<T> RequestBody for T where
    T: Body<Data: Send, Error: Into<BoxError>> + From<Bytes> + Send + 'static
{
}

/// The bounds of a response body the layer stores.
trait ResponseBody: Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}

impl<T> ResponseBody for T where T: Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}

/// Runs the handler under the record's lease, then stores its answer (or releases the key).
async fn execute<Inner, S, B, RB>(
    inner: Inner,
    ctx: Ctx<S>,
    req: Request<B>,
    scope: String,
    fence: Fence,
) -> Result<Response<IdempotencyBody<RB>>, Inner::Error>
where
    Inner: Handler<B, RB>,
    S: IdempotencyStore,
    B: RequestBody,
    RB: ResponseBody,
{
    let mut guard = ReleaseOnDrop {
        store: ctx.store.clone(),
        scope,
        key: ctx.key.clone(),
        fence,
        metrics: ctx.metrics.clone(),
        armed: true,
    };
    let res = match run_handler(inner, req, &guard, ctx.policy.lease).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => {
            guard.release().await;
            return Err(e);
        }
        Err(_panic) => {
            guard.release().await;
            return Ok(internal_error("the request failed", ctx.grpc));
        }
    };
    if res.extensions().get::<CompletedByHandler>().is_some() {
        // The handler completed the record in its own transaction.
        guard.armed = false;
        return Ok(res.map(IdempotencyBody::streaming));
    }
    // A gRPC answer is HTTP 200 whatever its outcome: what decides is its `grpc-status`, in the
    // headers (trailers-only) or in the trailers, known once the body is read.
    let grpc_response = retry_safe_core::grpc::is_grpc(res.headers());
    if !grpc_response && !(ctx.policy.store_status)(res.status()) {
        guard.release().await;
        return Ok(res.map(IdempotencyBody::streaming));
    }
    let (parts, body) = res.into_parts();
    let collected = AssertUnwindSafe(body.collect()).catch_unwind().await;
    let Some(collected) = collected.ok().and_then(Result::ok) else {
        guard.release().await;
        return Ok(internal_error(
            "the response could not be produced",
            ctx.grpc,
        ));
    };
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    if grpc_response && !(ctx.policy.store_status)(grpc_status(&parts.headers, &trailers)) {
        guard.release().await;
        return Ok(Response::from_parts(
            parts,
            IdempotencyBody::buffered(body, trailers),
        ));
    }
    let stored = to_stored(&ctx, &parts, &body, &trailers, grpc_response);
    complete(&ctx, guard, &stored).await;
    Ok(Response::from_parts(
        parts,
        IdempotencyBody::buffered(body, trailers),
    ))
}

/// Calls the handler with the attempt in its extensions, renewing the lease while it runs;
/// `Err` when it panicked (before or after its first await).
async fn run_handler<Inner, S, B, RB>(
    mut inner: Inner,
    mut req: Request<B>,
    guard: &ReleaseOnDrop<S>,
    lease: std::time::Duration,
) -> Result<Result<Response<RB>, Inner::Error>, Box<dyn std::any::Any + Send>>
where
    Inner: Handler<B, RB>,
    S: IdempotencyStore,
    B: RequestBody,
{
    req.extensions_mut().insert(IdempotencyAttempt {
        scope: guard.scope.clone(),
        key: guard.key.clone(),
        fence: guard.fence,
    });
    // `call` itself runs inside the guarded future, so a panic before the first await is caught too.
    let handler = AssertUnwindSafe(async move { inner.call(req).await }).catch_unwind();
    // The heartbeat: while the handler runs, its lease is renewed every third of a lease, so the
    // lease can be short (an orphaned key frees within one lease) while a slow handler keeps it.
    let heartbeat = heartbeat(
        guard.store.clone(),
        guard.scope.clone(),
        guard.key.clone(),
        guard.fence,
        lease,
    );
    tokio::pin!(handler);
    tokio::pin!(heartbeat);
    tokio::select! {
        biased;
        called = &mut handler => called,
        () = &mut heartbeat => (&mut handler).await,
    }
}

/// A 500 for a handler that panicked or a response that could not be read: the key is released,
/// so the client may retry.
fn internal_error<RB>(what: &str, grpc: bool) -> Response<IdempotencyBody<RB>> {
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "Internal error",
    )
    .with_detail(format!(
        "{what}; it may be retried with the same Idempotency-Key"
    ))
    .into_response_if_grpc(grpc)
}

/// The HTTP status a gRPC answer's `grpc-status` maps to (headers first, then trailers).
fn grpc_status(headers: &http::HeaderMap, trailers: &Option<http::HeaderMap>) -> StatusCode {
    use retry_safe_core::grpc::{status_of, Code};
    status_of(headers)
        .or_else(|| trailers.as_ref().and_then(status_of))
        .unwrap_or(Code::Unknown)
        .http_status()
}

/// The record of an answer: status, the replayed headers (and a trailers-only gRPC answer's
/// `grpc-*` headers), body and trailers; the not-stored marker when it is over the size limit.
fn to_stored<S>(
    ctx: &Ctx<S>,
    parts: &http::response::Parts,
    body: &Bytes,
    trailers: &Option<http::HeaderMap>,
    grpc_response: bool,
) -> StoredResponse {
    let replayed = &ctx.policy.replay_headers;
    let headers = replayed
        .iter()
        .flat_map(|name| {
            let values = parts.headers.get_all(name).iter();
            values.map(move |v| StoredResponse::field(name, v))
        })
        .chain(
            parts
                .headers
                .iter()
                .filter(|(name, _)| {
                    grpc_response && name.as_str().starts_with("grpc-") && !replayed.contains(name)
                })
                .map(|(name, v)| StoredResponse::field(name, v)),
        )
        .collect();
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        headers,
        body: body.clone(),
        trailers: trailers
            .as_ref()
            .map(StoredResponse::fields_of)
            .unwrap_or_default(),
    };
    if stored.size() > ctx.policy.max_response_bytes {
        return not_stored_marker(parts.status, ctx.grpc);
    }
    stored
}

/// Completes the record with `stored` (retried while the store is unavailable); a failure is
/// logged and metered, the response still goes out.
async fn complete<S: IdempotencyStore>(
    ctx: &Ctx<S>,
    mut guard: ReleaseOnDrop<S>,
    stored: &StoredResponse,
) {
    guard.armed = false;
    let completed = complete_with_retries(
        &*guard.store,
        &guard.scope,
        &guard.key,
        guard.fence,
        stored,
        ctx.policy.retention,
    )
    .await;
    if let Err(e) = completed {
        ctx.metrics.record(Event::StoreError);
        tracing::error!(
            error = %e,
            key = %guard.key,
            "the response could not be stored for replay; a retry after the lease may run again"
        );
    }
}

/// Waits before the retries of a `complete` that met an unavailable store.
const COMPLETE_BACKOFF: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(50),
    std::time::Duration::from_millis(100),
    std::time::Duration::from_millis(200),
];

/// `complete`, retried while the store is unavailable: the handler has run, and a record left in
/// flight would let a retry run it again once the lease ends. A reconnecting client (Redis'
/// connection manager, a database pool) usually answers again within these waits. (A retry that
/// meets `StaleFence` may mean the failed attempt landed before its reply was lost; it is reported,
/// not retried.)
async fn complete_with_retries<S: IdempotencyStore + ?Sized>(
    store: &S,
    scope: &str,
    key: &IdempotencyKey,
    fence: Fence,
    stored: &StoredResponse,
    retention: std::time::Duration,
) -> Result<(), StoreError> {
    let mut result = match store.complete_now(scope, key, fence, stored, retention) {
        Some(done) => done,
        None => store.complete(scope, key, fence, stored, retention).await,
    };
    for wait in COMPLETE_BACKOFF {
        if !result.as_ref().is_err_and(StoreError::is_unavailable) {
            break;
        }
        tokio::time::sleep(wait).await;
        result = store.complete(scope, key, fence, stored, retention).await;
    }
    result
}

impl<S: IdempotencyStore> Ctx<S> {
    /// `Ok(fence)` to run the handler, or what was decided instead.
    async fn begin<RB>(
        &self,
        scope: &str,
        fingerprint: &Fingerprint,
    ) -> Result<Fence, Decided<RB>> {
        let deadline = self
            .policy
            .wait_for_result
            .map(|w| tokio::time::Instant::now() + w);
        loop {
            let outcome =
                match self
                    .store
                    .begin_now(scope, &self.key, fingerprint, self.policy.lease)
                {
                    Some(outcome) => outcome,
                    None => {
                        self.store
                            .begin(scope, &self.key, fingerprint, self.policy.lease)
                            .await
                    }
                };
            match outcome {
                Ok(BeginOutcome::Acquired { fence }) => return Ok(fence),
                Ok(BeginOutcome::Completed(stored)) => {
                    self.metrics.record(Event::Replayed);
                    return Err(Decided::Respond(replay(stored)));
                }
                Ok(BeginOutcome::Mismatch) => {
                    self.metrics.record(Event::Mismatched);
                    return Err(Decided::Respond(
                        crate::attempt::key_reused().into_response_if_grpc(self.grpc),
                    ));
                }
                Ok(BeginOutcome::InFlight { retry_after }) => {
                    let now = tokio::time::Instant::now();
                    match deadline {
                        Some(deadline) if now < deadline => {
                            let nap = retry_after
                                .min(self.policy.poll_interval)
                                .min(deadline - now);
                            tokio::time::sleep(nap).await;
                        }
                        _ => {
                            self.metrics.record(Event::InFlight);
                            // Come back about when the first attempt is likely done, not when
                            // its lease would run out (see `in_flight_retry_after`).
                            let hint = retry_after.min(self.policy.in_flight_hint);
                            return Err(Decided::Respond(
                                crate::attempt::in_flight(hint).into_response_if_grpc(self.grpc),
                            ));
                        }
                    }
                }
                Err(e) => {
                    self.metrics.record(Event::StoreError);
                    return Err(self.store_failed(&e));
                }
            }
        }
    }

    fn store_failed<RB>(&self, e: &StoreError) -> Decided<RB> {
        if matches!(e, StoreError::ScopeFull) {
            // One tenant's flood: refuse that tenant only, never run it unprotected.
            return Decided::Respond(
                Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "idempotency_scope_full",
                    "Too many idempotent requests in progress or retained",
                )
                .with_detail(
                    "this client holds its whole share of idempotency records; retry later",
                )
                .with_retry_after(std::time::Duration::from_secs(1))
                .into_response_if_grpc(self.grpc),
            );
        }
        if let StoreError::Backend(backend) = e {
            if !backend.is_unavailable() {
                // A deployment error (a single-node client on a Redis Cluster…) or a record this
                // release cannot read: running requests unprotected would let duplicates through.
                tracing::error!(error = %e, source = ?std::error::Error::source(backend), "idempotency store {}; refusing the request", backend.label());
                return Decided::Respond(
                    backend
                        .problem(&STORE_CODES)
                        .into_response_if_grpc(self.grpc),
                );
            }
        }
        match self.policy.fail_mode {
            FailMode::Open
                if !matches!(e, StoreError::CapacityExceeded | StoreError::ScopeFull) =>
            {
                self.metrics.record(Event::FailOpen);
                tracing::warn!(error = %e, "idempotency store failed; running the request unprotected (fail-open)");
                Decided::RunUnprotected
            }
            _ => {
                tracing::error!(error = %e, "idempotency store failed; refusing the request (fail-closed)");
                Decided::Respond(
                    Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "idempotency_store_unavailable",
                        "Idempotency store unavailable",
                    )
                    .with_detail("the request was not run; retry it with the same Idempotency-Key")
                    .with_retry_after(std::time::Duration::from_secs(1))
                    .into_response_if_grpc(self.grpc),
                )
            }
        }
    }
}

/// The codes of a request body that could not be read.
const BODY_CODES: BodyCodes = BodyCodes {
    name: "request",
    too_large: "request_body_too_large",
    timeout: "request_body_timeout",
    unreadable: "request_body_unreadable",
};

/// The codes of the store's failures (`idempotency_store_unavailable` is answered by the fail
/// mode's own problem, which tells the client to retry with the same key).
pub(crate) const STORE_CODES: retry_safe_core::BackendCodes = retry_safe_core::BackendCodes {
    name: "idempotency store",
    unavailable: "idempotency_store_unavailable",
    misconfigured: "idempotency_store_misconfigured",
    corrupt: "idempotency_record_corrupt",
};

// Built once per decided request and moved straight out: boxing would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum Decided<RB> {
    Respond(Response<IdempotencyBody<RB>>),
    RunUnprotected,
}

fn replay<RB>(stored: StoredResponse) -> Response<IdempotencyBody<RB>> {
    let trailers = stored.trailer_map();
    let mut res: Response<IdempotencyBody<RB>> = stored.to_response();
    if trailers.is_some() {
        *res.body_mut() = IdempotencyBody::buffered(stored.body.clone(), trailers);
    }
    res.headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    res
}

fn not_stored_marker(status: StatusCode, grpc: bool) -> StoredResponse {
    let problem = Problem::new(
        StatusCode::CONFLICT,
        "idempotency_response_not_stored",
        "The original response was too large to keep",
    )
    .with_detail(format!(
        "the request with this Idempotency-Key already ran and answered {}; it was not run again",
        status.as_u16()
    ));
    // Rendered for the transport of the request that ran: problem+json, or a gRPC `ABORTED`.
    let res: Response<Bytes> = problem.into_response_if_grpc(grpc);
    StoredResponse {
        status: res.status().as_u16(),
        headers: StoredResponse::fields_of(res.headers()),
        body: res.into_body(),
        trailers: Vec::new(),
    }
}

/// Renews the lease of `fence` every third of `lease` until it is lost (then returns; the
/// attempt's completion will be refused as stale). Store outages are logged and retried at the
/// next beat.
async fn heartbeat<S: IdempotencyStore>(
    store: Arc<S>,
    scope: String,
    key: IdempotencyKey,
    fence: Fence,
    lease: std::time::Duration,
) {
    let every = (lease / 3).max(std::time::Duration::from_millis(10));
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        beat.tick().await;
        match store.renew(&scope, &key, fence, lease).await {
            Ok(()) => {}
            Err(StoreError::StaleFence { .. }) => {
                tracing::warn!(key = key.as_str(), %fence, "the attempt lost its idempotency lease while running");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "renewing an idempotency lease failed; retrying at the next beat");
            }
        }
    }
}

/// Releases the key unless disarmed; on drop (a cancelled request) it releases in the background.
struct ReleaseOnDrop<S: IdempotencyStore> {
    store: Arc<S>,
    scope: String,
    key: IdempotencyKey,
    fence: Fence,
    metrics: Arc<Metrics>,
    armed: bool,
}

impl<S: IdempotencyStore> ReleaseOnDrop<S> {
    async fn release(&mut self) {
        self.armed = false;
        release(
            &*self.store,
            &self.scope,
            &self.key,
            self.fence,
            &self.metrics,
        )
        .await;
    }
}

async fn release<S: IdempotencyStore>(
    store: &S,
    scope: &str,
    key: &IdempotencyKey,
    fence: Fence,
    metrics: &Metrics,
) {
    match store.release(scope, key, fence).await {
        Ok(()) => metrics.record(Event::Released),
        Err(e) => {
            metrics.record(Event::StoreError);
            tracing::warn!(error = %e, %key, "releasing the idempotency key failed; it frees when its lease runs out");
        }
    }
}

impl<S: IdempotencyStore> Drop for ReleaseOnDrop<S> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(key = %self.key, "request cancelled outside a runtime; the key frees when its lease runs out");
            return;
        };
        let (store, scope, key, fence, metrics) = (
            self.store.clone(),
            std::mem::take(&mut self.scope),
            self.key.clone(),
            self.fence,
            self.metrics.clone(),
        );
        handle.spawn(async move { release(&*store, &scope, &key, fence, &metrics).await });
    }
}
