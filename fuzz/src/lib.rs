//! One function per parser of untrusted input, each fed arbitrary bytes: by libFuzzer
//! (`cargo xtask fuzz --seconds N`, cargo-fuzz on nightly) and, on stable, by
//! `tests/corpus.rs`, which replays every committed corpus and regression input.
//!
//! Beyond "never panics", each target checks what the parser promises: a value that parsed
//! prints to text that parses back to the same value.
//!
//! ```
//! retry_safe_fuzz::idempotency_key(b"order-7f3a");
//! retry_safe_fuzz::traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::time::{Duration, SystemTime};

/// A target: its name (the file in `fuzz_targets/`) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// The targets by name, as `cargo xtask fuzz` and the corpus replay run them.
pub const TARGETS: &[Target] = &[
    ("idempotency_key", idempotency_key),
    ("traceparent", traceparent),
    ("tracestate", tracestate),
    ("webhook_headers", webhook_headers),
    ("etag", etag),
    ("ratelimit_hints", ratelimit_hints),
    ("gateway_config", gateway_config),
];

/// `Idempotency-Key`: a parsed key is at most `MAX_KEY_LEN` bytes of visible ASCII, and its
/// header form parses back to it.
pub fn idempotency_key(data: &[u8]) {
    if let Ok(key) = idem_core::IdempotencyKey::parse(data) {
        let text = key.as_str();
        assert!(!text.is_empty() && text.len() <= idem_core::MAX_KEY_LEN);
        assert!(text.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        let again = idem_core::IdempotencyKey::parse(key.to_header().as_bytes());
        assert_eq!(again.as_ref(), Ok(&key), "the header form parses back");
    }
}

/// `traceparent`: what parsed prints to a header that parses to the same ids and flags.
pub fn traceparent(data: &[u8]) {
    if let Ok(parent) = trace_ctx::TraceParent::parse(data) {
        let text = parent.to_string();
        let again = trace_ctx::TraceParent::parse(text.as_bytes()).expect("printed re-parses");
        assert_eq!(again.to_string(), text, "printing is stable");
    }
}

/// `tracestate`: strict and lossy parsing of one or several field lines (split at `\n`); what
/// either keeps prints to a field that parses strictly to the same list.
pub fn tracestate(data: &[u8]) {
    let fields: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if let Ok(state) = trace_ctx::TraceState::parse(fields.iter().copied()) {
        roundtrip_tracestate(&state);
    }
    let (lossy, _dropped) = trace_ctx::TraceState::parse_lossy(fields.iter().copied());
    roundtrip_tracestate(&lossy);
}

fn roundtrip_tracestate(state: &trace_ctx::TraceState) {
    let text = state.to_string();
    let again = trace_ctx::TraceState::parse([text.as_bytes()]).expect("printed re-parses");
    assert_eq!(again.to_string(), text, "printing is stable");
}

/// Webhook signature headers of every scheme (Standard Webhooks HMAC and Ed25519, Stripe,
/// GitHub) and the timestamp: never a panic; a parsed timestamp prints back to itself.
pub fn webhook_headers(data: &[u8]) {
    use webhook_sig::header;
    let _ = header::parse_standard(data);
    let _ = header::parse_standard_v1a(data);
    let _ = header::parse_stripe(data);
    let _ = header::parse_github(data);
    if let Ok(t) = header::parse_timestamp(data) {
        assert_eq!(
            header::parse_timestamp(t.to_string().as_bytes()).ok(),
            Some(t)
        );
    }
}

/// `ETag`, `If-Match` / `If-None-Match`: a parsed tag prints to one that parses to itself; a
/// tag list parses as the header does.
pub fn etag(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tag) = optimistic_lock::ETag::parse(text) {
        let again = optimistic_lock::ETag::parse(&tag.to_string()).expect("printed re-parses");
        assert_eq!(again, tag);
    }
    let listed = optimistic_lock::TagList::parse(text);
    if let Ok(value) = http::HeaderValue::from_str(text) {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::IF_MATCH, value);
        let from_headers =
            optimistic_lock::TagList::from_headers(&headers, &http::header::IF_MATCH);
        assert_eq!(
            from_headers.ok().flatten(),
            listed.ok(),
            "one parser for both"
        );
    }
}

/// The client's reading of `RateLimit` and `Retry-After` (seconds or an HTTP date): never a
/// panic, and a `Retry-After` in seconds is read as exactly that many seconds.
pub fn ratelimit_hints(data: &[u8]) {
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(retry_safe_core::headers::RATELIMIT, value.clone());
    headers.insert(http::header::RETRY_AFTER, value);
    let _ = retry_client::hints::ratelimit_reset(&headers);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
    let hint = retry_client::hints::retry_after(&headers, now);
    if let Some(secs) = std::str::from_utf8(data)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
    {
        assert_eq!(
            hint,
            Some(Duration::from_secs(secs)),
            "delta-seconds {secs}"
        );
    }
}

/// The gateway's config file: never a panic; a refusal names a line inside the text and a
/// reason.
pub fn gateway_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = retry_safe_gateway::Config::parse(text) {
        assert!(!e.reason.is_empty(), "a refusal says why");
        assert!(
            e.line >= 1 && e.line <= text.lines().count().max(1) + 1,
            "line {} of {}",
            e.line,
            text.lines().count()
        );
    }
}

/// Runs `target` over every file named on the command line (what a fuzz target's binary does
/// when it is not built for libFuzzer); exits non-zero when a file cannot be read.
pub fn replay_files(target: fn(&[u8])) {
    for path in std::env::args_os().skip(1) {
        match std::fs::read(&path) {
            Ok(data) => target(&data),
            Err(e) => {
                eprintln!("{}: {e}", path.to_string_lossy());
                std::process::exit(1);
            }
        }
    }
}
