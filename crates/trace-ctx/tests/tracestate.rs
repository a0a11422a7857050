//! `tracestate` cases written from W3C Trace Context Level 2 (§3.3 "tracestate Header": list,
//! list-member, key, value grammar; empty and whitespace members; combined header fields;
//! mutations: updated members move left), and the lossy reading of received lists.

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
fn level_2_keys_take_at_signs_and_may_start_with_a_digit() {
    let ts = parse("fw529a3039@dt=00f067aa0ba902b7,3e2a@vendor=x").unwrap();
    assert_eq!(ts.get("fw529a3039@dt"), Some("00f067aa0ba902b7"));
    assert_eq!(ts.get("3e2a@vendor"), Some("x"));
    // Level 2: key = (lcalpha / DIGIT) 0*255(keychar), keychar includes "@" anywhere.
    for good in ["t@9vendor=x", "tenant@=x", "a@b@c=x", "1rojo=1", "9=1"] {
        assert!(parse(good).is_ok(), "{good}");
    }
    assert_eq!(parse("@vendor=x"), Err(E::InvalidKey));
    assert!(parse(&format!("{}@{}=x", "t".repeat(241), "s".repeat(14))).is_ok());
    assert_eq!(
        parse(&format!("{}@s=x", "t".repeat(255))),
        Err(E::InvalidKey)
    );
}

#[test]
fn received_lists_keep_their_valid_members() {
    let (ts, dropped) = TraceState::parse_lossy([
        &b"rojo=00f067aa0ba902b7, Bad=1, congo=t61rcWkgMzE, k=, rojo=later, nokey"[..],
        b"x=1",
    ]);
    assert_eq!(
        ts.to_string(),
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,x=1"
    );
    let reasons: Vec<_> = dropped
        .iter()
        .map(|d| (d.member.as_str(), d.reason.clone()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("Bad=1", E::InvalidKey),
            ("k=", E::InvalidValue),
            ("rojo=later", E::DuplicateKey),
            ("nokey", E::MissingEquals),
        ]
    );
    // Beyond 32 members, the right-most are dropped; a non-text field is dropped whole.
    let many = (0..40)
        .map(|i| format!("k{i}=v"))
        .collect::<Vec<_>>()
        .join(",");
    let (ts, dropped) = TraceState::parse_lossy([many.as_bytes(), &[0xff, b'=', b'1'][..]]);
    assert_eq!(ts.len(), 32);
    assert_eq!(ts.iter().last(), Some(("k31", "v")));
    assert_eq!(dropped.len(), 9);
    assert_eq!(dropped[8].reason, E::NotText);
}

#[test]
fn invalid_keys_are_rejected() {
    for bad in [
        "Rojo=1",  // upper case
        "_rojo=1", // a key starts with a letter or a digit
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
