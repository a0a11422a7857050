//! Request ids: accepted from `X-Request-Id` when safe, generated otherwise.

use crate::ids::{next_u64, write_hex};
use std::fmt;
use std::sync::Arc;

/// The request id header.
pub use retry_safe_core::headers::X_REQUEST_ID;

/// The longest incoming request id accepted.
pub const MAX_LEN: usize = 128;

/// A request id: 1–128 characters of `A–Z a–z 0–9 - _ . : + / = @`. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// A new random id: 32 lowercase hex characters.
    pub fn generate() -> Self {
        let mut out = [0u8; 32];
        write_hex(&mut out[..16], &next_u64().to_be_bytes());
        write_hex(&mut out[16..], &next_u64().to_be_bytes());
        Self(Arc::from(std::str::from_utf8(&out).expect("hex is ASCII")))
    }

    /// An incoming id, if it is non-empty, at most 128 characters and of the safe charset (so it
    /// can go into logs and headers unescaped).
    pub fn parse(value: &[u8]) -> Option<Self> {
        let ok = |c: &u8| {
            c.is_ascii_alphanumeric()
                || matches!(c, b'-' | b'_' | b'.' | b':' | b'+' | b'/' | b'=' | b'@')
        };
        if value.is_empty() || value.len() > MAX_LEN || !value.iter().all(ok) {
            return None;
        }
        Some(Self(Arc::from(std::str::from_utf8(value).ok()?)))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// As a header value.
    pub fn to_header_value(&self) -> http::HeaderValue {
        http::HeaderValue::from_str(&self.0).expect("the charset is header-safe")
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.0)
    }
}
