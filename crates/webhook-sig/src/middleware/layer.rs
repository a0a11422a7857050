use super::service::WebhookService;
use crate::{ReplayGuard, Verified, Verifier};
use idem_core::MemoryStore;
use std::fmt;
use std::sync::Arc;
use tower_layer::Layer;

/// The default cap on a webhook body: 1 MiB.
pub(crate) const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// Finds the event id of a verified webhook for the replay guard.
pub type EventIdFn = dyn Fn(&Verified, &[u8]) -> Option<String> + Send + Sync;

/// Verifies every request before the inner service sees it.
///
/// Runs on tokio with its timer enabled (the body deadline is a tokio timer).
///
/// The layer buffers the body (up to [`max_body`](Self::max_body), else 413), verifies it with
/// its [`Verifier`] (else 401 with a problem+json body that names the failure and echoes nothing
/// of the request), optionally claims the event id with a [`ReplayGuard`] (a duplicate of an
/// event already handled → the first handling's answer with `Webhook-Replayed: true`, a
/// concurrent delivery → 409 + `Retry-After: 1`, the store down → 503), and
/// then calls the inner service with the same bytes and a [`VerifiedWebhook`](super::VerifiedWebhook)
/// extension. A claimed id is marked processed when the inner service answers 2xx and released
/// otherwise (and on panic or cancellation), so the sender's retry runs.
///
/// | outcome | response |
/// |---|---|
/// | verified, new event | the inner service's response |
/// | duplicate of an event already handled | its first answer + `Webhook-Replayed: true` |
/// | body over the limit (declared or sent) | 413 `webhook_body_too_large` |
/// | body slower than the body timeout | 408 `webhook_body_timeout` |
/// | body ended with an error | 400 `webhook_body_unreadable` |
/// | signature header missing / malformed | 401 `webhook_signature_missing` / `webhook_signature_malformed` |
/// | timestamp unreadable, too old, too new | 401 `webhook_timestamp_invalid` / `webhook_timestamp_too_old` / `webhook_timestamp_too_new` |
/// | no signature matches | 401 `webhook_signature_invalid` |
/// | event id already handled (replays not acknowledged) | 409 `webhook_replayed` |
/// | the same event being handled by another delivery | 409 `webhook_in_flight` + `Retry-After` |
/// | replay store unreachable | 503 `webhook_replay_store_unavailable` |
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use idem_core::MemoryStore;
/// use tower::{ServiceBuilder, ServiceExt};
/// use webhook_sig::{ReplayGuard, Scheme, Secret, Signer, Verifier, VerifiedWebhook, WebhookLayer};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let secret = Secret::from_text("It's a Secret to Everybody").unwrap();
/// let receiver = ServiceBuilder::new()
///     .layer(
///         WebhookLayer::new(Verifier::new(Scheme::GitHub, secret.clone()))
///             .replay_guard(ReplayGuard::new(MemoryStore::new())),
///     )
///     .service_fn(|req: Request<Full<Bytes>>| async move {
///         let hook = req.extensions().get::<VerifiedWebhook>().unwrap();
///         assert_eq!(hook.payload, "Hello, World!");
///         Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
///     });
///
/// let headers = Signer::new(Scheme::GitHub, &secret).headers("delivery-1", b"Hello, World!").unwrap();
/// let delivery = || {
///     let mut req = Request::post("/hooks/github").body(Full::new(Bytes::from_static(b"Hello, World!"))).unwrap();
///     req.headers_mut().extend(headers.clone());
///     req
/// };
/// assert_eq!(receiver.clone().oneshot(delivery()).await.unwrap().status(), StatusCode::OK);
/// let again = receiver.clone().oneshot(delivery()).await.unwrap();
/// assert_eq!(again.status(), StatusCode::OK); // acknowledged, the handler did not run again
/// assert_eq!(again.headers()["webhook-replayed"], "true");
/// # });
/// ```
///
/// The receiving side as a tower layer: buffer, verify, dedupe, then hand the handler the
/// verified payload.
pub struct WebhookLayer<S = MemoryStore> {
    pub(crate) shared: Arc<Shared<S>>,
}

pub(crate) struct Shared<S> {
    pub(crate) verifier: Verifier,
    pub(crate) max_body: usize,
    pub(crate) body_timeout: std::time::Duration,
    pub(crate) replay: Option<ReplayGuard<S>>,
    pub(crate) acknowledge_replays: bool,
    pub(crate) event_id: Option<Arc<EventIdFn>>,
}

impl<S> Clone for WebhookLayer<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for WebhookLayer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookLayer")
            .field("verifier", &self.shared.verifier)
            .field("max_body", &self.shared.max_body)
            .field("replay", &self.shared.replay)
            .field("acknowledge_replays", &self.shared.acknowledge_replays)
            .finish_non_exhaustive()
    }
}

/// The default [`WebhookLayer::body_timeout`].
pub(crate) const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl WebhookLayer<MemoryStore> {
    /// A layer that verifies with `verifier`, without replay protection beyond the timestamp
    /// window (add it with [`replay_guard`](Self::replay_guard)).
    pub fn new(verifier: Verifier) -> Self {
        Self {
            shared: Arc::new(Shared {
                verifier,
                max_body: DEFAULT_MAX_BODY,
                body_timeout: DEFAULT_BODY_TIMEOUT,
                replay: None,
                acknowledge_replays: true,
                event_id: None,
            }),
        }
    }
}

impl<S> WebhookLayer<S> {
    fn edit(self, f: impl FnOnce(&mut Shared<S>)) -> Self {
        let mut shared = match Arc::try_unwrap(self.shared) {
            Ok(shared) => shared,
            Err(arc) => Shared {
                verifier: arc.verifier.clone(),
                max_body: arc.max_body,
                body_timeout: arc.body_timeout,
                replay: arc.replay.clone(),
                acknowledge_replays: arc.acknowledge_replays,
                event_id: arc.event_id.clone(),
            },
        };
        f(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The largest body accepted, in bytes (default 1 MiB); larger ones get 413.
    pub fn max_body(self, bytes: usize) -> Self {
        self.edit(|s| s.max_body = bytes)
    }

    /// How long reading the whole body may take (default 10 s); a slower body gets 408
    /// `webhook_body_timeout`, so a client trickling bytes cannot hold the request (and every
    /// slot the layers outside have given it) for ever.
    pub fn body_timeout(self, timeout: std::time::Duration) -> Self {
        self.edit(|s| s.body_timeout = timeout)
    }

    /// Refuses event ids already processed, using `guard`'s store.
    ///
    /// The event id is the scheme's id header (`webhook-id`, `X-GitHub-Delivery`), or what
    /// [`event_id`](Self::event_id) extracts; without either (Stripe-style), the SHA-256 of the
    /// signed timestamp and body, which refuses a byte-identical replay.
    pub fn replay_guard<S2>(self, guard: ReplayGuard<S2>) -> WebhookLayer<S2> {
        let shared = match Arc::try_unwrap(self.shared) {
            Ok(s) => (
                s.verifier,
                s.max_body,
                s.body_timeout,
                s.acknowledge_replays,
                s.event_id,
            ),
            Err(arc) => (
                arc.verifier.clone(),
                arc.max_body,
                arc.body_timeout,
                arc.acknowledge_replays,
                arc.event_id.clone(),
            ),
        };
        WebhookLayer {
            shared: Arc::new(Shared {
                verifier: shared.0,
                max_body: shared.1,
                body_timeout: shared.2,
                replay: Some(guard),
                acknowledge_replays: shared.3,
                event_id: shared.4,
            }),
        }
    }

    /// How to find the event id for the replay guard, e.g. the `id` member of a Stripe-style JSON
    /// body. Returning `None` falls back to the default of [`replay_guard`](Self::replay_guard).
    pub fn event_id(
        self,
        f: impl Fn(&Verified, &[u8]) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.edit(|s| s.event_id = Some(Arc::new(f)))
    }

    /// Answers a duplicate of an event already handled with the first handling's answer (its
    /// status, content type and body, up to 64 KiB) and `Webhook-Replayed: true`, without running
    /// the handler — senders retry every non-2xx, so a 409 would make them retry for days. Default
    /// on; off answers 409 `webhook_replayed`.
    pub fn acknowledge_replays(self, yes: bool) -> Self {
        self.edit(|s| s.acknowledge_replays = yes)
    }
}

impl<Inner, S> Layer<Inner> for WebhookLayer<S> {
    type Service = WebhookService<Inner, S>;

    fn layer(&self, inner: Inner) -> Self::Service {
        WebhookService {
            inner,
            shared: self.shared.clone(),
        }
    }
}
