//! The server's own hints of when to come back: `Retry-After` (RFC 9110 §10.2.3) and the
//! `RateLimit` field's `t` parameter (draft-ietf-httpapi-ratelimit-headers).

use http::HeaderMap;
use std::time::{Duration, SystemTime};

pub use retry_safe_core::headers::retry_after;

/// The smallest `t` (seconds until the quota has room again) among the `RateLimit` field's items
/// that have no remaining quota (`r=0`), or among all items when none says `r`. `None` when
/// absent or unreadable.
///
/// Parsed by hand rather than with `sfv`: its current version needs a newer Rust than this
/// crate's MSRV, and only two integer parameters are read.
pub fn ratelimit_reset(headers: &HeaderMap) -> Option<Duration> {
    let mut best: Option<(bool, u64)> = None;
    for value in headers.get_all(retry_safe_core::headers::RATELIMIT) {
        let value = value.to_str().ok()?;
        for item in split_outside_quotes(value, b',') {
            let mut exhausted = None;
            let mut reset = None;
            for param in split_outside_quotes(item, b';').skip(1) {
                let (k, v) = param.split_once('=')?;
                let v = v.trim().parse::<u64>().ok();
                match k.trim() {
                    "r" => exhausted = v.map(|r| r == 0),
                    "t" => reset = v,
                    _ => {}
                }
            }
            let Some(t) = reset else { continue };
            // Prefer an exhausted quota's reset; otherwise the smallest reset.
            let candidate = (exhausted.unwrap_or(true), t);
            best = Some(match best {
                None => candidate,
                Some(b) if candidate.0 && !b.0 => candidate,
                Some(b) if candidate.0 == b.0 && candidate.1 < b.1 => candidate,
                Some(b) => b,
            });
        }
    }
    best.map(|(_, t)| Duration::from_secs(t))
}

fn split_outside_quotes(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let bytes = s.as_bytes();
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts.into_iter()
}

/// The server's hint: the longest of `Retry-After`, the `RateLimit` reset and gRPC's
/// `grpc-retry-pushback-ms`.
pub fn server_hint(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let pushback = retry_safe_core::grpc::pushback(headers);
    [
        retry_after(headers, now),
        ratelimit_reset(headers),
        pushback,
    ]
    .into_iter()
    .flatten()
    .max()
}
