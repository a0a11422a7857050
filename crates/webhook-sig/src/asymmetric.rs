//! Standard Webhooks' asymmetric signatures (`v1a`, Ed25519): the sender keeps a `whsk_` signing
//! key, receivers get only the `whpk_` public key, so a leaked receiver configuration cannot forge
//! a delivery.

use crate::SecretError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::Signer as _;
use std::fmt;

/// Prefix of a Standard Webhooks Ed25519 signing (secret) key.
pub(crate) const SIGNING_KEY_PREFIX: &str = "whsk_";
/// Prefix of a Standard Webhooks Ed25519 public key.
pub(crate) const PUBLIC_KEY_PREFIX: &str = "whpk_";

/// An Ed25519 signing key for `v1a` signatures. `Debug` prints `SigningKey(<redacted>)`; the key
/// bytes are wiped from memory when it is dropped.
///
/// ```
/// use webhook_sig::{ManualClock, SigningKey, Signer, Verifier};
///
/// let key = SigningKey::generate().unwrap();
/// let public = key.public_key(); // hand this one (`whpk_…`) to the receivers
/// let clock = ManualClock::at_unix_secs(1_700_000_000);
/// let headers = Signer::ed25519(&key)
///     .with_clock(clock.clone())
///     .headers("msg_1", b"{}")
///     .unwrap();
/// assert!(headers["webhook-signature"].to_str().unwrap().starts_with("v1a,"));
///
/// let verifier = Verifier::ed25519(public).with_clock(clock);
/// assert!(verifier.verify(&headers, b"{}").is_ok());
/// assert!(format!("{key:?}").contains("redacted"));
/// ```
#[derive(Clone)]
pub struct SigningKey(pub(crate) ed25519_dalek::SigningKey);

impl SigningKey {
    /// A new random key, from the operating system's random source.
    pub fn generate() -> Result<Self, SecretError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|_| SecretError::NoRandomness)?;
        Ok(Self::from_seed(seed))
    }

    /// The key of this 32-byte seed (RFC 8032's "private key").
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// Reads `whsk_<base64>` (the prefix is optional, the `=` padding too). The base64 holds
    /// either the 32-byte seed or the 64-byte seed-and-public-key form of libsodium; in the
    /// second form the public half must belong to the seed.
    pub fn from_standard(text: &str) -> Result<Self, SecretError> {
        let b64 = text.trim();
        let b64 = b64.strip_prefix(SIGNING_KEY_PREFIX).unwrap_or(b64);
        let bytes = crate::secret::SECRET_BASE64
            .decode(b64)
            .map_err(|_| SecretError::InvalidBase64)?;
        match bytes.len() {
            0 => Err(SecretError::Empty),
            32 => {
                let mut seed = [0u8; 32];
                seed.copy_from_slice(&bytes);
                Ok(Self::from_seed(seed))
            }
            64 => {
                let mut pair = [0u8; 64];
                pair.copy_from_slice(&bytes);
                ed25519_dalek::SigningKey::from_keypair_bytes(&pair)
                    .map(Self)
                    .map_err(|_| SecretError::KeyPairMismatch)
            }
            _ => Err(SecretError::InvalidKeyLength),
        }
    }

    /// The key as `whsk_<base64 of the seed>`, to store it in a secret manager. This is the
    /// secret itself: never log it.
    pub fn to_standard(&self) -> String {
        format!("{SIGNING_KEY_PREFIX}{}", STANDARD.encode(self.0.to_bytes()))
    }

    /// The public key that verifies this key's signatures.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The 64-byte Ed25519 signature of `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// An Ed25519 public key that verifies `v1a` signatures; shown as `whpk_<base64>`.
///
/// ```
/// use webhook_sig::PublicKey;
///
/// // RFC 8032, test 1.
/// let key = PublicKey::from_standard("whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=").unwrap();
/// assert_eq!(key.to_string(), "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
/// assert!(PublicKey::from_standard("whpk_AAAA").is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub(crate) ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// Reads `whpk_<base64 of 32 bytes>` (the prefix is optional, the `=` padding too). Points
    /// that are not on the curve and weak (small-order) keys are refused: no signature under
    /// them proves anything.
    pub fn from_standard(text: &str) -> Result<Self, SecretError> {
        let b64 = text.trim();
        let b64 = b64.strip_prefix(PUBLIC_KEY_PREFIX).unwrap_or(b64);
        let bytes = crate::secret::SECRET_BASE64
            .decode(b64)
            .map_err(|_| SecretError::InvalidBase64)?;
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SecretError::InvalidKeyLength)?;
        Self::from_bytes(bytes)
    }

    /// The key of these 32 bytes (RFC 8032 encoding).
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, SecretError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| SecretError::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(SecretError::InvalidPublicKey);
        }
        Ok(Self(key))
    }

    /// The 32 bytes of the key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Whether `signature` is this key's signature of `message` (RFC 8032 with the strict
    /// checks: canonical scalars, no small-order components).
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(message, &signature).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PUBLIC_KEY_PREFIX}{}",
            STANDARD.encode(self.0.as_bytes())
        )
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// The content a Standard Webhooks signature covers: `{id}.{timestamp}.{body}`.
pub(crate) fn signed_content(id: &str, timestamp: &[u8], body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp);
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex<const N: usize>(s: &str) -> [u8; N] {
        let mut out = [0u8; N];
        hex::decode_to_slice(s, &mut out).unwrap();
        out
    }

    /// RFC 8032 §7.1, tests 1 and 2: the seed gives the published public key, and signing the
    /// message gives the published signature, which the public key verifies.
    #[test]
    fn rfc8032_vectors() {
        let cases = [
            (
                "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                "72",
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            ),
        ];
        for (seed, public, message, signature) in cases {
            let key = SigningKey::from_seed(unhex(seed));
            assert_eq!(key.public_key().to_bytes(), unhex::<32>(public));
            let message = hex::decode(message).unwrap();
            let sig = key.sign(&message);
            assert_eq!(sig, unhex::<64>(signature));
            assert!(key.public_key().verifies(&message, &sig));
            let mut tampered = message.clone();
            tampered.push(0);
            assert!(!key.public_key().verifies(&tampered, &sig));
        }
    }

    #[test]
    fn standard_text_round_trips_in_both_key_forms() {
        let key = SigningKey::from_seed([7; 32]);
        let text = key.to_standard();
        assert!(text.starts_with("whsk_"));
        let again = SigningKey::from_standard(&text).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        // libsodium's 64-byte form: seed then public key.
        let pair = format!("whsk_{}", STANDARD.encode(key.0.to_keypair_bytes()));
        assert_eq!(
            SigningKey::from_standard(&pair).unwrap().public_key(),
            key.public_key()
        );
        // A 64-byte form whose public half belongs to another seed is refused.
        let mut wrong = key.0.to_keypair_bytes();
        wrong[32..].copy_from_slice(&SigningKey::from_seed([8; 32]).public_key().to_bytes());
        assert_eq!(
            SigningKey::from_standard(&format!("whsk_{}", STANDARD.encode(wrong))).unwrap_err(),
            SecretError::KeyPairMismatch
        );
        assert_eq!(
            SigningKey::from_standard("whsk_AAAA").unwrap_err(),
            SecretError::InvalidKeyLength
        );
        assert_eq!(
            PublicKey::from_standard(&key.public_key().to_string()).unwrap(),
            key.public_key()
        );
        // The identity point is a weak key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            PublicKey::from_bytes(identity).unwrap_err(),
            SecretError::InvalidPublicKey
        );
    }
}
