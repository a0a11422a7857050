//! Entity tags (RFC 9110 §8.8.3), the lists of `If-Match` / `If-None-Match` (§13.1.1, §13.1.2),
//! and [`Version`], the application's version of a resource rendered as a strong ETag.

use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// An entity tag: `"xyzzy"` (strong) or `W/"xyzzy"` (weak).
///
/// ```
/// use optimistic_lock::ETag;
///
/// let strong = ETag::parse("\"v7\"").unwrap();
/// let weak = ETag::parse("W/\"v7\"").unwrap();
/// assert!(!strong.strong_eq(&weak)); // If-Match never matches a weak tag
/// assert!(strong.weak_eq(&weak)); // If-None-Match compares weakly
/// assert_eq!(weak.to_string(), "W/\"v7\"");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ETag {
    weak: bool,
    /// The opaque tag without its quotes.
    opaque: Arc<str>,
}

/// Why an `ETag`, `If-Match` or `If-None-Match` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ETagError {
    /// The value is not visible ASCII / obs-text (a control character, or not a string at all).
    #[error("the value contains characters not allowed in a header field")]
    InvalidCharacters,
    /// An entity tag is not `"…"` or `W/"…"`, or holds a character outside `etagc`.
    #[error("malformed entity tag at byte {at}: expected `\"…\"` or `W/\"…\"`")]
    Malformed {
        /// Byte offset in the field value where parsing failed.
        at: usize,
    },
    /// `*` appears together with entity tags.
    #[error("`*` must stand alone in the field")]
    StarInList,
    /// The list has more entity tags than the parser accepts.
    #[error("more than {max} entity tags in one field")]
    TooMany {
        /// The limit.
        max: usize,
    },
}

/// The most entity tags one `If-Match` / `If-None-Match` field may list.
pub const MAX_TAGS: usize = 64;

fn is_etagc(b: u8) -> bool {
    // etagc = %x21 / %x23-7E / obs-text (%x80-FF)
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
}

impl ETag {
    /// A strong tag of `opaque` (the characters between the quotes).
    ///
    /// # Errors
    /// [`ETagError::Malformed`] when `opaque` holds a character outside `etagc` (such as `"`).
    pub fn strong(opaque: impl Into<String>) -> Result<Self, ETagError> {
        Self::new(false, opaque.into())
    }

    /// A weak tag of `opaque`.
    ///
    /// # Errors
    /// As [`ETag::strong`].
    pub fn weak(opaque: impl Into<String>) -> Result<Self, ETagError> {
        Self::new(true, opaque.into())
    }

    fn new(weak: bool, opaque: String) -> Result<Self, ETagError> {
        if let Some(at) = opaque.bytes().position(|b| !is_etagc(b)) {
            return Err(ETagError::Malformed { at });
        }
        Ok(Self {
            weak,
            opaque: opaque.into(),
        })
    }

    /// Parses one entity tag (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`ETagError`] when the value is not exactly one entity tag.
    pub fn parse(value: &str) -> Result<Self, ETagError> {
        let bytes = value.as_bytes();
        let start = bytes.len() - value.trim_start_matches([' ', '\t']).len();
        let (tag, end) = parse_tag(bytes, start)?;
        if value[end..].trim_matches([' ', '\t']).is_empty() {
            Ok(tag)
        } else {
            Err(ETagError::Malformed { at: end })
        }
    }

    /// Whether the tag is weak (`W/`).
    pub fn is_weak(&self) -> bool {
        self.weak
    }

    /// The opaque tag, without quotes.
    pub fn opaque(&self) -> &str {
        &self.opaque
    }

    /// Strong comparison (RFC 9110 §8.8.3.2): both strong and the same opaque tag.
    pub fn strong_eq(&self, other: &ETag) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison: the same opaque tag, weak or not.
    pub fn weak_eq(&self, other: &ETag) -> bool {
        self.opaque == other.opaque
    }

    /// The header value (`"…"` or `W/"…"`).
    pub fn to_header_value(&self) -> http::HeaderValue {
        // Built as bytes, not formatted: one allocation, the value's own. `from_maybe_shared`
        // accepts obs-text, which an ETag may hold.
        let mut v = Vec::with_capacity(self.opaque.len() + 4);
        if self.weak {
            v.extend_from_slice(b"W/");
        }
        v.push(b'"');
        v.extend_from_slice(self.opaque.as_bytes());
        v.push(b'"');
        http::HeaderValue::from_maybe_shared(bytes::Bytes::from(v))
            .unwrap_or_else(|_| http::HeaderValue::from_static("\"\""))
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.weak {
            f.write_str("W/")?;
        }
        write!(f, "\"{}\"", self.opaque)
    }
}

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ETag({self})")
    }
}

/// Parses one entity tag starting at `at`; returns it and the offset after its closing quote.
fn parse_tag(bytes: &[u8], mut at: usize) -> Result<(ETag, usize), ETagError> {
    let weak = bytes[at..].starts_with(b"W/");
    if weak {
        at += 2;
    }
    if bytes.get(at) != Some(&b'"') {
        return Err(ETagError::Malformed { at });
    }
    let open = at + 1;
    let len = bytes[open..]
        .iter()
        .position(|&b| !is_etagc(b))
        .unwrap_or(bytes.len() - open);
    let close = open + len;
    if bytes.get(close) != Some(&b'"') {
        return Err(ETagError::Malformed { at: close });
    }
    // `bytes` came from a `&str` and the tag is delimited by ASCII quotes: valid UTF-8.
    let opaque = String::from_utf8_lossy(&bytes[open..close]).into_owned();
    Ok((
        ETag {
            weak,
            opaque: opaque.into(),
        },
        close + 1,
    ))
}

/// The value of an `If-Match` or `If-None-Match` field: `*` or a list of entity tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagList {
    /// `*`: any current representation.
    Any,
    /// The listed tags (possibly empty only when every element of the field was empty).
    Tags(Vec<ETag>),
}

impl TagList {
    /// Parses every field line of the header (several lines form one list, RFC 9110 §5.3).
    /// Returns `None` when the header is absent.
    ///
    /// # Errors
    /// [`ETagError`] for anything but `*` alone or a comma-separated list of entity tags (empty
    /// elements and whitespace around them are allowed, RFC 9110 §5.6.1).
    pub fn from_headers(
        headers: &http::HeaderMap,
        name: &http::HeaderName,
    ) -> Result<Option<Self>, ETagError> {
        let mut lines = headers.get_all(name).iter().peekable();
        if lines.peek().is_none() {
            return Ok(None);
        }
        let mut star = false;
        let mut tags = Vec::new();
        for line in lines {
            let value =
                std::str::from_utf8(line.as_bytes()).map_err(|_| ETagError::InvalidCharacters)?;
            match Self::parse(value)? {
                TagList::Any => star = true,
                TagList::Tags(more) => tags.extend(more),
            }
            if tags.len() > MAX_TAGS {
                return Err(ETagError::TooMany { max: MAX_TAGS });
            }
        }
        match (star, tags.is_empty()) {
            (true, true) => Ok(Some(TagList::Any)),
            (true, false) => Err(ETagError::StarInList),
            (false, _) => Ok(Some(TagList::Tags(tags))),
        }
    }

    /// Parses one field value.
    ///
    /// ```
    /// use optimistic_lock::{ETag, TagList};
    ///
    /// assert_eq!(TagList::parse(" * ").unwrap(), TagList::Any);
    /// let list = TagList::parse("\"a\", W/\"b\" ,,\"c\"").unwrap();
    /// assert_eq!(list, TagList::Tags(vec![
    ///     ETag::strong("a").unwrap(), ETag::weak("b").unwrap(), ETag::strong("c").unwrap(),
    /// ]));
    /// assert!(TagList::parse("a").is_err()); // unquoted
    /// assert!(TagList::parse("*, \"a\"").is_err());
    /// ```
    ///
    /// # Errors
    /// As [`TagList::from_headers`].
    pub fn parse(value: &str) -> Result<Self, ETagError> {
        let bytes = value.as_bytes();
        if bytes.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(ETagError::InvalidCharacters);
        }
        let trimmed = value.trim_matches([' ', '\t']);
        if trimmed == "*" {
            return Ok(TagList::Any);
        }
        let mut tags = Vec::new();
        let mut at = 0;
        loop {
            // OWS and empty list elements.
            while at < bytes.len() && matches!(bytes[at], b' ' | b'\t' | b',') {
                at += 1;
            }
            if at == bytes.len() {
                break;
            }
            if bytes[at] == b'*' {
                return Err(ETagError::StarInList);
            }
            let (tag, end) = parse_tag(bytes, at)?;
            tags.push(tag);
            if tags.len() > MAX_TAGS {
                return Err(ETagError::TooMany { max: MAX_TAGS });
            }
            at = end;
            while at < bytes.len() && matches!(bytes[at], b' ' | b'\t') {
                at += 1;
            }
            match bytes.get(at) {
                None => break,
                Some(b',') => at += 1,
                Some(_) => return Err(ETagError::Malformed { at }),
            }
        }
        Ok(TagList::Tags(tags))
    }

    /// `If-Match` semantics: `*` matches any current representation, a list matches when one of
    /// its tags is strongly equal to the current one.
    pub fn matches_strong(&self, current: Option<&ETag>) -> bool {
        match (self, current) {
            (_, None) => false,
            (TagList::Any, Some(_)) => true,
            (TagList::Tags(tags), Some(cur)) => tags.iter().any(|t| t.strong_eq(cur)),
        }
    }

    /// `If-None-Match` semantics, as "does the list match": `*` matches any current
    /// representation, a list matches when one of its tags is weakly equal to the current one.
    pub fn matches_weak(&self, current: Option<&ETag>) -> bool {
        match (self, current) {
            (_, None) => false,
            (TagList::Any, Some(_)) => true,
            (TagList::Tags(tags), Some(cur)) => tags.iter().any(|t| t.weak_eq(cur)),
        }
    }
}

/// The version of a resource, as the application keeps it, rendered as a strong ETag.
///
/// ```
/// use optimistic_lock::Version;
///
/// assert_eq!(Version::number(7).etag().to_string(), "\"7\"");
/// assert_eq!(Version::number(7), Version::number(7));
/// let by_hash = Version::hash_of(br#"{"sku":"tea","quantity":2}"#);
/// assert_eq!(by_hash.etag().opaque().len(), 22); // 128 bits, base64url
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Version {
    kind: Kind,
    etag: ETag,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Number(u64),
    Timestamp(u128),
    Hash,
}

impl Version {
    /// A row version number (`version` column bumped by every write): ETag `"<n>"`.
    pub fn number(n: u64) -> Self {
        Self {
            kind: Kind::Number(n),
            etag: ETag {
                weak: false,
                opaque: Arc::from(itoa::Buffer::new().format(n)),
            },
        }
    }

    /// An update timestamp at nanosecond precision: ETag `"t<nanoseconds since the epoch>"`.
    /// Two writes within one clock tick get the same version: prefer [`Version::number`] where the
    /// store can keep a counter.
    pub fn timestamp(at: SystemTime) -> Self {
        let nanos = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Self {
            kind: Kind::Timestamp(nanos),
            etag: ETag {
                weak: false,
                opaque: format!("t{nanos}").into(),
            },
        }
    }

    /// A hash of the representation's bytes (SHA-256, first 128 bits, base64url): the same bytes
    /// always give the same version, whatever wrote them.
    pub fn hash_of(representation: &[u8]) -> Self {
        use base64::Engine;
        let digest = Sha256::digest(representation);
        let opaque = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]);
        Self {
            kind: Kind::Hash,
            etag: ETag {
                weak: false,
                opaque: opaque.into(),
            },
        }
    }

    /// The strong ETag that represents this version.
    pub fn etag(&self) -> &ETag {
        &self.etag
    }

    /// The row version number, for a version made by [`Version::number`].
    pub fn as_number(&self) -> Option<u64> {
        match self.kind {
            Kind::Number(n) => Some(n),
            _ => None,
        }
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({})", self.etag)
    }
}

#[cfg(test)]
mod number_tests {
    use super::Version;
    use proptest::prelude::*;

    #[test]
    fn the_edges_print_as_the_formatter_prints_them() {
        for n in [0, 1, 9, 10, 99, 100, u64::MAX - 1, u64::MAX] {
            assert_eq!(Version::number(n).etag().to_string(), format!("\"{n}\""));
        }
    }

    proptest! {
        #[test]
        fn any_number_prints_as_the_formatter_prints_it(n: u64) {
            prop_assert_eq!(Version::number(n).etag().to_string(), format!("\"{n}\""));
        }
    }
}
