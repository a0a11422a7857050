//! The `Idempotency-Key` request header.
//!
//! A key is 1–255 visible ASCII characters (`!` to `~`, no space, no control characters). The
//! header may carry it bare (`Idempotency-Key: 8e03978e-40d5-43e8-bc93-6894a57f9324`, the form
//! Stripe's clients send) or as an RFC 8941 structured-field string, the form of the IETF
//! `Idempotency-Key` draft (`Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"`). Both forms
//! of one key are the same key. A value that starts with `"` is read as the quoted form, so a bare
//! key cannot start with `"`.

use std::fmt;

/// The name of the request header that carries the key.
pub use retry_safe_core::headers::IDEMPOTENCY_KEY;

/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// Why a header value is not a valid idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The value (or the quoted string) is empty.
    #[error("the idempotency key is empty")]
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    #[error("the idempotency key is {len} bytes long; at most {max} are allowed", max = MAX_KEY_LEN)]
    TooLong {
        /// The length of the key that was sent.
        len: usize,
    },
    /// A byte outside visible ASCII (`0x21..=0x7e`).
    #[error("the idempotency key has a byte outside visible ASCII at position {position}")]
    InvalidByte {
        /// Zero-based position of the first offending byte in the key.
        position: usize,
    },
    /// A structured-field string that is not closed, or has an invalid escape.
    #[error("the idempotency key is a malformed quoted string")]
    MalformedQuoted,
}

/// A validated idempotency key.
///
/// ```
/// use idem_core::IdempotencyKey;
///
/// let bare = IdempotencyKey::parse(b"order-42").unwrap();
/// let quoted = IdempotencyKey::parse(br#""order-42""#).unwrap();
/// assert_eq!(bare, quoted);
/// assert!(IdempotencyKey::parse(b"has space").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses a header value in the bare or the structured-field string form.
    pub fn parse(value: &[u8]) -> Result<Self, KeyError> {
        let value = trim_ows(value);
        if value.first() == Some(&b'"') {
            let inner = unquote(value)?;
            Self::validate(&inner)?;
            // Validation proved every byte is ASCII.
            return Ok(Self(
                String::from_utf8(inner).map_err(|_| KeyError::MalformedQuoted)?,
            ));
        }
        Self::validate(value)?;
        Ok(Self(
            std::str::from_utf8(value)
                .map_err(|_| KeyError::InvalidByte { position: 0 })?
                .to_owned(),
        ))
    }

    fn validate(key: &[u8]) -> Result<(), KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong { len: key.len() });
        }
        match key.iter().position(|b| !(0x21..=0x7e).contains(b)) {
            Some(position) => Err(KeyError::InvalidByte { position }),
            None => Ok(()),
        }
    }

    /// The key as text: its identity (what stores keep and compare). A key sent as a
    /// structured-field string is unquoted here, so this is not always a header value that
    /// parses back (a key that begins with `"` does not); [`to_header`](Self::to_header) is.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as an `Idempotency-Key` header value that parses back to it: the bare form, or
    /// the structured-field string (`"` and `\` escaped) when the key begins with `"`.
    ///
    /// ```
    /// use idem_core::IdempotencyKey;
    ///
    /// let key = IdempotencyKey::parse(br#""\"L""#).unwrap();
    /// assert_eq!(key.as_str(), "\"L");
    /// assert_eq!(IdempotencyKey::parse(key.to_header().as_bytes()).unwrap(), key);
    /// assert_eq!(IdempotencyKey::parse(b"order-42").unwrap().to_header(), "order-42");
    /// ```
    pub fn to_header(&self) -> String {
        if !self.0.starts_with('"') {
            return self.0.clone();
        }
        let mut quoted = String::with_capacity(self.0.len() + 4);
        quoted.push('"');
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        quoted.push('"');
        quoted
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdempotencyKey").field(&self.0).finish()
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for IdempotencyKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s.as_bytes())
    }
}

impl AsRef<str> for IdempotencyKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Decodes an RFC 8941 sf-string: `"` chars `"`, where `\"` and `\\` are the only escapes.
fn unquote(v: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(v.len());
    let mut bytes = v[1..].iter();
    loop {
        match bytes.next() {
            None => return Err(KeyError::MalformedQuoted),
            Some(b'"') => break,
            Some(b'\\') => match bytes.next() {
                Some(&c @ (b'"' | b'\\')) => out.push(c),
                _ => return Err(KeyError::MalformedQuoted),
            },
            Some(&c) => out.push(c),
        }
    }
    if bytes.next().is_some() {
        // Parameters or trailing bytes after the closing quote are not part of a key.
        return Err(KeyError::MalformedQuoted);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::IdempotencyKey;

    /// Found by the `idempotency_key` fuzz target: `"\"L"` is the key `"L`, whose text alone is
    /// a malformed quoted string; its header form must quote it again.
    #[test]
    fn a_key_that_begins_with_a_quote_renders_to_a_header_that_parses_back() {
        for sent in [
            &br#""\"L""#[..],
            br#""\"""#,
            br#""\"a\\b""#,
            b"plain",
            br#"a"b"#,
        ] {
            let key = IdempotencyKey::parse(sent).unwrap();
            let header = key.to_header();
            assert_eq!(
                IdempotencyKey::parse(header.as_bytes()),
                Ok(key),
                "{header}"
            );
        }
    }
}
