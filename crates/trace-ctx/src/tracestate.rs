//! The `tracestate` header (W3C Trace Context Level 2 §3.3).
use std::fmt;

/// The most members a list may have.
pub(crate) const MAX_MEMBERS: usize = 32;

/// Why a `tracestate` list (or a member to add) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceStateError {
    /// A member without `=`.
    #[error("tracestate member without '='")]
    MissingEquals,
    /// A key outside the grammar.
    #[error("invalid tracestate key")]
    InvalidKey,
    /// A value outside the grammar.
    #[error("invalid tracestate value")]
    InvalidValue,
    /// The same key twice.
    #[error("duplicate tracestate key")]
    DuplicateKey,
    /// More than 32 members.
    #[error("more than 32 tracestate members")]
    TooManyMembers,
    /// Not ASCII text.
    #[error("tracestate is not ASCII text")]
    NotText,
}

/// An ordered `tracestate` list, most recent first.
///
/// The `tracestate` header (W3C Trace Context Level 2 §3.3).
///
/// A list of up to 32 `key=value` members, comma-separated with optional whitespace, left-most
/// most recent. Keys are `(lcalpha / DIGIT) 0*255(keychar)` with keychar = `lcalpha / DIGIT / "_"
/// / "-" / "*" / "/" / "@"` (Level 2 folds Level 1's `tenant@system` form into this grammar).
/// Values are 1–256 printable ASCII characters without `,` or `=`, not ending in a space. Empty
/// members are skipped; several `tracestate` fields are one list.
///
/// Received lists are read with [`TraceState::parse_lossy`], as the propagation layer does: an
/// invalid member is dropped and the valid ones are kept, a repeated key keeps its first
/// occurrence, members beyond 32 are dropped from the right — so one vendor's bad entry never wipes
/// the others' — and every drop comes back with its reason for logging. [`TraceState::parse`] is
/// the strict check (any of those is an error).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceState {
    members: Vec<(String, String)>,
}

fn key_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@')
}

/// Whether `key` is a valid key (Level 2: `(lcalpha / DIGIT) 0*255(keychar)`).
pub fn valid_tracestate_key(key: &str) -> bool {
    let k = key.as_bytes();
    (1..=256).contains(&k.len())
        && (k[0].is_ascii_lowercase() || k[0].is_ascii_digit())
        && k[1..].iter().all(|&c| key_char(c))
}

/// A member left out of a received list, and why (for logging).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dropped {
    /// The member as received (at most its first 64 bytes).
    pub member: String,
    /// Why it was left out.
    pub reason: TraceStateError,
}

fn dropped(member: &str, reason: TraceStateError) -> Dropped {
    let mut end = member.len().min(64);
    while !member.is_char_boundary(end) {
        end -= 1;
    }
    Dropped {
        member: member[..end].to_owned(),
        reason,
    }
}

/// Whether `value` is a valid member value.
pub fn valid_tracestate_value(value: &str) -> bool {
    let v = value.as_bytes();
    let nblk = |c: u8| matches!(c, 0x21..=0x2B | 0x2D..=0x3C | 0x3E..=0x7E);
    (1..=256).contains(&v.len())
        && v[..v.len() - 1].iter().all(|&c| c == b' ' || nblk(c))
        && nblk(v[v.len() - 1])
}

impl TraceState {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads one or several received `tracestate` field values (in order) as one list, keeping
    /// every valid member: an invalid member is dropped, a repeated key keeps its first
    /// occurrence, members beyond 32 are dropped from the right, a field that is not text is
    /// dropped whole. Returns the list and what was dropped, with the reasons.
    ///
    /// ```
    /// use trace_ctx::{TraceState, TraceStateError};
    ///
    /// let (ts, dropped) = TraceState::parse_lossy([&b"congo=t61, Bad=1, rojo=00f0, congo=x"[..]]);
    /// assert_eq!(ts.to_string(), "congo=t61,rojo=00f0");
    /// assert_eq!(dropped.len(), 2);
    /// assert_eq!(dropped[0].reason, TraceStateError::InvalidKey);
    /// assert_eq!(dropped[1].reason, TraceStateError::DuplicateKey);
    /// ```
    pub fn parse_lossy<'a>(fields: impl IntoIterator<Item = &'a [u8]>) -> (Self, Vec<Dropped>) {
        let mut members: Vec<(String, String)> = Vec::new();
        let mut out = Vec::new();
        for field in fields {
            let Ok(field) = std::str::from_utf8(field) else {
                out.push(dropped("", TraceStateError::NotText));
                continue;
            };
            for member in field.split(',') {
                let member = member.trim_matches(|c| c == ' ' || c == '\t');
                if member.is_empty() {
                    continue;
                }
                let Some((key, value)) = member.split_once('=') else {
                    out.push(dropped(member, TraceStateError::MissingEquals));
                    continue;
                };
                let reason = if !valid_tracestate_key(key) {
                    Some(TraceStateError::InvalidKey)
                } else if !valid_tracestate_value(value) {
                    Some(TraceStateError::InvalidValue)
                } else if members.iter().any(|(k, _)| k == key) {
                    Some(TraceStateError::DuplicateKey)
                } else if members.len() == MAX_MEMBERS {
                    Some(TraceStateError::TooManyMembers)
                } else {
                    None
                };
                match reason {
                    Some(reason) => out.push(dropped(member, reason)),
                    None => members.push((key.to_owned(), value.to_owned())),
                }
            }
        }
        (Self { members }, out)
    }

    /// Parses one or several `tracestate` field values (in order) as one list, strictly: any
    /// invalid member, repeated key or 33rd member is an error.
    pub fn parse<'a>(fields: impl IntoIterator<Item = &'a [u8]>) -> Result<Self, TraceStateError> {
        let mut members: Vec<(String, String)> = Vec::new();
        for field in fields {
            let field = std::str::from_utf8(field).map_err(|_| TraceStateError::NotText)?;
            for member in field.split(',') {
                let member = member.trim_matches(|c| c == ' ' || c == '\t');
                if member.is_empty() {
                    continue;
                }
                let (key, value) = member
                    .split_once('=')
                    .ok_or(TraceStateError::MissingEquals)?;
                if !valid_tracestate_key(key) {
                    return Err(TraceStateError::InvalidKey);
                }
                if !valid_tracestate_value(value) {
                    return Err(TraceStateError::InvalidValue);
                }
                if members.iter().any(|(k, _)| k == key) {
                    return Err(TraceStateError::DuplicateKey);
                }
                if members.len() == MAX_MEMBERS {
                    return Err(TraceStateError::TooManyMembers);
                }
                members.push((key.to_owned(), value.to_owned()));
            }
        }
        Ok(Self { members })
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key` (this vendor's member) and moves it to the front, as the specification asks of a
    /// vendor that updates its entry; the right-most member is dropped beyond 32.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), TraceStateError> {
        if !valid_tracestate_key(key) {
            return Err(TraceStateError::InvalidKey);
        }
        if !valid_tracestate_value(value) {
            return Err(TraceStateError::InvalidValue);
        }
        self.members.retain(|(k, _)| k != key);
        self.members.insert(0, (key.to_owned(), value.to_owned()));
        self.members.truncate(MAX_MEMBERS);
        Ok(())
    }

    /// Removes `key`'s member.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.members.iter().position(|(k, _)| k == key)?;
        Some(self.members.remove(i).1)
    }

    /// The members, most recent first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.members.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there is no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The header value to send, or `None` for an empty list (an empty field should not be sent).
    /// Kept within 512 characters as the specification recommends: members longer than 128
    /// characters go first, right-most first, then right-most members.
    pub fn to_header_value(&self) -> Option<http::HeaderValue> {
        let mut keep: Vec<&(String, String)> = self.members.iter().collect();
        let len = |m: &[&(String, String)]| -> usize {
            m.iter().map(|(k, v)| k.len() + v.len() + 1).sum::<usize>() + m.len().saturating_sub(1)
        };
        while len(&keep) > 512 {
            match keep.iter().rposition(|(k, v)| k.len() + v.len() + 1 > 128) {
                Some(i) => {
                    keep.remove(i);
                }
                None => {
                    keep.pop();
                }
            }
        }
        if keep.is_empty() {
            return None;
        }
        let text = keep
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        Some(http::HeaderValue::from_str(&text).expect("validated printable ASCII"))
    }
}

impl fmt::Display for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}
