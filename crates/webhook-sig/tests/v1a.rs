//! Standard Webhooks' asymmetric signatures (`v1a`, Ed25519): round trips, rotation headers that
//! mix `v1` and `v1a`, tampering, key parsing, and a header stuffed with entries.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{HeaderMap, HeaderValue};
use webhook_sig::{
    header, MatchedKey, PublicKey, Scheme, Secret, SecretError, Signer, SigningKey, Verifier,
    VerifyError,
};

const TS: u64 = 1_700_000_000;
const BODY: &[u8] = br#"{"type":"order.created","order":"ord_1"}"#;

fn key(n: u8) -> SigningKey {
    SigningKey::from_seed([n; 32])
}

fn secret() -> Secret {
    Secret::from_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
}

fn signature_of(headers: &HeaderMap) -> &str {
    headers["webhook-signature"].to_str().unwrap()
}

#[test]
fn v1a_round_trip_with_the_public_key_only() {
    let headers = Signer::ed25519(&key(1))
        .headers_at("msg_1", TS, BODY)
        .unwrap();
    let sig = signature_of(&headers);
    assert!(sig.starts_with("v1a,"), "{sig}");
    assert_eq!(header::parse_standard_v1a(sig.as_bytes()).unwrap().len(), 1);
    assert!(header::parse_standard(sig.as_bytes()).unwrap().is_empty());

    let verified = Verifier::ed25519(key(1).public_key())
        .verify_at(&headers, BODY, TS)
        .unwrap();
    assert_eq!(verified.key, MatchedKey::PublicKey(0));
    assert_eq!(verified.id.as_deref(), Some("msg_1"));
    assert_eq!(verified.timestamp, Some(TS));
}

/// The signature is the Ed25519 signature of `{id}.{timestamp}.{body}`, base64 — the content any
/// other implementation signs: checked here with the key and message spelled out.
#[test]
fn v1a_signs_the_standard_content() {
    let k = key(3);
    let headers = Signer::ed25519(&k).headers_at("msg_x", 42, b"hi").unwrap();
    let sig = header::parse_standard_v1a(signature_of(&headers).as_bytes()).unwrap()[0];
    let dalek = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let expected = ed25519_dalek::Signer::sign(&dalek, b"msg_x.42.hi").to_bytes();
    assert_eq!(sig, expected);
    assert_eq!(
        PublicKey::from_bytes(dalek.verifying_key().to_bytes()).unwrap(),
        k.public_key()
    );
}

#[test]
fn tampering_and_other_keys_are_rejected() {
    let headers = Signer::ed25519(&key(1))
        .headers_at("msg_1", TS, BODY)
        .unwrap();
    let verifier = Verifier::ed25519(key(1).public_key());
    // Another body, another id, another timestamp: the signature covers all three.
    assert_eq!(
        verifier.verify_at(&headers, b"{}", TS),
        Err(VerifyError::NoMatchingSignature)
    );
    let mut other_id = headers.clone();
    other_id.insert("webhook-id", HeaderValue::from_static("msg_2"));
    assert_eq!(
        verifier.verify_at(&other_id, BODY, TS),
        Err(VerifyError::NoMatchingSignature)
    );
    let mut other_ts = headers.clone();
    other_ts.insert("webhook-timestamp", HeaderValue::from(TS + 1));
    assert_eq!(
        verifier.verify_at(&other_ts, BODY, TS),
        Err(VerifyError::NoMatchingSignature)
    );
    // A flipped bit of the signature itself.
    let mut sig = header::parse_standard_v1a(signature_of(&headers).as_bytes()).unwrap()[0];
    sig[10] ^= 0x01;
    let mut flipped = headers.clone();
    flipped.insert(
        "webhook-signature",
        HeaderValue::from_str(&format!("v1a,{}", STANDARD.encode(sig))).unwrap(),
    );
    assert_eq!(
        verifier.verify_at(&flipped, BODY, TS),
        Err(VerifyError::NoMatchingSignature)
    );
    // A key nobody trusts.
    assert_eq!(
        Verifier::ed25519(key(2).public_key()).verify_at(&headers, BODY, TS),
        Err(VerifyError::NoMatchingSignature)
    );
    // A v1a signature is no HMAC: an HMAC-only verifier refuses it.
    assert_eq!(
        Verifier::new(Scheme::StandardWebhooks, secret()).verify_at(&headers, BODY, TS),
        Err(VerifyError::NoMatchingSignature)
    );
    // The timestamp window applies to v1a too.
    assert_eq!(
        verifier.verify_at(&headers, BODY, TS + 301),
        Err(VerifyError::TooOld { age_secs: 301 })
    );
}

/// During a rotation the sender signs with an HMAC secret and two Ed25519 keys: receivers that
/// know only the secret, only the old public key or only the new one all accept.
#[test]
fn a_rotation_header_mixes_v1_and_v1a() {
    let headers = Signer::new(Scheme::StandardWebhooks, &secret())
        .with_signing_key(&key(1))
        .with_signing_key(&key(2))
        .headers_at("msg_1", TS, BODY)
        .unwrap();
    let sig = signature_of(&headers);
    let versions: Vec<&str> = sig
        .split(' ')
        .map(|e| e.split(',').next().unwrap())
        .collect();
    assert_eq!(versions, ["v1", "v1a", "v1a"]);

    let hmac = Verifier::new(Scheme::StandardWebhooks, secret());
    assert_eq!(
        hmac.verify_at(&headers, BODY, TS).unwrap().key,
        MatchedKey::Secret(0)
    );
    let old = Verifier::ed25519(key(1).public_key());
    assert_eq!(
        old.verify_at(&headers, BODY, TS).unwrap().key,
        MatchedKey::PublicKey(0)
    );
    let new = Verifier::ed25519(key(9).public_key()).also_trust(key(2).public_key());
    assert_eq!(
        new.verify_at(&headers, BODY, TS).unwrap().key,
        MatchedKey::PublicKey(1)
    );
    // A verifier with both kinds prefers the HMAC match (cheaper), and accepts v1a alone.
    let both = Verifier::ed25519(key(2).public_key()).also_accept(secret());
    assert_eq!(
        both.verify_at(&headers, BODY, TS).unwrap().key,
        MatchedKey::Secret(0)
    );
    let only_v1a = Signer::ed25519(&key(2))
        .headers_at("msg_1", TS, BODY)
        .unwrap();
    assert_eq!(
        both.verify_at(&only_v1a, BODY, TS).unwrap().key,
        MatchedKey::PublicKey(0)
    );
}

#[test]
fn svix_header_names_carry_v1a_too() {
    let headers = Signer::ed25519(&key(4))
        .headers_at("msg_s", TS, BODY)
        .unwrap();
    let mut svix = HeaderMap::new();
    svix.insert("svix-id", headers["webhook-id"].clone());
    svix.insert("svix-timestamp", headers["webhook-timestamp"].clone());
    svix.insert("svix-signature", headers["webhook-signature"].clone());
    assert!(Verifier::ed25519(key(4).public_key())
        .verify_at(&svix, BODY, TS)
        .is_ok());
}

#[test]
fn a_header_stuffed_with_v1a_entries_is_malformed() {
    let one = Signer::ed25519(&key(1))
        .headers_at("msg_1", TS, BODY)
        .unwrap();
    let entry = signature_of(&one).to_owned();
    let stuffed = vec![entry.as_str(); header::MAX_V1A_ENTRIES + 1].join(" ");
    let mut headers = one.clone();
    headers.insert(
        "webhook-signature",
        HeaderValue::from_str(&stuffed).unwrap(),
    );
    assert_eq!(
        Verifier::ed25519(key(1).public_key()).verify_at(&headers, BODY, TS),
        Err(VerifyError::MalformedHeader("webhook-signature"))
    );
    // Split over several header lines, the count is the same.
    let mut split = one.clone();
    split.remove("webhook-signature");
    for _ in 0..=header::MAX_V1A_ENTRIES {
        split.append("webhook-signature", HeaderValue::from_str(&entry).unwrap());
    }
    assert_eq!(
        Verifier::ed25519(key(1).public_key()).verify_at(&split, BODY, TS),
        Err(VerifyError::MalformedHeader("webhook-signature"))
    );
    // At the limit it still verifies.
    let at_limit = vec![entry.as_str(); header::MAX_V1A_ENTRIES].join(" ");
    headers.insert(
        "webhook-signature",
        HeaderValue::from_str(&at_limit).unwrap(),
    );
    assert!(Verifier::ed25519(key(1).public_key())
        .verify_at(&headers, BODY, TS)
        .is_ok());
}

#[test]
fn keys_parse_in_their_standard_forms() {
    let k = SigningKey::generate().unwrap();
    let text = k.to_standard();
    assert!(text.starts_with("whsk_"));
    let back = SigningKey::from_standard(&text).unwrap();
    assert_eq!(back.public_key(), k.public_key());
    // Unpadded base64 is read too, as for whsec_ secrets.
    let unpadded = text.trim_end_matches('=');
    assert_eq!(
        SigningKey::from_standard(unpadded).unwrap().public_key(),
        k.public_key()
    );
    let public = k.public_key().to_string();
    assert!(public.starts_with("whpk_"));
    assert_eq!(PublicKey::from_standard(&public).unwrap(), k.public_key());
    assert_eq!(
        PublicKey::from_standard("whpk_not base64!").unwrap_err(),
        SecretError::InvalidBase64
    );
    assert_eq!(
        PublicKey::from_standard(&format!("whpk_{}", STANDARD.encode([1u8; 31]))).unwrap_err(),
        SecretError::InvalidKeyLength
    );
    assert_eq!(
        SigningKey::from_standard("whsk_").unwrap_err(),
        SecretError::Empty
    );
    // Secrets stay out of Debug.
    let debug = format!("{k:?} {:?}", Signer::ed25519(&k));
    assert!(!debug.contains(&text[5..]), "{debug}");
}
