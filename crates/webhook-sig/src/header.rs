//! Parsers of the signature headers. They read raw header bytes (which come from the network and
//! may be anything), never panic, and return typed errors.
//!
//! ```
//! use webhook_sig::header;
//!
//! let stripe = header::parse_stripe(b"t=1492774577,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39").unwrap();
//! assert_eq!(stripe.timestamp, 1_492_774_577);
//! assert_eq!(stripe.signatures.len(), 1); // the v0 entry is not an HMAC-SHA256 signature
//! ```

use crate::VerifyError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// `webhook-id` of Standard Webhooks.
pub const WEBHOOK_ID: &str = "webhook-id";
/// `webhook-timestamp` of Standard Webhooks.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// `webhook-signature` of Standard Webhooks.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
/// Svix's name for `webhook-id` (the same scheme).
pub const SVIX_ID: &str = "svix-id";
/// Svix's name for `webhook-timestamp`.
pub const SVIX_TIMESTAMP: &str = "svix-timestamp";
/// Svix's name for `webhook-signature`.
pub const SVIX_SIGNATURE: &str = "svix-signature";
/// The Stripe-style signature header.
pub const STRIPE_SIGNATURE: &str = "stripe-signature";
/// The GitHub-style signature header.
pub const HUB_SIGNATURE_256: &str = "x-hub-signature-256";
/// GitHub's delivery id, the event id of GitHub-style webhooks.
pub const GITHUB_DELIVERY: &str = "x-github-delivery";

/// An HMAC-SHA256 tag.
pub type Tag = [u8; 32];

/// Tags collected from a header: the first few inline, the rest (rare) on the heap.
#[derive(Default)]
pub(crate) struct Tags {
    inline: [Tag; 4],
    len: usize,
    spill: Vec<Tag>,
}

impl Tags {
    pub(crate) fn push(&mut self, tag: Tag) {
        if self.len < self.inline.len() {
            self.inline[self.len] = tag;
            self.len += 1;
        } else {
            self.spill.push(tag);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Tag> {
        self.inline[..self.len].iter().chain(self.spill.iter())
    }

    fn into_vec(self) -> Vec<Tag> {
        self.iter().copied().collect()
    }
}

/// The longest timestamp accepted, in digits (u64 seconds need at most 20).
const MAX_TIMESTAMP_DIGITS: usize = 20;

/// Parses a Unix timestamp in seconds: ASCII digits only (no sign, no spaces, no fraction).
pub fn parse_timestamp(value: &[u8]) -> Result<u64, VerifyError> {
    if value.is_empty()
        || value.len() > MAX_TIMESTAMP_DIGITS
        || !value.iter().all(u8::is_ascii_digit)
    {
        return Err(VerifyError::InvalidTimestamp);
    }
    value.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(u64::from(d - b'0')))
            .ok_or(VerifyError::InvalidTimestamp)
    })
}

/// An Ed25519 signature (`v1a` entries of Standard Webhooks).
pub type Ed25519Signature = [u8; 64];

/// The most `v1a` entries one verification looks at: each costs an Ed25519 verification
/// (tens of µs), so a header stuffed with them is refused as malformed rather than checked.
pub const MAX_V1A_ENTRIES: usize = 16;

/// Parses a `webhook-signature` value: space-separated `<version>,<signature>` entries.
///
/// Returns the `v1` (HMAC-SHA256, base64) tags. Entries of other versions (such as `v1a`,
/// Ed25519: see [`parse_standard_v1a`]) are skipped, and so are `v1` entries that are not the
/// base64 of 32 bytes: they can never match. An entry without a comma, or a value with no entry
/// at all, is malformed.
pub fn parse_standard(value: &[u8]) -> Result<Vec<Tag>, VerifyError> {
    let mut tags = Tags::default();
    standard_into(value, &mut tags, &mut Vec::new())?;
    Ok(tags.into_vec())
}

/// Parses a `webhook-signature` value as [`parse_standard`] does and returns its `v1a`
/// (Ed25519, base64 of 64 bytes) signatures; `v1a` entries of another size are skipped. More
/// than [`MAX_V1A_ENTRIES`] `v1a` entries make the value malformed.
pub fn parse_standard_v1a(value: &[u8]) -> Result<Vec<Ed25519Signature>, VerifyError> {
    let mut ed = Vec::new();
    standard_into(value, &mut Tags::default(), &mut ed)?;
    Ok(ed)
}

pub(crate) fn standard_into(
    value: &[u8],
    tags: &mut Tags,
    ed: &mut Vec<Ed25519Signature>,
) -> Result<(), VerifyError> {
    let malformed = VerifyError::MalformedHeader(WEBHOOK_SIGNATURE);
    let mut entries = 0usize;
    let mut v1a = 0usize;
    for entry in value.split(|b| *b == b' ').filter(|e| !e.is_empty()) {
        entries += 1;
        let Some(comma) = entry.iter().position(|b| *b == b',') else {
            return Err(malformed);
        };
        let (version, sig) = (&entry[..comma], &entry[comma + 1..]);
        match version {
            b"v1" => {
                let mut buf = [0u8; 48];
                if let Ok(32) = STANDARD.decode_slice(sig, &mut buf) {
                    let mut tag = [0u8; 32];
                    tag.copy_from_slice(&buf[..32]);
                    tags.push(tag);
                }
            }
            b"v1a" => {
                v1a += 1;
                if v1a > MAX_V1A_ENTRIES {
                    return Err(malformed);
                }
                let mut buf = [0u8; 96];
                if let Ok(64) = STANDARD.decode_slice(sig, &mut buf) {
                    let mut signature = [0u8; 64];
                    signature.copy_from_slice(&buf[..64]);
                    ed.push(signature);
                }
            }
            _ => {}
        }
    }
    if entries == 0 {
        return Err(malformed);
    }
    Ok(())
}

/// A parsed Stripe-style header.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StripeHeader {
    /// The `t=` timestamp.
    pub timestamp: u64,
    /// The `v1=` tags; other schemes (`v0=`…) are skipped, as are `v1` values that are not 64 hex
    /// digits.
    pub signatures: Vec<Tag>,
}

/// Parses `t=<unix>,v1=<hex>[,v1=<hex>…]`. Items are comma-separated `key=value` pairs (spaces
/// around them are ignored); exactly one `t` is required.
pub fn parse_stripe(value: &[u8]) -> Result<StripeHeader, VerifyError> {
    let mut tags = Tags::default();
    let timestamp = stripe_into(value, &mut tags)?;
    Ok(StripeHeader {
        timestamp,
        signatures: tags.into_vec(),
    })
}

/// Collects the `v1` tags into `signatures`; returns the timestamp.
pub(crate) fn stripe_into(value: &[u8], signatures: &mut Tags) -> Result<u64, VerifyError> {
    let malformed = VerifyError::MalformedHeader(STRIPE_SIGNATURE);
    let mut timestamp = None;
    for item in value.split(|b| *b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() {
            continue;
        }
        let Some(eq) = item.iter().position(|b| *b == b'=') else {
            return Err(malformed);
        };
        let (key, val) = (&item[..eq], &item[eq + 1..]);
        match key {
            b"t" => {
                if timestamp.is_some() {
                    return Err(malformed);
                }
                timestamp = Some(parse_timestamp(val)?);
            }
            b"v1" => {
                if let Some(tag) = decode_hex_tag(val) {
                    signatures.push(tag);
                }
            }
            _ => {}
        }
    }
    timestamp.ok_or(malformed)
}

/// Parses `sha256=<64 hex digits>` (surrounding spaces ignored).
pub fn parse_github(value: &[u8]) -> Result<Tag, VerifyError> {
    value
        .trim_ascii()
        .strip_prefix(b"sha256=")
        .and_then(decode_hex_tag)
        .ok_or(VerifyError::MalformedHeader(HUB_SIGNATURE_256))
}

fn decode_hex_tag(hex_digits: &[u8]) -> Option<Tag> {
    let mut tag = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut tag).ok()?;
    Some(tag)
}
