//! Signing secrets: raw bytes, redacted everywhere they could be printed.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// Standard base64, padded or not: the reference libraries (Python, Ruby, PHP, Java) accept
/// `whsec_` secrets without their `=` padding, so this one does too.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
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
    #[error("the webhook secret is not valid base64 after its `whsec_` prefix")]
    InvalidBase64,
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
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret of these bytes (Stripe's `whsec_…` strings and GitHub secrets are used as the
    /// UTF-8 bytes of the whole string: use [`Secret::from_text`] for them).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self(bytes))
    }

    /// A secret used as the bytes of its text, as Stripe and GitHub do.
    pub fn from_text(text: &str) -> Result<Self, SecretError> {
        Self::new(text.as_bytes())
    }

    /// A Standard Webhooks secret: `whsec_` followed by base64 of the key bytes (the prefix is
    /// optional; the `=` padding too).
    pub fn from_standard(text: &str) -> Result<Self, SecretError> {
        let b64 = text.strip_prefix("whsec_").unwrap_or(text);
        let bytes = SECRET_BASE64
            .decode(b64.trim())
            .map_err(|_| SecretError::InvalidBase64)?;
        Self::new(bytes)
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
