//! The verifier: checks a received webhook's headers and raw body.

use crate::header::{self, Tag, Tags};
use crate::{Clock, SystemClock};
use crate::{PublicKey, Scheme, Secret, VerifyError};
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName};
use sha2::Sha256;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use subtle::{Choice, ConstantTimeEq};

pub(crate) type HmacSha256 = Hmac<Sha256>;

const H_WEBHOOK_ID: HeaderName = HeaderName::from_static(header::WEBHOOK_ID);
const H_WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static(header::WEBHOOK_TIMESTAMP);
const H_WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static(header::WEBHOOK_SIGNATURE);
const H_SVIX_ID: HeaderName = HeaderName::from_static(header::SVIX_ID);
const H_SVIX_TIMESTAMP: HeaderName = HeaderName::from_static(header::SVIX_TIMESTAMP);
const H_SVIX_SIGNATURE: HeaderName = HeaderName::from_static(header::SVIX_SIGNATURE);
const H_STRIPE_SIGNATURE: HeaderName = HeaderName::from_static(header::STRIPE_SIGNATURE);
const H_HUB_SIGNATURE_256: HeaderName = HeaderName::from_static(header::HUB_SIGNATURE_256);
const H_GITHUB_DELIVERY: HeaderName = HeaderName::from_static(header::GITHUB_DELIVERY);

/// The default timestamp tolerance: 5 minutes, in the past and in the future.
pub(crate) const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// An HMAC-SHA256 state keyed with `secret` as `scheme` reads it, or `None` when the secret
/// cannot be a key of that scheme; cloning the state is cheaper than keying again.
pub(crate) fn keyed(secret: &Secret, scheme: Scheme) -> Option<HmacSha256> {
    Some(hmac_of(&secret.key_for(scheme)?))
}

/// An HMAC-SHA256 state keyed with `key`.
pub(crate) fn hmac_of(key: &[u8]) -> HmacSha256 {
    match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC accepts keys of every length (long keys are hashed first).
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    }
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// The scheme the webhook was verified under.
    pub scheme: Scheme,
    /// The event or delivery id: `webhook-id` (Standard Webhooks) or `X-GitHub-Delivery`
    /// (GitHub-style, when sent); Stripe-style webhooks carry theirs in the body.
    pub id: Option<String>,
    /// The signed timestamp (Unix seconds); GitHub-style webhooks have none.
    pub timestamp: Option<u64>,
    /// Which accepted secret (or, for a `v1a` signature, which trusted public key) matched, in
    /// the order they were given (0 = the first): during a rotation it tells when senders have
    /// moved to the new key. [`key`](Self::key) tells which kind it was.
    pub secret_index: usize,
    /// The key that matched: an HMAC secret (`v1`, Stripe-, GitHub-style) or an Ed25519 public
    /// key (`v1a`).
    pub key: MatchedKey,
}

/// Which of a verifier's keys accepted a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MatchedKey {
    /// The HMAC secret at this index (the first given is 0).
    Secret(usize),
    /// The trusted Ed25519 public key at this index (the first given is 0).
    PublicKey(usize),
}

/// Verifies webhooks of one [`Scheme`] against one or more accepted secrets.
///
/// Signatures are compared in constant time; the timestamp must lie within the tolerance
/// (5 minutes by default) on either side of the injected wall clock.
///
/// ```
/// use http::{HeaderMap, HeaderName};
/// use webhook_sig::{ManualClock, Scheme, Secret, Verifier, VerifyError};
///
/// // The example of the Standard Webhooks specification.
/// let secret = Secret::from_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
/// let verifier = Verifier::new(Scheme::StandardWebhooks, secret)
///     .with_clock(ManualClock::at_unix_secs(1_614_265_330));
/// let mut headers = HeaderMap::new();
/// headers.insert("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek".parse().unwrap());
/// headers.insert("webhook-timestamp", "1614265330".parse().unwrap());
/// headers.insert(
///     "webhook-signature",
///     "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".parse().unwrap(),
/// );
/// let body = br#"{"test": 2432232314}"#;
///
/// let verified = verifier.verify(&headers, body).unwrap();
/// assert_eq!(verified.id.as_deref(), Some("msg_p5jXN8AQM9LWM0D4loKWxJek"));
/// assert_eq!(
///     verifier.verify(&headers, br#"{"test": 2432232315}"#),
///     Err(VerifyError::NoMatchingSignature)
/// );
/// ```
#[derive(Clone)]
pub struct Verifier {
    scheme: Scheme,
    keys: Vec<HmacSha256>,
    /// Trusted Ed25519 keys (`v1a`, Standard Webhooks only).
    public_keys: Vec<PublicKey>,
    /// Whether a secret was read for another scheme (reported instead of a bare mismatch).
    misread: bool,
    tolerance_secs: u64,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .field("secrets", &format_args!("<{} redacted>", self.keys.len()))
            .field("public_keys", &self.public_keys)
            .field("tolerance_secs", &self.tolerance_secs)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier of `scheme` that accepts signatures made with `secret`, on the system clock,
    /// with the default tolerance.
    pub fn new(scheme: Scheme, secret: Secret) -> Self {
        let key = keyed(&secret, scheme);
        Self {
            scheme,
            misread: key.is_none(),
            keys: key.into_iter().collect(),
            public_keys: Vec::new(),
            tolerance_secs: DEFAULT_TOLERANCE.as_secs(),
            clock: Arc::new(SystemClock::new()),
        }
    }

    /// A Standard Webhooks verifier that accepts `v1a` (Ed25519) signatures of `public`'s signing
    /// key, on the system clock, with the default tolerance. Add more keys to the trust list with
    /// [`also_trust`](Self::also_trust) and HMAC secrets with [`also_accept`](Self::also_accept):
    /// one valid signature of any of them, `v1` or `v1a`, is enough.
    pub fn ed25519(public: PublicKey) -> Self {
        Self {
            scheme: Scheme::StandardWebhooks,
            keys: Vec::new(),
            public_keys: vec![public],
            misread: false,
            tolerance_secs: DEFAULT_TOLERANCE.as_secs(),
            clock: Arc::new(SystemClock::new()),
        }
    }

    /// Also trusts `v1a` signatures of `public`'s signing key (an Ed25519 key rotation, or a
    /// sender moving from `v1` to `v1a`). Only Standard Webhooks carries `v1a` signatures: other
    /// schemes never consult the trust list.
    pub fn also_trust(mut self, public: PublicKey) -> Self {
        self.public_keys.push(public);
        self
    }

    /// Also accepts signatures made with `secret` (secret rotation: keep the old secret until
    /// every sender signs with the new one). A header may carry several signatures; one match
    /// with any accepted secret is enough.
    pub fn also_accept(mut self, secret: Secret) -> Self {
        match keyed(&secret, self.scheme) {
            Some(key) => self.keys.push(key),
            None => self.misread = true,
        }
        self
    }

    /// How far a timestamp may be from now, in either direction (whole seconds; fractions are
    /// dropped). Default 5 minutes.
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance_secs = tolerance.as_secs();
        self
    }

    /// Reads the time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The scheme this verifier checks.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Verifies `body` (the raw bytes as received, before any parsing) against `headers`, at the
    /// clock's current time.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, VerifyError> {
        self.verify_at(headers, body, self.clock.unix_secs())
    }

    /// Verifies as [`Verifier::verify`] does, at the Unix time `now`.
    pub fn verify_at(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: u64,
    ) -> Result<Verified, VerifyError> {
        match self.scheme {
            Scheme::StandardWebhooks => self.verify_standard(headers, body, now),
            Scheme::Stripe => self.verify_stripe(headers, body, now),
            Scheme::GitHub => self.verify_github(headers, body),
        }
    }

    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature` (or Svix's
    /// `svix-*` names); `v1` HMAC signatures, and `v1a` Ed25519 ones for trusted keys.
    fn verify_standard(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: u64,
    ) -> Result<Verified, VerifyError> {
        // Svix sends the same scheme under `svix-*` names; the `webhook-*` ones win.
        let (h_id, h_ts, h_sig, n_id, n_ts, n_sig) = if !headers.contains_key(&H_WEBHOOK_SIGNATURE)
            && headers.contains_key(&H_SVIX_SIGNATURE)
        {
            (
                &H_SVIX_ID,
                &H_SVIX_TIMESTAMP,
                &H_SVIX_SIGNATURE,
                header::SVIX_ID,
                header::SVIX_TIMESTAMP,
                header::SVIX_SIGNATURE,
            )
        } else {
            (
                &H_WEBHOOK_ID,
                &H_WEBHOOK_TIMESTAMP,
                &H_WEBHOOK_SIGNATURE,
                header::WEBHOOK_ID,
                header::WEBHOOK_TIMESTAMP,
                header::WEBHOOK_SIGNATURE,
            )
        };
        let id = single(headers, h_id, n_id)?;
        let id = visible_ascii(id).ok_or(VerifyError::MalformedHeader(n_id))?;
        let ts = header::parse_timestamp(single(headers, h_ts, n_ts)?)?;
        let mut tags = Tags::default();
        let mut ed = Vec::new();
        all(headers, h_sig, n_sig, |v| {
            header::standard_into(v, &mut tags, &mut ed)
        })?;
        if ed.len() > header::MAX_V1A_ENTRIES {
            return Err(VerifyError::MalformedHeader(n_sig));
        }
        self.check_window(ts, now)?;
        let mut digits = itoa::Buffer::new();
        let ts_text = digits.format(ts).as_bytes();
        let mut key = self
            .matching(&tags, |mac| {
                mac.update(id.as_bytes());
                mac.update(b".");
                mac.update(ts_text);
                mac.update(b".");
                mac.update(body);
            })
            .map(MatchedKey::Secret);
        if key.is_none() && !ed.is_empty() && !self.public_keys.is_empty() {
            let content = crate::asymmetric::signed_content(id, ts_text, body);
            key = self
                .public_keys
                .iter()
                .position(|pk| ed.iter().any(|sig| pk.verifies(&content, sig)))
                .map(MatchedKey::PublicKey);
        }
        let key = key.ok_or_else(|| self.no_match())?;
        Ok(Verified {
            scheme: self.scheme,
            id: Some(id.to_owned()),
            timestamp: Some(ts),
            secret_index: key.index(),
            key,
        })
    }

    /// Stripe-style: `Stripe-Signature: t=…,v1=…`; every header line carries its own `t=`, and
    /// all must agree.
    fn verify_stripe(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: u64,
    ) -> Result<Verified, VerifyError> {
        let mut ts = None;
        let mut tags = Tags::default();
        all(
            headers,
            &H_STRIPE_SIGNATURE,
            header::STRIPE_SIGNATURE,
            |value| {
                let t = header::stripe_into(value, &mut tags)?;
                if ts.replace(t).is_some_and(|prev| prev != t) {
                    return Err(VerifyError::MalformedHeader(header::STRIPE_SIGNATURE));
                }
                Ok(())
            },
        )?;
        let ts = ts.ok_or(VerifyError::MissingHeader(header::STRIPE_SIGNATURE))?;
        self.check_window(ts, now)?;
        let mut digits = itoa::Buffer::new();
        let ts_text = digits.format(ts).as_bytes();
        let secret_index = self
            .matching(&tags, |mac| {
                mac.update(ts_text);
                mac.update(b".");
                mac.update(body);
            })
            .ok_or_else(|| self.no_match())?;
        Ok(Verified {
            scheme: self.scheme,
            id: None,
            timestamp: Some(ts),
            secret_index,
            key: MatchedKey::Secret(secret_index),
        })
    }

    /// GitHub-style: `X-Hub-Signature-256: sha256=<hex>` over the body; no timestamp.
    fn verify_github(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, VerifyError> {
        let mut tags = Tags::default();
        all(
            headers,
            &H_HUB_SIGNATURE_256,
            header::HUB_SIGNATURE_256,
            |v| header::parse_github(v).map(|t| tags.push(t)),
        )?;
        let secret_index = self
            .matching(&tags, |mac| mac.update(body))
            .ok_or_else(|| self.no_match())?;
        let id = match headers.get(&H_GITHUB_DELIVERY) {
            Some(v) => Some(
                visible_ascii(v.as_bytes())
                    .ok_or(VerifyError::MalformedHeader(header::GITHUB_DELIVERY))?
                    .to_owned(),
            ),
            None => None,
        };
        Ok(Verified {
            scheme: self.scheme,
            id,
            timestamp: None,
            secret_index,
            key: MatchedKey::Secret(secret_index),
        })
    }

    fn check_window(&self, ts: u64, now: u64) -> Result<(), VerifyError> {
        if now > ts && now - ts > self.tolerance_secs {
            return Err(VerifyError::TooOld { age_secs: now - ts });
        }
        if ts > now && ts - now > self.tolerance_secs {
            return Err(VerifyError::TooNew {
                ahead_secs: ts - now,
            });
        }
        Ok(())
    }

    /// Index of the first secret whose MAC over the content equals one of `tags`.
    fn matching(&self, tags: &Tags, feed: impl Fn(&mut HmacSha256)) -> Option<usize> {
        if tags.is_empty() {
            return None;
        }
        for (index, key) in self.keys.iter().enumerate() {
            let mut mac = key.clone();
            feed(&mut mac);
            let expected: Tag = mac.finalize().into_bytes().into();
            // Every candidate is compared in full; only whether one matched is revealed.
            let found = tags
                .iter()
                .fold(Choice::from(0), |acc, tag| acc | tags_equal(&expected, tag));
            if bool::from(found) {
                return Some(index);
            }
        }
        None
    }

    /// The error when no signature matched.
    fn no_match(&self) -> VerifyError {
        if self.misread {
            VerifyError::SecretSchemeMismatch
        } else {
            VerifyError::NoMatchingSignature
        }
    }
}

impl MatchedKey {
    /// The index of the key among the keys of its kind.
    pub fn index(self) -> usize {
        match self {
            Self::Secret(i) | Self::PublicKey(i) => i,
        }
    }
}

/// Constant-time equality of two tags (`subtle`).
fn tags_equal(a: &Tag, b: &Tag) -> Choice {
    a.as_slice().ct_eq(b.as_slice())
}

/// The one value of a header that must appear exactly once.
fn single<'a>(
    headers: &'a HeaderMap,
    key: &HeaderName,
    name: &'static str,
) -> Result<&'a [u8], VerifyError> {
    let mut values = headers.get_all(key).iter();
    let first = values.next().ok_or(VerifyError::MissingHeader(name))?;
    if values.next().is_some() {
        return Err(VerifyError::MalformedHeader(name));
    }
    Ok(first.as_bytes())
}

/// Parses every value of a header (a proxy may split one list into several lines).
fn all(
    headers: &HeaderMap,
    key: &HeaderName,
    name: &'static str,
    mut parse: impl FnMut(&[u8]) -> Result<(), VerifyError>,
) -> Result<(), VerifyError> {
    let mut seen = false;
    for value in headers.get_all(key) {
        seen = true;
        parse(value.as_bytes())?;
    }
    if !seen {
        return Err(VerifyError::MissingHeader(name));
    }
    Ok(())
}

fn visible_ascii(bytes: &[u8]) -> Option<&str> {
    if bytes.is_empty() || !bytes.iter().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}
