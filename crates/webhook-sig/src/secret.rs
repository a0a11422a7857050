//! Signing secrets: raw bytes, redacted everywhere they could be printed.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// Standard base64, padded or not, with nonzero trailing bits allowed: the reference libraries
/// (Python's `base64.b64decode`, Ruby, PHP, Java) accept `whsec_` secrets without their `=`
/// padding and ignore the bits past the last whole byte, so this one does too.
pub(crate) const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);
use std::fmt;

/// Why a secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The secret is empty.
    #[error("the webhook secret is empty")]
    Empty,
    /// A `whsec_` secret whose remainder is not base64. The secret itself is never shown.
    #[error("the webhook secret is not valid base64 after its prefix")]
    InvalidBase64,
    /// An Ed25519 key of the wrong size: a `whsk_` key is 32 bytes (or 64 with its public half),
    /// a `whpk_` key 32 bytes.
    #[error("the Ed25519 key has the wrong length")]
    InvalidKeyLength,
    /// A `whpk_` key that is not a point of the curve, or a weak (small-order) one.
    #[error("the Ed25519 public key is not a valid, strong key")]
    InvalidPublicKey,
    /// A 64-byte `whsk_` key whose public half does not belong to its seed.
    #[error("the Ed25519 key pair's public half does not match its seed")]
    KeyPairMismatch,
    /// The operating system's random source failed while generating a key.
    #[error("no randomness to generate a key")]
    NoRandomness,
}

/// An HMAC key. `Debug` prints `Secret(<redacted>)`; there is no `Display`.
///
/// A secret read from text remembers that text, so each scheme takes the key it means: Standard
/// Webhooks the base64 after `whsec_`, Stripe and GitHub the bytes of the whole text. A Stripe
/// `whsec_…` secret read with [`from_standard`](Self::from_standard) still verifies Stripe
/// signatures, and a Standard Webhooks secret read with [`from_text`](Self::from_text) still
/// verifies Standard Webhooks ones.
///
/// ```
/// use webhook_sig::Secret;
///
/// let s = Secret::from_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
/// assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
/// ```
#[derive(Clone)]
pub struct Secret {
    /// The key as it was read (decoded base64 for `from_standard`).
    bytes: Vec<u8>,
    /// The text it was read from, when it was.
    text: Option<String>,
    origin: Origin,
}

/// How a secret was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Bytes,
    Text,
    Standard,
}

impl Secret {
    /// A secret of these bytes (Stripe's `whsec_…` strings and GitHub secrets are used as the
    /// UTF-8 bytes of the whole string: use [`Secret::from_text`] for them).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self {
            bytes,
            text: None,
            origin: Origin::Bytes,
        })
    }

    /// A secret used as the bytes of its text, as Stripe and GitHub do.
    pub fn from_text(text: &str) -> Result<Self, SecretError> {
        Ok(Self {
            text: Some(text.to_owned()),
            origin: Origin::Text,
            ..Self::new(text.as_bytes())?
        })
    }

    /// The secret as `scheme` reads it: base64 after `whsec_` for Standard Webhooks, the bytes of
    /// the whole text for Stripe- and GitHub-style (whose secrets may also start with `whsec_`).
    ///
    /// ```
    /// use webhook_sig::{Scheme, Secret};
    ///
    /// // A Stripe secret is used as text, prefix included, although it looks like base64.
    /// let stripe = Secret::for_scheme(Scheme::Stripe, "whsec_abc123").unwrap();
    /// let standard = Secret::for_scheme(Scheme::StandardWebhooks, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    /// # let _ = (stripe, standard);
    /// ```
    pub fn for_scheme(scheme: crate::Scheme, text: &str) -> Result<Self, SecretError> {
        match scheme {
            crate::Scheme::StandardWebhooks => Self::from_standard(text),
            _ => Self::from_text(text),
        }
    }

    /// A Standard Webhooks secret: `whsec_` followed by base64 of the key bytes (the prefix is
    /// optional; the `=` padding too).
    pub fn from_standard(text: &str) -> Result<Self, SecretError> {
        Ok(Self {
            text: Some(text.to_owned()),
            origin: Origin::Standard,
            ..Self::new(decode_standard(text)?)?
        })
    }

    /// The bytes as read.
    pub(crate) fn raw(&self) -> &[u8] {
        &self.bytes
    }

    /// The key bytes `scheme` signs with, or `None` when this secret cannot be one of its keys
    /// (a text that is not base64, read with `from_text`, for Standard Webhooks).
    pub(crate) fn key_for(&self, scheme: crate::Scheme) -> Option<std::borrow::Cow<'_, [u8]>> {
        use crate::Scheme::StandardWebhooks;
        use std::borrow::Cow;
        match (self.origin, scheme, &self.text) {
            (Origin::Standard, StandardWebhooks, _) | (Origin::Bytes, _, _) => {
                Some(Cow::Borrowed(&self.bytes))
            }
            (Origin::Standard, _, Some(text)) => Some(Cow::Borrowed(text.as_bytes())),
            (Origin::Text, StandardWebhooks, Some(text)) => {
                decode_standard(text).ok().map(Cow::Owned)
            }
            _ => Some(Cow::Borrowed(&self.bytes)),
        }
    }
}

/// The key of a Standard Webhooks secret: base64 after the optional `whsec_` prefix.
fn decode_standard(text: &str) -> Result<Vec<u8>, SecretError> {
    let b64 = text.strip_prefix("whsec_").unwrap_or(text);
    SECRET_BASE64
        .decode(b64.trim())
        .map_err(|_| SecretError::InvalidBase64)
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
