//! The sending side: signature headers for an outgoing webhook.

use crate::header;
use crate::verify::{hmac_of, keyed, HmacSha256};
use crate::{Clock, SystemClock};
use crate::{Scheme, Secret, SigningKey};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::Mac;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::fmt;
use std::sync::Arc;

/// Why headers could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The event id is empty or has characters other than visible ASCII.
    #[error("a webhook id must be 1 or more visible ASCII characters")]
    InvalidId,
}

/// Signs outgoing webhooks with one or more HMAC secrets and, for Standard Webhooks, Ed25519
/// signing keys (`v1a`).
///
/// ```
/// use webhook_sig::{ManualClock, Scheme, Secret, Signer, Verifier};
///
/// let clock = ManualClock::at_unix_secs(1_700_000_000);
/// let secret = Secret::from_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
/// let signer = Signer::new(Scheme::StandardWebhooks, &secret).with_clock(clock.clone());
/// let body = br#"{"type":"order.paid","order":42}"#;
///
/// let headers = signer.headers("evt_42", body).unwrap();
/// assert_eq!(headers["webhook-timestamp"], "1700000000");
///
/// let verifier = Verifier::new(Scheme::StandardWebhooks, secret).with_clock(clock);
/// assert!(verifier.verify(&headers, body).is_ok());
/// ```
#[derive(Clone)]
pub struct Signer {
    scheme: Scheme,
    /// The first key, then the keys added for a rotation.
    keys: Vec<HmacSha256>,
    /// Ed25519 keys: one `v1a` entry each (Standard Webhooks only).
    signing_keys: Vec<SigningKey>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("scheme", &self.scheme)
            .field("secret", &"<redacted>")
            .field("signing_keys", &self.signing_keys.len())
            .finish_non_exhaustive()
    }
}

/// The key `scheme` signs with; a text that is no key of it (not base64, for Standard Webhooks)
/// signs with its bytes, as it always did.
fn signing_key(secret: &Secret, scheme: Scheme) -> HmacSha256 {
    keyed(secret, scheme).unwrap_or_else(|| hmac_of(secret.raw()))
}

impl Signer {
    /// A signer of `scheme` with `secret`, on the system clock.
    pub fn new(scheme: Scheme, secret: &Secret) -> Self {
        Self {
            scheme,
            keys: vec![signing_key(secret, scheme)],
            signing_keys: Vec::new(),
            clock: Arc::new(SystemClock::new()),
        }
    }

    /// A Standard Webhooks signer whose signatures are `v1a` (Ed25519) with `key`, on the
    /// system clock. Receivers verify with [`SigningKey::public_key`] only.
    pub fn ed25519(key: &SigningKey) -> Self {
        Self {
            scheme: Scheme::StandardWebhooks,
            keys: Vec::new(),
            signing_keys: vec![key.clone()],
            clock: Arc::new(SystemClock::new()),
        }
    }

    /// Also signs with the Ed25519 `key` (a `v1a` entry after the others), for a rotation
    /// across keys or across `v1` and `v1a`: receivers that trust any one of the keys accept
    /// the delivery. Only Standard Webhooks headers carry `v1a` entries; the Stripe- and
    /// GitHub-style signers ignore Ed25519 keys.
    pub fn with_signing_key(mut self, key: &SigningKey) -> Self {
        self.signing_keys.push(key.clone());
        self
    }

    /// The scheme this signer signs for.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Reads the time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The value of the scheme's signature header for this content:
    /// `v1,<base64>` (Standard Webhooks), `t=<timestamp>,v1=<hex>` (Stripe-style) or
    /// `sha256=<hex>` (GitHub-style; `id` and `timestamp` are not signed there); with several
    /// secrets ([`with_secret`](Self::with_secret)) one signature per secret.
    pub fn signature(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mac = |key: &HmacSha256| {
            let mut mac = key.clone();
            match self.scheme {
                Scheme::StandardWebhooks => {
                    mac.update(id.as_bytes());
                    mac.update(b".");
                    mac.update(timestamp.to_string().as_bytes());
                    mac.update(b".");
                }
                Scheme::Stripe => {
                    mac.update(timestamp.to_string().as_bytes());
                    mac.update(b".");
                }
                _ => {}
            }
            mac.update(body);
            mac.finalize().into_bytes()
        };
        match self.scheme {
            Scheme::StandardWebhooks => {
                let mut entries: Vec<String> = self
                    .keys
                    .iter()
                    .map(|k| format!("v1,{}", STANDARD.encode(mac(k))))
                    .collect();
                if !self.signing_keys.is_empty() {
                    let ts = timestamp.to_string();
                    let content = crate::asymmetric::signed_content(id, ts.as_bytes(), body);
                    entries.extend(
                        self.signing_keys
                            .iter()
                            .map(|k| format!("v1a,{}", STANDARD.encode(k.sign(&content)))),
                    );
                }
                entries.join(" ")
            }
            Scheme::Stripe => {
                let mut out = format!("t={timestamp}");
                for k in &self.keys {
                    out.push_str(",v1=");
                    out.push_str(&hex::encode(mac(k)));
                }
                out
            }
            // GitHub's header carries one signature: the first secret's (a signer always has
            // one: only Standard Webhooks signers are made from an Ed25519 key alone).
            _ => match self.keys.first() {
                Some(key) => format!("sha256={}", hex::encode(mac(key))),
                None => String::new(),
            },
        }
    }

    /// Also signs with `secret` (a key rotation): Standard Webhooks and Stripe-style headers then
    /// carry one signature per secret, so receivers that know either secret accept the delivery.
    /// GitHub-style headers carry one signature only (the first secret's).
    pub fn with_secret(mut self, secret: &Secret) -> Self {
        self.keys.push(signing_key(secret, self.scheme));
        self
    }

    /// The headers that sign `body` as event `id`, timestamped now by the clock.
    ///
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`. Stripe-style:
    /// `Stripe-Signature` (the id belongs in the body there and is not sent). GitHub-style:
    /// `X-Hub-Signature-256` and `X-GitHub-Delivery`. The id must be visible ASCII where it is
    /// sent.
    pub fn headers(&self, id: &str, body: &[u8]) -> Result<HeaderMap, SignError> {
        self.headers_at(id, self.clock.unix_secs(), body)
    }

    /// The headers of [`Signer::headers`] for the Unix time `timestamp`.
    pub fn headers_at(
        &self,
        id: &str,
        timestamp: u64,
        body: &[u8],
    ) -> Result<HeaderMap, SignError> {
        let id_value = || {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(SignError::InvalidId);
            }
            HeaderValue::from_str(id).map_err(|_| SignError::InvalidId)
        };
        let signature = self.signature(id, timestamp, body);
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: HeaderValue| {
            headers.insert(HeaderName::from_static(name), value);
        };
        // The signature strings are base64, hex, digits and `,=` only: always valid values.
        let signature = HeaderValue::from_str(&signature).map_err(|_| SignError::InvalidId)?;
        match self.scheme {
            Scheme::StandardWebhooks => {
                put(header::WEBHOOK_ID, id_value()?);
                put(header::WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
                put(header::WEBHOOK_SIGNATURE, signature);
            }
            Scheme::Stripe => put(header::STRIPE_SIGNATURE, signature),
            Scheme::GitHub => {
                put(header::GITHUB_DELIVERY, id_value()?);
                put(header::HUB_SIGNATURE_256, signature);
            }
        }
        Ok(headers)
    }
}
