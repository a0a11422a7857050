//! The sending side of webhooks: events queued in an outbox (in the business transaction, on
//! PostgreSQL), delivered by dispatchers that sign every attempt, time out, retry on a schedule
//! with jitter, honour `Retry-After`, stop at `410 Gone` and refuse to call internal addresses.
//!
//! ```
//! use axum::{routing::post, Router};
//! use std::time::Duration;
//! use webhook_delivery::{AddressPolicy, Dispatcher, Endpoint, WebhookEvent, MemoryOutbox, Sender, EventState, WebhookOutbox};
//! use webhook_sig::{Scheme, Secret, Signer, Verifier, WebhookLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = Secret::from_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//!
//! // A receiver on loopback that verifies what it gets.
//! let receiver = Router::new()
//!     .route("/hooks", post(|| async { "ok" }))
//!     .layer(WebhookLayer::new(Verifier::new(Scheme::StandardWebhooks, secret.clone())));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("http://{}/hooks", listener.local_addr()?);
//! tokio::spawn(async move { axum::serve(listener, receiver).await });
//!
//! // The sender: loopback is refused by default, so allow it for this example.
//! let sender = Sender::builder()
//!     .address_policy(AddressPolicy::default().allow("127.0.0.0/8".parse()?))
//!     .timeout(Duration::from_secs(5))
//!     .build()?;
//! let outbox = MemoryOutbox::new();
//! let dispatcher = Dispatcher::new(outbox.clone(), sender)
//!     .endpoint(Endpoint::new("orders-hook", &url, Signer::new(Scheme::StandardWebhooks, &secret))?);
//!
//! outbox.enqueue_webhook(&WebhookEvent::new("orders-hook", "evt_1", r#"{"type":"order.created"}"#)?).await?;
//! let round = dispatcher.run_once().await?;
//! assert_eq!(round.delivered, 1);
//! let status = outbox.webhook_status("orders-hook", "evt_1").await?.unwrap();
//! assert_eq!(status.state, EventState::Delivered);
//! assert_eq!(status.attempts[0].attempt.status, Some(200));
//! # Ok(()) }
//! ```
//!
//! The pieces:
//! - [`WebhookEvent`] (the `webhook-id` receivers deduplicate on, the payload) and [`Endpoint`] (a name,
//!   a URL, a [`webhook_sig::Signer`]: Standard Webhooks `v1`/`v1a`, Stripe- or GitHub-style).
//! - [`Sender`]: one attempt — signed afresh (same id, new timestamp), 10 s to connect and 15 s
//!   in all by default, redirects not followed (3xx is a failure), only 2xx a success, the
//!   [`AddressPolicy`] (SSRF guard) applied to every address connected to.
//! - [`Schedule`]: Svix's by default — at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, ±20 %
//!   jitter; a `Retry-After` on 429/502/503/504 pushes the next attempt later, never earlier.
//! - The outbox is the `outbox` crate's, one for webhooks and broker events: [`MemoryOutbox`]
//!   (embedded default, not durable) and `PostgresOutbox` (feature `postgres`: `enqueue_in` the
//!   caller's transaction, claims with `FOR UPDATE SKIP LOCKED` under a lease, every attempt
//!   recorded, exhausted events kept as dead letters to `replay`). An event's topic is its
//!   endpoint's name; [`WebhookOutbox`] adds the webhook operations to any outbox
//!   (`enqueue_webhook`, `webhook_status`, `enable_endpoint`).
//! - [`Dispatcher`]: N workers that claim, deliver and settle; a dispatcher that dies leaves its
//!   claims due again after the lease, so delivery is at-least-once — receivers deduplicate with
//!   `webhook_sig::ReplayGuard`, which answers a duplicate with the first answer.
//!
//! # Features
//! | feature | default | adds |
//! |---|---|---|
//! | `postgres` | no | `PostgresOutbox` (the `outbox` crate's, on sqlx with its migrations) |
//! | `metrics` | no | `webhook_deliveries_total{outcome}`, `webhook_outbox_lag_seconds` |
#![warn(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod dispatcher;
mod event;
pub mod guard;
mod sender;
mod webhook;

pub use ::outbox::Schedule;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use ::outbox::{sqlx, PostgresOutbox, SetupError};
pub use ::outbox::{Claimed, MemoryOutbox, Outbox, OutboxError, OutboxStats};
pub use dispatcher::{DispatchRound, Dispatcher};
pub use event::{Endpoint, EventError, WebhookEvent};
pub use guard::{AddressClass, AddressPolicy, Blocked};
pub use retry_safe_core::{Clock, ManualClock, SystemClock, TimeOffset};
pub use sender::{Delivery, DeliveryError, Sender, SenderBuilder, SenderError};
pub use webhook::{
    AttemptRecord, DeliveryAttempt, EventState, EventStatus, NextStep, WebhookOutbox,
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
