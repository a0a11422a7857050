//! The `traceparent` header (W3C Trace Context Level 1 §3.2, with the Level 2 `random` flag).
use crate::ids::{write_hex, SpanId, TraceId};
use std::fmt;

/// The trace flags byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceFlags(u8);

impl TraceFlags {
    /// The caller may have recorded this trace (bit 0).
    pub const SAMPLED: u8 = 0x01;
    /// The right-most 7 bytes of the trace id are random (bit 1, Level 2).
    pub const RANDOM: u8 = 0x02;

    /// Flags from their byte.
    pub const fn new(byte: u8) -> Self {
        Self(byte)
    }

    /// The byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether the sampled flag is set.
    pub const fn sampled(self) -> bool {
        self.0 & Self::SAMPLED != 0
    }

    /// Whether the random flag is set.
    pub const fn random(self) -> bool {
        self.0 & Self::RANDOM != 0
    }
}

impl fmt::Debug for TraceFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceFlags({:02x})", self.0)
    }
}

/// A parsed `traceparent`: which trace a request belongs to and which span called it.
///
/// The `traceparent` header (W3C Trace Context Level 1 §3.2, with the Level 2 `random` flag).
///
/// `version "-" trace-id "-" parent-id "-" trace-flags`, all lowercase hex:
/// `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`. Parsing follows the specification:
/// version `ff` is invalid; version `00` is exactly 55 characters; a higher version is read by the
/// version-00 layout of its first 55 characters, and anything after them must start with `-`;
/// all-zero ids are invalid; upper-case hex is invalid. Leading and trailing spaces or tabs (HTTP
/// optional whitespace) are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The version read (this crate always writes `00`).
    pub version: u8,
    /// The trace.
    pub trace_id: TraceId,
    /// The caller's span.
    pub parent_id: SpanId,
    /// The flags as received.
    pub flags: TraceFlags,
}

/// Why a `traceparent` value was rejected (the request then starts a new trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceParentError {
    /// Shorter than 55 characters, or a version-00 value longer than 55.
    #[error("traceparent has the wrong length")]
    Length,
    /// A field is not lowercase hex of its size, or a `-` is missing.
    #[error("traceparent is malformed")]
    Malformed,
    /// Version `ff`, which the specification forbids.
    #[error("traceparent version ff is invalid")]
    ForbiddenVersion,
    /// An all-zero trace id.
    #[error("traceparent trace-id is all zeros")]
    ZeroTraceId,
    /// An all-zero parent id.
    #[error("traceparent parent-id is all zeros")]
    ZeroParentId,
}

// Parsing stays by hand: Trace Context allows lowercase hex only, which the `hex` crate's decoder
// does not enforce.
fn hex_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    let mut out = [0; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = hex_nibble(pair[0])? << 4 | hex_nibble(pair[1])?;
    }
    Some(out)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

impl TraceParent {
    /// Parses a header value.
    pub fn parse(value: &[u8]) -> Result<Self, TraceParentError> {
        let v = trim_ows(value);
        if v.len() < 55 {
            return Err(TraceParentError::Length);
        }
        let [version] = hex::<1>(&v[0..2]).ok_or(TraceParentError::Malformed)?;
        if version == 0xff {
            return Err(TraceParentError::ForbiddenVersion);
        }
        if version == 0 && v.len() != 55 {
            return Err(TraceParentError::Length);
        }
        if version > 0 && v.len() > 55 && v[55] != b'-' {
            return Err(TraceParentError::Malformed);
        }
        if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return Err(TraceParentError::Malformed);
        }
        let trace_id = hex::<16>(&v[3..35]).ok_or(TraceParentError::Malformed)?;
        let parent_id = hex::<8>(&v[36..52]).ok_or(TraceParentError::Malformed)?;
        let [flags] = hex::<1>(&v[53..55]).ok_or(TraceParentError::Malformed)?;
        Ok(Self {
            version,
            trace_id: TraceId::from_bytes(trace_id).ok_or(TraceParentError::ZeroTraceId)?,
            parent_id: SpanId::from_bytes(parent_id).ok_or(TraceParentError::ZeroParentId)?,
            flags: TraceFlags(flags),
        })
    }

    /// A new trace: random ids, the random flag set, sampled as asked.
    pub fn new_root(sampled: bool) -> Self {
        let sampled = if sampled { TraceFlags::SAMPLED } else { 0 };
        Self {
            version: 0,
            trace_id: TraceId::random(),
            parent_id: SpanId::random(),
            flags: TraceFlags(TraceFlags::RANDOM | sampled),
        }
    }

    /// The same trace continued by span `span`: version 00, flags reduced to those this version
    /// defines (sampled, random).
    pub fn with_parent(&self, span: SpanId) -> Self {
        Self {
            version: 0,
            trace_id: self.trace_id,
            parent_id: span,
            flags: TraceFlags(self.flags.0 & (TraceFlags::SAMPLED | TraceFlags::RANDOM)),
        }
    }

    /// The header value, always version `00` (55 bytes).
    pub fn to_bytes(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[0] = b'0';
        out[1] = b'0';
        write_hex(&mut out[3..35], &self.trace_id.0);
        write_hex(&mut out[36..52], &self.parent_id.0);
        write_hex(&mut out[53..55], &[self.flags.0]);
        out
    }

    /// The header value as an `http` header value.
    pub fn to_header_value(&self) -> http::HeaderValue {
        http::HeaderValue::from_bytes(&self.to_bytes()).expect("hex and dashes are valid")
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.to_bytes()).expect("ASCII"))
    }
}
