//! Every verification outcome, rotation, tolerance and tampering, on a manual clock.

use http::{HeaderMap, HeaderValue};
use std::time::Duration;
use webhook_sig::{
    ManualClock, Scheme, Secret, SecretError, SignError, Signer, Verifier, VerifyError,
};

const NOW: u64 = 1_700_000_000;
const BODY: &[u8] = br#"{"type":"charge.succeeded","amount":4200}"#;
const ALL: [Scheme; 3] = [Scheme::StandardWebhooks, Scheme::Stripe, Scheme::GitHub];

fn secret(n: u8) -> Secret {
    Secret::new(vec![n; 32]).unwrap()
}

fn signed(scheme: Scheme, key: &Secret, id: &str, ts: u64, body: &[u8]) -> HeaderMap {
    Signer::new(scheme, key).headers_at(id, ts, body).unwrap()
}

fn verifier(scheme: Scheme) -> (Verifier, ManualClock) {
    let clock = ManualClock::at_unix_secs(NOW);
    (
        Verifier::new(scheme, secret(1)).with_clock(clock.clone()),
        clock,
    )
}

#[test]
fn every_scheme_round_trips() {
    for scheme in ALL {
        let (v, _) = verifier(scheme);
        let h = signed(scheme, &secret(1), "evt_1", NOW, BODY);
        let ok = v.verify(&h, BODY).unwrap();
        assert_eq!(ok.scheme, scheme);
        match scheme {
            Scheme::StandardWebhooks => {
                assert_eq!((ok.id.as_deref(), ok.timestamp), (Some("evt_1"), Some(NOW)))
            }
            Scheme::Stripe => assert_eq!((ok.id, ok.timestamp), (None, Some(NOW))),
            Scheme::GitHub => assert_eq!((ok.id.as_deref(), ok.timestamp), (Some("evt_1"), None)),
            other => panic!("no expectation for {other:?}"),
        }
    }
}

#[test]
fn a_changed_body_byte_fails_every_scheme() {
    for scheme in ALL {
        let (v, _) = verifier(scheme);
        let h = signed(scheme, &secret(1), "evt_1", NOW, BODY);
        for i in 0..BODY.len() {
            let mut forged = BODY.to_vec();
            forged[i] ^= 0x01;
            assert_eq!(
                v.verify(&h, &forged),
                Err(VerifyError::NoMatchingSignature),
                "{scheme:?} byte {i}"
            );
        }
        assert_eq!(
            v.verify(&h, &BODY[..BODY.len() - 1]),
            Err(VerifyError::NoMatchingSignature)
        );
    }
}

#[test]
fn a_changed_id_or_timestamp_fails() {
    let (v, _) = verifier(Scheme::StandardWebhooks);
    let mut h = signed(Scheme::StandardWebhooks, &secret(1), "evt_1", NOW, BODY);
    h.insert("webhook-id", HeaderValue::from_static("evt_2"));
    assert_eq!(v.verify(&h, BODY), Err(VerifyError::NoMatchingSignature));

    let mut h = signed(Scheme::StandardWebhooks, &secret(1), "evt_1", NOW, BODY);
    h.insert("webhook-timestamp", HeaderValue::from(NOW + 1));
    assert_eq!(v.verify(&h, BODY), Err(VerifyError::NoMatchingSignature));

    let (v, _) = verifier(Scheme::Stripe);
    let h = signed(Scheme::Stripe, &secret(1), "", NOW, BODY);
    let moved = h["stripe-signature"]
        .to_str()
        .unwrap()
        .replace(&format!("t={NOW}"), &format!("t={}", NOW - 1));
    let mut h = HeaderMap::new();
    h.insert("stripe-signature", moved.parse().unwrap());
    assert_eq!(v.verify(&h, BODY), Err(VerifyError::NoMatchingSignature));
}

#[test]
fn the_wrong_secret_fails() {
    for scheme in ALL {
        let (v, _) = verifier(scheme);
        let h = signed(scheme, &secret(2), "evt_1", NOW, BODY);
        assert_eq!(v.verify(&h, BODY), Err(VerifyError::NoMatchingSignature));
    }
}

#[test]
fn rotation_accepts_the_old_and_the_new_secret_and_says_which() {
    for scheme in ALL {
        let clock = ManualClock::at_unix_secs(NOW);
        let v = Verifier::new(scheme, secret(9))
            .also_accept(secret(1))
            .with_clock(clock);
        let old = signed(scheme, &secret(1), "evt_1", NOW, BODY);
        let new = signed(scheme, &secret(9), "evt_1", NOW, BODY);
        assert_eq!(v.verify(&old, BODY).unwrap().secret_index, 1);
        assert_eq!(v.verify(&new, BODY).unwrap().secret_index, 0);
        let other = signed(scheme, &secret(3), "evt_1", NOW, BODY);
        assert_eq!(
            v.verify(&other, BODY),
            Err(VerifyError::NoMatchingSignature)
        );
    }
}

#[test]
fn a_sender_mid_rotation_sends_both_signatures_in_one_header() {
    let (v, _) = verifier(Scheme::StandardWebhooks);
    let old = Signer::new(Scheme::StandardWebhooks, &secret(5)).signature("evt_1", NOW, BODY);
    let new = Signer::new(Scheme::StandardWebhooks, &secret(1)).signature("evt_1", NOW, BODY);
    let mut h = signed(Scheme::StandardWebhooks, &secret(1), "evt_1", NOW, BODY);
    h.insert("webhook-signature", format!("{old} {new}").parse().unwrap());
    assert!(v.verify(&h, BODY).is_ok());
    // Several header lines are read as one list.
    h.remove("webhook-signature");
    h.append("webhook-signature", old.parse().unwrap());
    h.append("webhook-signature", new.parse().unwrap());
    assert!(v.verify(&h, BODY).is_ok());

    let (v, _) = verifier(Scheme::Stripe);
    let stripe_new = Signer::new(Scheme::Stripe, &secret(1)).signature("", NOW, BODY);
    let stripe_old = Signer::new(Scheme::Stripe, &secret(5)).signature("", NOW, BODY);
    let both = format!("{stripe_old},{}", stripe_new.split_once(',').unwrap().1);
    let mut h = HeaderMap::new();
    h.insert("stripe-signature", both.parse().unwrap());
    assert!(v.verify(&h, BODY).is_ok());
}

#[test]
fn the_window_is_exact_in_both_directions() {
    for scheme in [Scheme::StandardWebhooks, Scheme::Stripe] {
        let (v, clock) = verifier(scheme);
        let h = signed(scheme, &secret(1), "evt_1", NOW, BODY);
        clock.set_unix_secs(NOW + 300);
        assert!(v.verify(&h, BODY).is_ok(), "300 s old is inside");
        clock.set_unix_secs(NOW + 301);
        assert_eq!(
            v.verify(&h, BODY),
            Err(VerifyError::TooOld { age_secs: 301 })
        );
        clock.set_unix_secs(NOW - 300);
        assert!(v.verify(&h, BODY).is_ok(), "300 s ahead is inside");
        clock.set_unix_secs(NOW - 301);
        assert_eq!(
            v.verify(&h, BODY),
            Err(VerifyError::TooNew { ahead_secs: 301 })
        );
    }
}

#[test]
fn the_tolerance_is_configurable_and_github_has_no_timestamp() {
    let clock = ManualClock::at_unix_secs(NOW + 3600);
    let v = Verifier::new(Scheme::StandardWebhooks, secret(1))
        .tolerance(Duration::from_secs(3600))
        .with_clock(clock.clone());
    let h = signed(Scheme::StandardWebhooks, &secret(1), "evt_1", NOW, BODY);
    assert!(v.verify(&h, BODY).is_ok());
    clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(
        v.verify(&h, BODY),
        Err(VerifyError::TooOld { age_secs: 3601 })
    );

    let (g, clock) = verifier(Scheme::GitHub);
    let h = signed(Scheme::GitHub, &secret(1), "d-1", 0, BODY);
    clock.set_unix_secs(u64::MAX);
    assert!(g.verify(&h, BODY).is_ok());
}

#[test]
fn an_old_timestamp_is_refused_before_the_signature_is_computed() {
    // A stale request with a bad signature reports the timestamp.
    let (v, _) = verifier(Scheme::StandardWebhooks);
    let mut h = signed(
        Scheme::StandardWebhooks,
        &secret(2),
        "evt_1",
        NOW - 1000,
        BODY,
    );
    assert_eq!(
        v.verify(&h, BODY),
        Err(VerifyError::TooOld { age_secs: 1000 })
    );
    h.insert("webhook-timestamp", HeaderValue::from(NOW));
    assert_eq!(v.verify(&h, BODY), Err(VerifyError::NoMatchingSignature));
}

#[test]
fn missing_headers_are_named() {
    let (v, _) = verifier(Scheme::StandardWebhooks);
    let full = signed(Scheme::StandardWebhooks, &secret(1), "evt_1", NOW, BODY);
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut h = full.clone();
        h.remove(name);
        let err = v.verify(&h, BODY).unwrap_err();
        assert_eq!(err, VerifyError::MissingHeader(name));
        assert!(err.to_string().contains(name));
    }
    let (v, _) = verifier(Scheme::Stripe);
    assert_eq!(
        v.verify(&HeaderMap::new(), BODY),
        Err(VerifyError::MissingHeader("stripe-signature"))
    );
    let (v, _) = verifier(Scheme::GitHub);
    assert_eq!(
        v.verify(&HeaderMap::new(), BODY),
        Err(VerifyError::MissingHeader("x-hub-signature-256"))
    );
}

#[test]
fn malformed_headers_are_named() {
    let (v, _) = verifier(Scheme::StandardWebhooks);
    let full = signed(Scheme::StandardWebhooks, &secret(1), "evt_1", NOW, BODY);
    let cases: [(&'static str, &str); 4] = [
        ("webhook-signature", "nocomma"),
        ("webhook-signature", "   "),
        ("webhook-id", "has space"),
        ("webhook-id", ""),
    ];
    for (name, value) in cases {
        let mut h = full.clone();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        assert_eq!(
            v.verify(&h, BODY),
            Err(VerifyError::MalformedHeader(name)),
            "{name}: {value:?}"
        );
    }
    let mut h = full.clone();
    h.append("webhook-id", HeaderValue::from_static("evt_2"));
    assert_eq!(
        v.verify(&h, BODY),
        Err(VerifyError::MalformedHeader("webhook-id"))
    );

    let (v, _) = verifier(Scheme::Stripe);
    for value in ["v1=abcd", "t=1,t=2", "t=1,garbage", "v1"] {
        let mut h = HeaderMap::new();
        h.insert("stripe-signature", HeaderValue::from_str(value).unwrap());
        assert_eq!(
            v.verify(&h, BODY),
            Err(VerifyError::MalformedHeader("stripe-signature")),
            "{value:?}"
        );
    }
    let (v, _) = verifier(Scheme::GitHub);
    for value in ["sha1=abcd", "sha256=zz", "sha256=", "757107ea"] {
        let mut h = HeaderMap::new();
        h.insert("x-hub-signature-256", HeaderValue::from_str(value).unwrap());
        assert_eq!(
            v.verify(&h, BODY),
            Err(VerifyError::MalformedHeader("x-hub-signature-256"))
        );
    }
}

#[test]
fn bad_timestamps_are_invalid() {
    let (v, _) = verifier(Scheme::StandardWebhooks);
    let full = signed(Scheme::StandardWebhooks, &secret(1), "evt_1", NOW, BODY);
    for value in [
        "",
        "-5",
        "+1700000000",
        "1700000000.5",
        "17e8",
        "abc",
        " 1700000000",
        "99999999999999999999999",
    ] {
        let mut h = full.clone();
        h.insert("webhook-timestamp", HeaderValue::from_str(value).unwrap());
        assert_eq!(
            v.verify(&h, BODY),
            Err(VerifyError::InvalidTimestamp),
            "{value:?}"
        );
    }
    let (v, _) = verifier(Scheme::Stripe);
    let mut h = HeaderMap::new();
    h.insert("stripe-signature", HeaderValue::from_static("t=soon,v1=00"));
    assert_eq!(v.verify(&h, BODY), Err(VerifyError::InvalidTimestamp));
}

#[test]
fn headers_without_a_usable_signature_match_nothing() {
    let (v, _) = verifier(Scheme::StandardWebhooks);
    let mut h = signed(Scheme::StandardWebhooks, &secret(1), "evt_1", NOW, BODY);
    h.insert(
        "webhook-signature",
        HeaderValue::from_static("v1a,c2lnbmF0dXJl v1,not*base64"),
    );
    assert_eq!(v.verify(&h, BODY), Err(VerifyError::NoMatchingSignature));
    let (v, _) = verifier(Scheme::Stripe);
    let mut h = HeaderMap::new();
    h.insert(
        "stripe-signature",
        format!("t={NOW},v0=abcd").parse().unwrap(),
    );
    assert_eq!(v.verify(&h, BODY), Err(VerifyError::NoMatchingSignature));
}

#[test]
fn secrets_are_checked_and_never_printed() {
    assert_eq!(Secret::new(Vec::new()).unwrap_err(), SecretError::Empty);
    assert_eq!(Secret::from_text("").unwrap_err(), SecretError::Empty);
    assert_eq!(
        Secret::from_standard("whsec_not base64!").unwrap_err(),
        SecretError::InvalidBase64
    );
    assert_eq!(
        Secret::from_standard("whsec_").unwrap_err(),
        SecretError::Empty
    );
    let s = Secret::from_text("sk_live_very_secret").unwrap();
    let printed = [
        format!("{s:?}"),
        format!("{:?}", Verifier::new(Scheme::Stripe, s.clone())),
        format!("{:?}", Signer::new(Scheme::Stripe, &s)),
    ];
    for p in printed {
        assert!(!p.contains("very_secret"), "{p}");
        assert!(p.contains("redacted"), "{p}");
    }
    // Error messages carry no secret or expected signature either.
    let err = Secret::from_standard("whsec_very_secret!").unwrap_err();
    assert!(!err.to_string().contains("very_secret"));
}

#[test]
fn signer_refuses_ids_that_cannot_travel_in_a_header() {
    let s = Signer::new(Scheme::StandardWebhooks, &secret(1));
    for id in ["", "has space", "new\nline", "é"] {
        assert_eq!(
            s.headers_at(id, NOW, BODY).unwrap_err(),
            SignError::InvalidId
        );
    }
}

#[test]
fn signer_uses_its_clock() {
    let clock = ManualClock::at_unix_secs(NOW);
    let s = Signer::new(Scheme::Stripe, &secret(1)).with_clock(clock.clone());
    clock.advance(std::time::Duration::from_secs(42));
    // Stripe-style events carry their id in the body: none is sent, any is accepted.
    let h = s.headers("", BODY).unwrap();
    assert_eq!(h.len(), 1);
    assert!(h["stripe-signature"]
        .to_str()
        .unwrap()
        .starts_with(&format!("t={},v1=", NOW + 42)));
}

/// Svix (Standard-Webhooks-compatible) sends `svix-id` / `svix-timestamp` / `svix-signature`.
#[test]
fn svix_header_names_are_read() {
    let (v, _) = verifier(Scheme::StandardWebhooks);
    let h = signed(Scheme::StandardWebhooks, &secret(1), "msg_svix", NOW, BODY);
    let mut svix = http::HeaderMap::new();
    for (from, to) in [
        ("webhook-id", "svix-id"),
        ("webhook-timestamp", "svix-timestamp"),
        ("webhook-signature", "svix-signature"),
    ] {
        svix.insert(to, h[from].clone());
    }
    let ok = v.verify(&svix, BODY).unwrap();
    assert_eq!(ok.id.as_deref(), Some("msg_svix"));
    assert_eq!(
        v.verify(&svix, b"forged"),
        Err(VerifyError::NoMatchingSignature)
    );
}

/// `whsec_` secrets without their base64 padding load as the padded ones do.
#[test]
fn unpadded_standard_secrets_load() {
    // 22 base64 characters = 16 bytes, normally written with "==".
    let padded = Secret::from_standard("whsec_AAECAwQFBgcICQoLDA0ODw==").unwrap();
    let unpadded = Secret::from_standard("whsec_AAECAwQFBgcICQoLDA0ODw").unwrap();
    let h = Signer::new(Scheme::StandardWebhooks, &padded)
        .headers_at("evt_pad", NOW, BODY)
        .unwrap();
    let v = Verifier::new(Scheme::StandardWebhooks, unpadded)
        .with_clock(ManualClock::at_unix_secs(NOW));
    assert!(v.verify(&h, BODY).is_ok());
    assert!(Secret::from_standard("whsec_not base64!").is_err());
}

/// Signing during a rotation: one header carries a signature per secret, and receivers that know
/// only the old or only the new secret both accept it.
#[test]
fn a_signer_with_two_secrets_satisfies_old_and_new_receivers() {
    for scheme in [Scheme::StandardWebhooks, Scheme::Stripe] {
        let h = Signer::new(scheme, &secret(1))
            .with_secret(&secret(2))
            .headers_at("evt_rot", NOW, BODY)
            .unwrap();
        for n in [1, 2] {
            let v = Verifier::new(scheme, secret(n)).with_clock(ManualClock::at_unix_secs(NOW));
            assert_eq!(
                v.verify(&h, BODY).unwrap().secret_index,
                0,
                "{scheme:?} secret {n}"
            );
        }
        let stranger = Verifier::new(scheme, secret(3)).with_clock(ManualClock::at_unix_secs(NOW));
        assert_eq!(
            stranger.verify(&h, BODY),
            Err(VerifyError::NoMatchingSignature)
        );
    }
}

/// A Stripe `whsec_…` secret read as a Standard Webhooks secret remembers its text: the Stripe
/// verifier keys with the whole text, as Stripe does, and verifies.
#[test]
fn a_secret_read_for_another_scheme_still_verifies_its_own() {
    let text = "whsec_4eC39HqLyjWDarjtT1zdp7dc";
    for scheme in [Scheme::Stripe, Scheme::GitHub] {
        let h = Signer::new(scheme, &Secret::from_text(text).unwrap())
            .headers_at("evt_1", NOW, BODY)
            .unwrap();
        let read_as_standard = Verifier::new(scheme, Secret::from_standard(text).unwrap())
            .with_clock(ManualClock::at_unix_secs(NOW));
        assert!(read_as_standard.verify(&h, BODY).is_ok(), "{scheme:?}");
    }
    // And the reverse: a Standard Webhooks secret read as text keys with its base64 content.
    let standard = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let h = Signer::new(
        Scheme::StandardWebhooks,
        &Secret::from_standard(standard).unwrap(),
    )
    .headers_at("evt_1", NOW, BODY)
    .unwrap();
    let read_as_text = Verifier::new(
        Scheme::StandardWebhooks,
        Secret::from_text(standard).unwrap(),
    )
    .with_clock(ManualClock::at_unix_secs(NOW));
    assert!(read_as_text.verify(&h, BODY).is_ok());
}

/// A text that cannot be a Standard Webhooks key (not base64) is named as the likely cause when
/// nothing matches; a match under another accepted secret still verifies.
#[test]
fn a_secret_that_is_no_key_of_the_scheme_is_named() {
    let h = Signer::new(
        Scheme::StandardWebhooks,
        &Secret::from_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
    )
    .headers_at("evt_1", NOW, BODY)
    .unwrap();
    let wrong = Verifier::new(
        Scheme::StandardWebhooks,
        Secret::from_text("not base64 at all!").unwrap(),
    )
    .with_clock(ManualClock::at_unix_secs(NOW));
    assert_eq!(
        wrong.verify(&h, BODY),
        Err(VerifyError::SecretSchemeMismatch)
    );
    let rotated =
        wrong.also_accept(Secret::from_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap());
    assert!(rotated.verify(&h, BODY).is_ok());
}

/// The Standard Webhooks Python library's unpadded secret (31 base64 characters: the last one
/// carries bits past the 23rd byte, which base64 decoders of the reference libraries drop). The
/// signature is the one `standardwebhooks.Webhook(secret).sign(id, timestamp, body)` gives.
#[test]
fn the_reference_librarys_unpadded_secret_with_trailing_bits_verifies() {
    let secret = Secret::from_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS").unwrap();
    let verifier = Verifier::new(Scheme::StandardWebhooks, secret)
        .with_clock(ManualClock::at_unix_secs(1_614_265_330));
    let mut h = http::HeaderMap::new();
    h.insert(
        "webhook-id",
        "msg_p5jXN8AQM9LWM0D4loKWxJek".parse().unwrap(),
    );
    h.insert("webhook-timestamp", "1614265330".parse().unwrap());
    h.insert(
        "webhook-signature",
        "v1,LVOXivKoo4FWasi/IaHvzhE/u+7/cu2AME+zS/nXqzk="
            .parse()
            .unwrap(),
    );
    assert!(verifier.verify(&h, br#"{"test": 2432232314}"#).is_ok());
}
