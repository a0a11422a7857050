//! `tracestate` cases written from the W3C Trace Context Level 1 Recommendation (§3.3
//! "tracestate Header": list, list-member, key, value grammar; §3.3.1.1 empty and whitespace
//! members; §3.3.1.3 combined header fields; §3.5 mutations: updated members move left).

use trace_ctx::{TraceState, TraceStateError as E};

fn parse(s: &str) -> Result<TraceState, E> {
    TraceState::parse([s.as_bytes()])
}

#[test]
fn members_keep_their_order_and_whitespace_around_them_is_ignored() {
    let ts = parse("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE ,\tfoo=bar").unwrap();
    let got: Vec<_> = ts.iter().collect();
    assert_eq!(
        got,
        [
            ("rojo", "00f067aa0ba902b7"),
            ("congo", "t61rcWkgMzE"),
            ("foo", "bar")
        ]
    );
    assert_eq!(
        ts.to_string(),
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,foo=bar"
    );
}

#[test]
fn empty_members_are_skipped_and_fields_combine_in_order() {
    let ts = parse("a=1,,  ,b=2,").unwrap();
    assert_eq!(ts.len(), 2);
    let ts = TraceState::parse([&b"a=1"[..], b"b=2, c=3"]).unwrap();
    assert_eq!(ts.to_string(), "a=1,b=2,c=3");
    assert!(parse("").unwrap().is_empty());
    assert!(parse("").unwrap().to_header_value().is_none());
}

#[test]
fn multi_tenant_keys() {
    let ts = parse("fw529a3039@dt=00f067aa0ba902b7,3e2a@vendor=x").unwrap();
    assert_eq!(ts.get("fw529a3039@dt"), Some("00f067aa0ba902b7"));
    assert_eq!(ts.get("3e2a@vendor"), Some("x"));
    // The tenant may start with a digit; the system may not; each part has its own length.
    assert_eq!(parse("t@9vendor=x"), Err(E::InvalidKey));
    assert_eq!(parse("@vendor=x"), Err(E::InvalidKey));
    assert_eq!(parse("tenant@=x"), Err(E::InvalidKey));
    assert_eq!(parse("a@b@c=x"), Err(E::InvalidKey));
    assert!(parse(&format!("{}@{}=x", "t".repeat(241), "s".repeat(14))).is_ok());
    assert_eq!(
        parse(&format!("{}@s=x", "t".repeat(242))),
        Err(E::InvalidKey)
    );
    assert_eq!(
        parse(&format!("t@{}=x", "s".repeat(15))),
        Err(E::InvalidKey)
    );
}

#[test]
fn invalid_keys_are_rejected() {
    for bad in [
        "Rojo=1",  // upper case
        "1rojo=1", // a simple key starts with a letter
        "ro jo=1", // space inside
        "rojo =1", // space before '='
        "ro.jo=1", // '.' is not a key character
        "=1",      // empty
        "rojó=1",  // not ASCII
    ] {
        assert_eq!(parse(bad), Err(E::InvalidKey), "{bad}");
    }
    assert!(parse("a_-*/9=1").is_ok());
    assert!(parse(&format!("{}=1", "k".repeat(256))).is_ok());
    assert_eq!(parse(&format!("{}=1", "k".repeat(257))), Err(E::InvalidKey));
}

#[test]
fn invalid_values_are_rejected() {
    for bad in ["k=", "k=a=b", "k=caf\u{e9}", "k=\u{7f}"] {
        assert_eq!(parse(bad), Err(E::InvalidValue), "{bad:?}");
    }
    assert_eq!(parse("k"), Err(E::MissingEquals));
    // Inner spaces are allowed, a trailing space is whitespace before the next comma.
    assert_eq!(parse("k=a b").unwrap().get("k"), Some("a b"));
    assert_eq!(parse("k=ab ,x=1").unwrap().get("k"), Some("ab"));
    assert!(parse(&format!("k={}", "v".repeat(256))).is_ok());
    assert_eq!(
        parse(&format!("k={}", "v".repeat(257))),
        Err(E::InvalidValue)
    );
}

#[test]
fn thirty_three_members_or_a_duplicate_reject_the_list() {
    let list = |n: usize| {
        (0..n)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(parse(&list(32)).unwrap().len(), 32);
    assert_eq!(parse(&list(33)), Err(E::TooManyMembers));
    assert_eq!(parse("a=1,b=2,a=3"), Err(E::DuplicateKey));
    // Across several fields too.
    assert_eq!(
        TraceState::parse([&b"a=1"[..], b"a=2"]),
        Err(E::DuplicateKey)
    );
}

#[test]
fn an_updated_member_moves_to_the_front_and_the_list_stays_within_32() {
    let mut ts = parse("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7").unwrap();
    ts.insert("rojo", "00f067aa0ba902b8").unwrap();
    assert_eq!(ts.to_string(), "rojo=00f067aa0ba902b8,congo=t61rcWkgMzE");
    ts.insert("new", "1").unwrap();
    assert_eq!(ts.iter().next(), Some(("new", "1")));
    assert_eq!(ts.insert("Bad", "1"), Err(E::InvalidKey));

    let mut full = parse(
        &(0..32)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(","),
    )
    .unwrap();
    full.insert("mine", "1").unwrap();
    assert_eq!(full.len(), 32);
    assert_eq!(full.iter().next(), Some(("mine", "1")));
    assert_eq!(full.get("k31"), None, "the right-most member made room");
}

#[test]
fn a_long_list_is_cut_to_512_characters_long_members_first() {
    let long = format!("big={}", "x".repeat(200));
    let members: Vec<String> = (0..20)
        .map(|i| format!("k{i:02}={}", "v".repeat(20)))
        .collect();
    let ts = parse(&format!("{},{long}", members.join(","))).unwrap();
    let sent = ts.to_header_value().unwrap();
    let sent = sent.to_str().unwrap();
    assert!(sent.len() <= 512, "{}", sent.len());
    assert!(
        !sent.contains("big="),
        "the member over 128 characters goes first"
    );
    assert!(sent.starts_with("k00="), "left-most members are kept");
}
