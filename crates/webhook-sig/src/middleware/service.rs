use super::future::WebhookFuture;
use super::layer::Shared;
use super::problem;
use super::VerifiedWebhook;
use crate::{Claim, ReplayTicket, Verified, VerifyError};
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use idem_core::IdempotencyStore;
use idem_core::StoredResponse;
use retry_safe_core::body::{declared_length, read_body, BodyCodes, BodyLimits};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

use retry_safe_core::BoxError;

/// The header on a replay acknowledged with 200 (see
/// [`WebhookLayer::acknowledge_replays`](super::WebhookLayer::acknowledge_replays)).
pub const WEBHOOK_REPLAYED: &str = "webhook-replayed";

/// The service made by [`WebhookLayer`](super::WebhookLayer).
pub struct WebhookService<Inner, S> {
    pub(crate) inner: Inner,
    pub(crate) shared: Arc<Shared<S>>,
}

impl<Inner, S> WebhookService<Inner, S> {
    retry_safe_core::inner_service!(Inner);
}

impl<Inner: Clone, S> Clone for WebhookService<Inner, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<Inner: fmt::Debug, S> fmt::Debug for WebhookService<Inner, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookService")
            .field("inner", &self.inner)
            .field("verifier", &self.shared.verifier)
            .finish_non_exhaustive()
    }
}

impl<Inner, S, B, RB> Service<Request<B>> for WebhookService<Inner, S>
where
    Inner: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    Inner::Future: Send + 'static,
    Inner::Error: Send + 'static,
    S: IdempotencyStore,
    B: Body + From<Bytes> + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = Inner::Error;
    type Future = WebhookFuture<Inner::Future, RB, Inner::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Deliveries are POSTs (Standard Webhooks, Stripe, GitHub). Any other method is not a
        // delivery: the inner service answers it (the router's 405), unverified and untouched.
        if req.method() != http::Method::POST {
            return WebhookFuture::pass_through(self.inner.call(req));
        }
        // The clone that was driven to readiness serves this delivery once it is verified; a
        // fresh clone stays here for the next `poll_ready`.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        WebhookFuture::delivery(Box::pin(serve(inner, self.shared.clone(), req)))
    }
}

async fn serve<Inner, S, B, RB>(
    mut inner: Inner,
    shared: Arc<Shared<S>>,
    req: Request<B>,
) -> Result<Response<RB>, Inner::Error>
where
    Inner: Service<Request<B>, Response = Response<RB>>,
    S: IdempotencyStore,
    B: Body + From<Bytes>,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + From<Bytes>,
    RB::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    let limits = BodyLimits::new(shared.max_body, shared.body_timeout);
    let bytes = match read_body(body, declared_length(&parts.headers), limits).await {
        Ok(bytes) => bytes,
        Err(e) => {
            record("rejected", e.code(&BODY_CODES));
            return Ok(e.problem(&BODY_CODES).into_response());
        }
    };
    let verified = match shared.verifier.verify(&parts.headers, &bytes) {
        Ok(verified) => verified,
        Err(e) => return Ok(problem::refused(&e)),
    };
    let ticket = match claim(&shared, &verified, &bytes).await {
        Ok(ticket) => ticket,
        Err(res) => return Ok(res),
    };
    record("verified", "");
    parts
        .extensions
        .insert(VerifiedWebhook::new(verified, bytes.clone()));
    let result = inner.call(Request::from_parts(parts, B::from(bytes))).await;
    let Some(ticket) = ticket else {
        return result;
    };
    match result {
        Ok(res) if res.status().is_success() => Ok(keep_answer(ticket, res).await),
        other => {
            settle(ticket, false).await;
            other
        }
    }
}

/// The replay guard's claim on the event: a ticket to settle after the handler, none without a
/// guard, or the answer instead of running it (the first answer of a duplicate, a refusal).
async fn claim<S: IdempotencyStore, RB: From<Bytes>>(
    shared: &Shared<S>,
    verified: &Verified,
    bytes: &Bytes,
) -> Result<Option<ReplayTicket<S>>, Response<RB>> {
    let Some(guard) = &shared.replay else {
        return Ok(None);
    };
    let id = event_id(shared, verified, bytes);
    match guard.claim(&id, bytes).await {
        Ok(Claim::New(ticket)) => Ok(Some(ticket)),
        Ok(Claim::Processed(first)) if shared.acknowledge_replays => {
            // A duplicate of an event already handled: its first answer, the handler does not
            // run again.
            record("replay_acknowledged", "");
            let mut res = idem_core::handler_completed::<RB>(&first);
            res.extensions_mut()
                .remove::<idem_core::CompletedByHandler>();
            res.headers_mut()
                .insert(WEBHOOK_REPLAYED, HeaderValue::from_static("true"));
            Err(res)
        }
        Ok(_) => Err(problem::refused(&VerifyError::Replayed)),
        Err(e) => Err(problem::refused(&e)),
    }
}

/// Settles the event as processed with the handler's answer (bounded) for its duplicates, and
/// sends that answer on.
async fn keep_answer<S, RB>(ticket: ReplayTicket<S>, res: Response<RB>) -> Response<RB>
where
    S: IdempotencyStore,
    RB: Body<Data = Bytes> + From<Bytes>,
{
    let (parts, body) = res.into_parts();
    let small = body
        .size_hint()
        .upper()
        .is_some_and(|n| n <= MAX_KEPT_RESPONSE as u64);
    let body = if small {
        body.collect().await.ok().map(|c| c.to_bytes())
    } else {
        None
    };
    let Some(body) = body else {
        // Too large or unreadable: the event counts as processed, with an empty answer.
        if let Err(e) = ticket.processed().await {
            tracing::warn!(error = %e, "settling a webhook event id failed");
        }
        let mut res = Response::from_parts(parts, RB::from(Bytes::new()));
        res.headers_mut().remove(http::header::CONTENT_LENGTH);
        return res;
    };
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .get_all(http::header::CONTENT_TYPE)
            .iter()
            .map(|v| StoredResponse::field(&http::header::CONTENT_TYPE, v))
            .collect(),
        body: body.clone(),
        trailers: Vec::new(),
    };
    if let Err(e) = ticket.processed_with(&stored).await {
        tracing::warn!(error = %e, "settling a webhook event id failed");
    }
    Response::from_parts(parts, RB::from(body))
}

/// The largest handler answer kept for a webhook's duplicates.
const MAX_KEPT_RESPONSE: usize = 64 * 1024;

/// One verification to the `metrics` facade (feature `metrics`):
/// `webhook_verifications_total{outcome, reason}`.
#[inline]
#[allow(unused_variables)]
pub(crate) fn record(outcome: &'static str, reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("webhook_verifications_total", "outcome" => outcome, "reason" => reason)
        .increment(1);
}

async fn settle<S: IdempotencyStore>(ticket: ReplayTicket<S>, done: bool) {
    let outcome = if done {
        ticket.processed().await
    } else {
        ticket.failed().await
    };
    if let Err(e) = outcome {
        tracing::warn!(error = %e, processed = done, "settling a webhook event id failed");
    }
}

fn event_id<S>(shared: &Shared<S>, verified: &Verified, body: &[u8]) -> String {
    if let Some(id) = shared.event_id.as_ref().and_then(|f| f(verified, body)) {
        return id;
    }
    if let Some(id) = &verified.id {
        return id.clone();
    }
    let mut h = Sha256::new();
    h.update(verified.timestamp.unwrap_or(0).to_string());
    h.update(b".");
    h.update(body);
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// The codes of a delivery whose body could not be read.
const BODY_CODES: BodyCodes = BodyCodes {
    name: "webhook",
    too_large: "webhook_body_too_large",
    timeout: "webhook_body_timeout",
    unreadable: "webhook_body_unreadable",
};
