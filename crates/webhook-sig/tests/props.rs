//! Properties over arbitrary payloads, ids, timestamps and header bytes.

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use webhook_sig::{header, Scheme, Secret, Signer, Verifier, VerifyError};

fn scheme() -> impl Strategy<Value = Scheme> {
    prop_oneof![
        Just(Scheme::StandardWebhooks),
        Just(Scheme::Stripe),
        Just(Scheme::GitHub)
    ]
}

proptest! {
    #[test]
    fn sign_then_verify_succeeds_inside_the_window(
        scheme in scheme(),
        key in proptest::collection::vec(any::<u8>(), 1..80),
        id in "[!-~]{1,80}",
        ts in 0u64..4_000_000_000,
        skew in -300i64..=300,
        body in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let secret = Secret::new(key).unwrap();
        let headers = Signer::new(scheme, &secret).headers_at(&id, ts, &body).unwrap();
        let now = ts.saturating_add_signed(skew);
        let verified = Verifier::new(scheme, secret).verify_at(&headers, &body, now).unwrap();
        prop_assert_eq!(verified.scheme, scheme);
        if scheme != Scheme::Stripe {
            prop_assert_eq!(verified.id.as_deref(), Some(id.as_str()));
        }
    }

    #[test]
    fn any_single_bit_flip_of_the_body_fails(
        scheme in scheme(),
        body in proptest::collection::vec(any::<u8>(), 1..2048),
        bit in any::<proptest::sample::Index>(),
    ) {
        let secret = Secret::new(*b"0123456789abcdef0123456789abcdef").unwrap();
        let headers = Signer::new(scheme, &secret).headers_at("evt_1", 1_000, &body).unwrap();
        let mut flipped = body.clone();
        let i = bit.index(body.len() * 8);
        flipped[i / 8] ^= 1 << (i % 8);
        prop_assert_eq!(
            Verifier::new(scheme, secret).verify_at(&headers, &flipped, 1_000),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn header_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = header::parse_standard_v1a(&bytes);
        let _ = header::parse_standard(&bytes);
        let _ = header::parse_stripe(&bytes);
        let _ = header::parse_github(&bytes);
        let _ = header::parse_timestamp(&bytes);
    }

    #[test]
    fn structured_junk_never_panics(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("t=".to_string()), Just("v1=".to_string()), Just("v1,".to_string()),
                Just(",".to_string()), Just(" ".to_string()), Just("=".to_string()),
                Just("sha256=".to_string()), "[0-9a-fA-F+/=]{0,70}", "[ -~]{0,5}"
            ],
            0..12,
        ),
        scheme in scheme(),
    ) {
        let value = parts.concat();
        let _ = header::parse_standard(value.as_bytes());
        let _ = header::parse_stripe(value.as_bytes());
        let _ = header::parse_github(value.as_bytes());
        if let Ok(v) = HeaderValue::from_str(&value) {
            let mut h = HeaderMap::new();
            for name in ["webhook-id", "webhook-timestamp", "webhook-signature", "stripe-signature", "x-hub-signature-256"] {
                h.insert(name, v.clone());
            }
            let verifier = Verifier::new(scheme, Secret::new(*b"k").unwrap());
            prop_assert!(verifier.verify_at(&h, b"body", 0).is_err());
        }
    }

    #[test]
    fn timestamps_parse_exactly_like_unsigned_integers(n in any::<u64>(), zeros in 0usize..3) {
        let text = format!("{}{n}", "0".repeat(zeros));
        let expected = if text.len() <= 20 { Ok(n) } else { Err(VerifyError::InvalidTimestamp) };
        prop_assert_eq!(header::parse_timestamp(text.as_bytes()), expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// v1a: any seed, id, body: the signature verifies under the public key, and a flipped
    /// body bit does not.
    #[test]
    fn v1a_round_trips_and_rejects_a_flipped_bit(
        seed in any::<[u8; 32]>(),
        id in "[!-~]{1,40}",
        ts in 0u64..4_000_000_000,
        body in proptest::collection::vec(any::<u8>(), 1..512),
        bit in any::<proptest::sample::Index>(),
    ) {
        let key = webhook_sig::SigningKey::from_seed(seed);
        let headers = Signer::ed25519(&key).headers_at(&id, ts, &body).unwrap();
        let verifier = Verifier::ed25519(key.public_key());
        prop_assert!(verifier.verify_at(&headers, &body, ts).is_ok());
        let mut tampered = body.clone();
        let i = bit.index(tampered.len() * 8);
        tampered[i / 8] ^= 1 << (i % 8);
        prop_assert_eq!(
            verifier.verify_at(&headers, &tampered, ts),
            Err(VerifyError::NoMatchingSignature)
        );
    }
}
