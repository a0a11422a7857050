//! The request fingerprint: what makes two requests with one key "the same request".

use sha2::{Digest, Sha256};
use std::fmt;

/// SHA-256 over a request's method, path with query, and body.
///
/// Each part is length-prefixed before hashing, so no choice of parts can collide with another by
/// moving bytes across a boundary (`POST /a` + body `b` differs from `POST /ab` + empty body).
///
/// ```
/// use idem_core::Fingerprint;
///
/// let a = Fingerprint::of_request("POST", "/orders?x=1", b"{\"sku\":1}");
/// let b = Fingerprint::of_request("POST", "/orders?x=1", b"{\"sku\":2}");
/// assert_ne!(a, b);
/// assert_eq!(a, Fingerprint::of_request("POST", "/orders?x=1", b"{\"sku\":1}"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a request made of `method`, `path_and_query` and `body`.
    pub fn of_request(method: &str, path_and_query: &str, body: &[u8]) -> Self {
        let mut h = Sha256::new();
        for part in [method.as_bytes(), path_and_query.as_bytes(), body] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        Self(h.finalize().into())
    }

    /// The 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}
