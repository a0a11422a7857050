//! `Idempotency-Key` parsing: the rules and a property test that the parser is total.

use idem_core::{IdempotencyKey, KeyError, MAX_KEY_LEN};
use proptest::prelude::*;

#[test]
fn accepts_bare_and_quoted_forms_as_one_key() {
    let bare = IdempotencyKey::parse(b"8e03978e-40d5-43e8-bc93-6894a57f9324").unwrap();
    let quoted = IdempotencyKey::parse(br#""8e03978e-40d5-43e8-bc93-6894a57f9324""#).unwrap();
    assert_eq!(bare, quoted);
    assert_eq!(bare.as_str(), "8e03978e-40d5-43e8-bc93-6894a57f9324");
}

#[test]
fn quoted_form_unescapes() {
    let k = IdempotencyKey::parse(br#""a\"b\\c""#).unwrap();
    assert_eq!(k.as_str(), r#"a"b\c"#);
}

#[test]
fn length_bounds() {
    assert_eq!(IdempotencyKey::parse(b""), Err(KeyError::Empty));
    assert_eq!(IdempotencyKey::parse(b"\"\""), Err(KeyError::Empty));
    assert!(IdempotencyKey::parse(&[b'a'; MAX_KEY_LEN]).is_ok());
    assert_eq!(
        IdempotencyKey::parse(&[b'a'; MAX_KEY_LEN + 1]),
        Err(KeyError::TooLong { len: 256 })
    );
}

#[test]
fn rejects_control_space_and_non_ascii() {
    assert_eq!(
        IdempotencyKey::parse(b"ab\tc"),
        Err(KeyError::InvalidByte { position: 2 })
    );
    assert_eq!(
        IdempotencyKey::parse(b"a b"),
        Err(KeyError::InvalidByte { position: 1 })
    );
    assert_eq!(
        IdempotencyKey::parse(b"a\x7f"),
        Err(KeyError::InvalidByte { position: 1 })
    );
    assert_eq!(
        IdempotencyKey::parse("clé".as_bytes()),
        Err(KeyError::InvalidByte { position: 2 })
    );
    assert_eq!(
        IdempotencyKey::parse(b"\"a\x01\""),
        Err(KeyError::InvalidByte { position: 1 })
    );
}

#[test]
fn rejects_malformed_quoted_strings() {
    for bad in [&b"\"abc"[..], b"\"a\\x\"", b"\"abc\";p=1", b"\"a\\"] {
        assert_eq!(
            IdempotencyKey::parse(bad),
            Err(KeyError::MalformedQuoted),
            "{bad:?}"
        );
    }
}

#[test]
fn surrounding_whitespace_is_not_part_of_the_key() {
    assert_eq!(IdempotencyKey::parse(b"  k1\t").unwrap().as_str(), "k1");
}

proptest! {
    #[test]
    fn parser_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = IdempotencyKey::parse(&bytes);
    }

    #[test]
    fn every_valid_key_parses_in_both_forms(key in "[!#-~][!-~]{0,254}") {
        let bare = IdempotencyKey::parse(key.as_bytes()).unwrap();
        prop_assert_eq!(bare.as_str(), key.as_str());
        let escaped = key.replace('\\', "\\\\").replace('"', "\\\"");
        let quoted = IdempotencyKey::parse(format!("\"{escaped}\"").as_bytes()).unwrap();
        prop_assert_eq!(quoted, bare);
    }

    #[test]
    fn accepted_keys_obey_the_rules(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(k) = IdempotencyKey::parse(&bytes) {
            prop_assert!((1..=MAX_KEY_LEN).contains(&k.as_str().len()));
            prop_assert!(k.as_str().bytes().all(|b| (0x21..=0x7e).contains(&b)));
        }
    }
}
