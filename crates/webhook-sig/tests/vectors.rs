//! Published examples of each scheme, written here from their sources.

use http::{HeaderMap, HeaderValue};
use webhook_sig::{header, Scheme, Secret, Signer, Verifier, VerifyError};

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

// Standard Webhooks: the example of the reference libraries' test suites
// (github.com/standard-webhooks/standard-webhooks, libraries/*, "sign function works").
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_TS: u64 = 1_614_265_330;
const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

#[test]
fn standard_webhooks_published_example_signs_and_verifies() {
    let secret = Secret::from_standard(SW_SECRET).unwrap();
    let signer = Signer::new(Scheme::StandardWebhooks, &secret);
    assert_eq!(signer.signature(SW_ID, SW_TS, SW_BODY), SW_SIG);

    let verifier = Verifier::new(Scheme::StandardWebhooks, secret);
    let h = headers(&[
        ("webhook-id", SW_ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", SW_SIG),
    ]);
    let ok = verifier.verify_at(&h, SW_BODY, SW_TS).unwrap();
    assert_eq!(ok.id.as_deref(), Some(SW_ID));
    assert_eq!(ok.timestamp, Some(SW_TS));
    assert_eq!(ok.secret_index, 0);
}

#[test]
fn standard_webhooks_example_with_other_versions_and_several_signatures() {
    // The spec allows several space-delimited signatures; unknown versions (v1a = Ed25519) are
    // skipped, and one matching v1 is enough.
    let verifier = Verifier::new(
        Scheme::StandardWebhooks,
        Secret::from_standard(SW_SECRET).unwrap(),
    );
    let h = headers(&[
        ("webhook-id", SW_ID),
        ("webhook-timestamp", "1614265330"),
        (
            "webhook-signature",
            &format!("v1a,aGVsbG8= v1,bm9wZQ== {SW_SIG} v2,whatever"),
        ),
    ]);
    assert!(verifier.verify_at(&h, SW_BODY, SW_TS).is_ok());
}

#[test]
fn standard_webhooks_secret_without_prefix_is_the_same_key() {
    let with = Secret::from_standard(SW_SECRET).unwrap();
    let without = Secret::from_standard(SW_SECRET.trim_start_matches("whsec_")).unwrap();
    assert_eq!(
        Signer::new(Scheme::StandardWebhooks, &with).signature(SW_ID, SW_TS, SW_BODY),
        Signer::new(Scheme::StandardWebhooks, &without).signature(SW_ID, SW_TS, SW_BODY),
    );
}

// GitHub: "Validating webhook deliveries", section "Testing the webhook payload validation"
// (docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries).
#[test]
fn github_published_example_signs_and_verifies() {
    let secret = Secret::from_text("It's a Secret to Everybody").unwrap();
    let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert_eq!(
        Signer::new(Scheme::GitHub, &secret).signature("unused", 0, b"Hello, World!"),
        expected
    );
    let verifier = Verifier::new(Scheme::GitHub, secret);
    let h = headers(&[("x-hub-signature-256", expected)]);
    let ok = verifier.verify_at(&h, b"Hello, World!", 0).unwrap();
    assert_eq!((ok.id, ok.timestamp), (None, None));
    assert_eq!(
        verifier.verify_at(&h, b"Hello, World?", 0),
        Err(VerifyError::NoMatchingSignature)
    );
}

// Stripe: the example header of "Verify webhook signatures manually"
// (docs.stripe.com/webhooks#verify-manually). Its secret is not published, so this checks the
// parse: one `t`, one `v1` (used) and one `v0` (ignored).
#[test]
fn stripe_published_header_example_parses() {
    let value = "t=1492774577,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39";
    let parsed = header::parse_stripe(value.as_bytes()).unwrap();
    assert_eq!(parsed.timestamp, 1_492_774_577);
    assert_eq!(parsed.signatures.len(), 1);
    assert_eq!(
        hex::encode(parsed.signatures[0]),
        "5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"
    );
}

// Stripe-style, cross-checked with another implementation: Python's `hmac` module computed
// hmac.new(b"whsec_test_secret", b"1492774577." + body, sha256).hexdigest().
#[test]
fn stripe_style_matches_an_independent_hmac() {
    let body = br#"{"id":"evt_test_webhook","object":"event"}"#;
    let sig = "88a022085c6bdb887b02cb26ff76dd681234d9675c0f22844059f55552a8883a";
    let secret = Secret::from_text("whsec_test_secret").unwrap();
    assert_eq!(
        Signer::new(Scheme::Stripe, &secret).signature("", 1_492_774_577, body),
        format!("t=1492774577,v1={sig}")
    );
    let verifier = Verifier::new(Scheme::Stripe, secret);
    let h = headers(&[(
        "stripe-signature",
        &format!("t=1492774577,v1={sig},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"),
    )]);
    let ok = verifier.verify_at(&h, body, 1_492_774_577 + 10).unwrap();
    assert_eq!(ok.timestamp, Some(1_492_774_577));
}
