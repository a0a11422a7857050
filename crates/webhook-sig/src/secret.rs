//! Signing secrets: raw bytes, redacted everywhere they could be printed.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// Standard base64, padded or not: the reference libraries (Python, Ruby, PHP, Java) accept
/// `whsec_` secrets without their `=` padding, so this one does too.
pub(crate) const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
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
/// ```
/// use webhook_sig::Secret;
///
/// let s = Secret::from_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
/// assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
/// ```
#[derive(Clone)]
pub struct Secret(Vec<u8>, Origin);

/// How a secret was read, to tell a secret loaded for one scheme from one loaded for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
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
        Ok(Self(bytes, Origin::Bytes))
    }

    /// A secret used as the bytes of its text, as Stripe and GitHub do.
    pub fn from_text(text: &str) -> Result<Self, SecretError> {
        Ok(Self(Self::new(text.as_bytes())?.0, Origin::Text))
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
        let b64 = text.strip_prefix("whsec_").unwrap_or(text);
        let bytes = SECRET_BASE64
            .decode(b64.trim())
            .map_err(|_| SecretError::InvalidBase64)?;
        Ok(Self(Self::new(bytes)?.0, Origin::Standard))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether the secret was read for another scheme than `scheme` (a Stripe `whsec_…` text
    /// decoded as Standard Webhooks base64, or the reverse).
    pub(crate) fn mismatches(&self, scheme: crate::Scheme) -> bool {
        matches!(
            (self.1, scheme),
            (
                Origin::Standard,
                crate::Scheme::Stripe | crate::Scheme::GitHub
            ) | (Origin::Text, crate::Scheme::StandardWebhooks)
        )
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
