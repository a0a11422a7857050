//! Sign webhook payloads with HMAC-SHA256 and verify them before trusting the event: forged
//! events fail the signature, stale ones the timestamp window, replayed ones the replay guard.
//!
//! ```
//! use webhook_sig::{ManualClock, Scheme, Secret, Signer, Verifier, VerifyError};
//!
//! let clock = ManualClock::at_unix_secs(1_700_000_000);
//! let secret = Secret::from_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
//! let body = br#"{"type":"payment.succeeded","amount":1999}"#;
//!
//! // Sender: sign the raw body.
//! let headers = Signer::new(Scheme::StandardWebhooks, &secret)
//!     .with_clock(clock.clone())
//!     .headers("msg_2Lh9KRb", body)
//!     .unwrap();
//!
//! // Receiver: verify the raw body, before parsing it.
//! let verifier = Verifier::new(Scheme::StandardWebhooks, secret).with_clock(clock.clone());
//! assert!(verifier.verify(&headers, body).is_ok());
//!
//! // A forged body fails; so does the genuine one once it is older than the tolerance.
//! assert_eq!(
//!     verifier.verify(&headers, br#"{"type":"payment.succeeded","amount":1}"#),
//!     Err(VerifyError::NoMatchingSignature)
//! );
//! clock.advance(std::time::Duration::from_secs(301));
//! assert_eq!(verifier.verify(&headers, body), Err(VerifyError::TooOld { age_secs: 301 }));
//! ```
//!
//! The pieces:
//! - [`Scheme`]: Standard Webhooks (`webhook-id`/`webhook-timestamp`/`webhook-signature`),
//!   Stripe-style (`Stripe-Signature: t=…,v1=…`) and GitHub-style (`X-Hub-Signature-256`).
//! - Asymmetric `v1a` signatures of Standard Webhooks: a [`SigningKey`] (`whsk_…`) signs, receivers
//!   trust its [`PublicKey`] (`whpk_…`) — [`Signer::ed25519`], [`Verifier::ed25519`], mixed
//!   `v1`/`v1a` headers during a rotation.
//! - [`Secret`]: key bytes, redacted in `Debug`. [`Verifier`] accepts several secrets (rotation)
//!   and several signatures per header, compares in constant time and checks the timestamp
//!   against an injected [`Clock`]. [`Signer`] makes the headers of an outgoing webhook.
//! - [`ReplayGuard`]: each event id processed at most once, on any
//!   [`idem_core::IdempotencyStore`] (memory, Redis, PostgreSQL).
//! - [`WebhookLayer`] (feature `tower`, on by default): the receiving side for tower, axum and
//!   hyper: buffer, verify, dedupe, and pass the handler a [`VerifiedWebhook`].
//! - [`header`]: the header parsers, safe on any input.
//!
//! # With axum
//! ```
//! use axum::{routing::post, Extension, Router};
//! use idem_core::MemoryStore;
//! use webhook_sig::{ReplayGuard, Scheme, Secret, Verifier, VerifiedWebhook, WebhookLayer};
//!
//! async fn psp_event(Extension(hook): Extension<VerifiedWebhook>) -> &'static str {
//!     // `hook.payload` is the verified raw body; a forged or replayed event never gets here.
//!     let _ = hook.payload;
//!     "ok"
//! }
//! let secret = Secret::from_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
//! let webhooks = WebhookLayer::new(Verifier::new(Scheme::StandardWebhooks, secret))
//!     .replay_guard(ReplayGuard::new(MemoryStore::new()));
//! let app: Router = Router::new().route("/webhooks/psp", post(psp_event)).layer(webhooks);
//! ```
//!
//! # Features
//! | feature | default | adds |
//! |---|---|---|
//! | `tower` | yes | [`WebhookLayer`] and [`VerifiedWebhook`] |
//! | `metrics` | no | `webhook_verifications_total` through the `metrics` facade |
//!
#![cfg_attr(feature = "tower", doc = "[`WebhookLayer`]: crate::WebhookLayer")]
#![cfg_attr(not(feature = "tower"), doc = "[`WebhookLayer`]: crate#features")]
#![cfg_attr(feature = "tower", doc = "[`VerifiedWebhook`]: crate::VerifiedWebhook")]
#![cfg_attr(not(feature = "tower"), doc = "[`VerifiedWebhook`]: crate#features")]
#![warn(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod asymmetric;
mod error;
pub mod header;
#[cfg(feature = "tower")]
mod middleware;
mod replay;
mod secret;
mod sign;
mod verify;

pub use asymmetric::{PublicKey, SigningKey};
pub use error::VerifyError;
#[cfg(feature = "tower")]
pub use middleware::{
    EventIdFn, VerifiedWebhook, WebhookFuture, WebhookLayer, WebhookService, WEBHOOK_REPLAYED,
};
pub use replay::{Claim, ReplayGuard, ReplayTicket};
pub use retry_safe_core::{Clock, ManualClock, SystemClock};
pub use secret::{Secret, SecretError};
pub use sign::{SignError, Signer};
pub use verify::{MatchedKey, Verified, Verifier};

/// A webhook signature scheme. Every scheme signs with HMAC-SHA256 over the raw body bytes;
/// Standard Webhooks also carries Ed25519 (`v1a`) signatures ([`SigningKey`], [`PublicKey`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// [Standard Webhooks](https://www.standardwebhooks.com/): HMAC over
    /// `{webhook-id}.{webhook-timestamp}.{body}`, sent as space-separated `v1,<base64>` entries
    /// of `webhook-signature`; secrets are `whsec_<base64>` ([`Secret::from_standard`]).
    StandardWebhooks,
    /// Stripe-style: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, HMAC over `{t}.{body}`;
    /// the secret string is the key ([`Secret::from_text`]).
    Stripe,
    /// GitHub-style: `X-Hub-Signature-256: sha256=<hex>`, HMAC over the body alone (no timestamp:
    /// add a [`ReplayGuard`] keyed by `X-GitHub-Delivery`); the secret string is the key.
    GitHub,
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
