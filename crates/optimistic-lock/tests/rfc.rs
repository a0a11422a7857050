//! RFC 9110 §13.2.2: each combination of preconditions → the status the RFC prescribes.

use http::{HeaderMap, Method};
use optimistic_lock::{
    evaluate, Conditions, Current, ETag, Evaluation, Expected, TagList, Version,
};
use proptest::prelude::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MODIFIED: u64 = 1_700_000_000; // the resource's Last-Modified, in seconds
const CURRENT: &str = "\"7\"";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn date(secs: u64) -> String {
    httpdate::fmt_http_date(at(secs))
}

fn current() -> Current {
    Current::new(Version::number(7)).modified_at(at(MODIFIED) + Duration::from_millis(400))
}

/// The outcome as a status: 200 = perform the method, 304, 412.
fn status(method: &Method, headers: &[(&str, String)], exists: bool) -> u16 {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let conditions = Conditions::from_headers(&map).expect("well-formed");
    let cur = current();
    match evaluate(method, &conditions, exists.then_some(&cur)) {
        Evaluation::Proceed(_) => 200,
        Evaluation::NotModified => 304,
        Evaluation::Failed => 412,
        other => panic!("unexpected {other:?}"),
    }
}

/// (method, request headers, whether the resource exists, expected status, what it checks)
type Case<'a> = (&'a Method, Vec<(&'a str, String)>, bool, u16, &'a str);

#[test]
fn the_evaluation_order_of_rfc_9110_section_13_2_2() {
    let get = Method::GET;
    let head = Method::HEAD;
    let put = Method::PUT;
    let patch = Method::PATCH;
    let delete = Method::DELETE;
    let s = |v: &str| v.to_owned();
    let old = date(MODIFIED - 60); // before the last modification
    let same = date(MODIFIED); // the last modification's second
    let later = date(MODIFIED + 60);
    #[rustfmt::skip]
    let table: Vec<Case> = vec![
        // No precondition: perform.
        (&get, vec![], true, 200, "unconditional read"),
        (&put, vec![], true, 200, "unconditional write (the layer's 428 is a policy above this)"),
        // Step 1: If-Match.
        (&patch, vec![("if-match", s(CURRENT))], true, 200, "If-Match current"),
        (&patch, vec![("if-match", s("\"6\""))], true, 412, "If-Match stale"),
        (&patch, vec![("if-match", s("\"6\", \"7\""))], true, 200, "If-Match list containing current"),
        (&patch, vec![("if-match", s("W/\"7\""))], true, 412, "If-Match compares strongly: weak never matches"),
        (&patch, vec![("if-match", s("*"))], true, 200, "If-Match * with a current representation"),
        (&patch, vec![("if-match", s("*"))], false, 412, "If-Match * without one"),
        (&put, vec![("if-match", s(CURRENT))], false, 412, "If-Match on a missing resource"),
        (&get, vec![("if-match", s("\"6\""))], true, 412, "If-Match applies to reads too"),
        (&delete, vec![("if-match", s(CURRENT))], true, 200, "DELETE with If-Match current"),
        // Step 2: If-Unmodified-Since, only without If-Match.
        (&put, vec![("if-unmodified-since", same.clone())], true, 200, "unmodified since the same second"),
        (&put, vec![("if-unmodified-since", later.clone())], true, 200, "unmodified since later"),
        (&put, vec![("if-unmodified-since", old.clone())], true, 412, "modified since"),
        (&put, vec![("if-match", s(CURRENT)), ("if-unmodified-since", old.clone())], true, 200, "If-Match present: If-Unmodified-Since ignored"),
        (&put, vec![("if-match", s("\"6\"")), ("if-unmodified-since", later.clone())], true, 412, "If-Match decides"),
        (&put, vec![("if-unmodified-since", s("yesterday"))], true, 200, "invalid date ignored"),
        (&put, vec![("if-unmodified-since", old.clone())], false, 200, "no representation, no date: ignored"),
        // Step 3: If-None-Match.
        (&get, vec![("if-none-match", s(CURRENT))], true, 304, "read, cached copy current"),
        (&head, vec![("if-none-match", s(CURRENT))], true, 304, "HEAD too"),
        (&get, vec![("if-none-match", s("W/\"7\""))], true, 304, "If-None-Match compares weakly"),
        (&get, vec![("if-none-match", s("\"6\""))], true, 200, "read, cached copy stale"),
        (&get, vec![("if-none-match", s("*"))], true, 304, "If-None-Match * on an existing resource, read"),
        (&put, vec![("if-none-match", s("*"))], true, 412, "create-only PUT on an existing resource"),
        (&put, vec![("if-none-match", s("*"))], false, 200, "create-only PUT on a missing resource"),
        (&patch, vec![("if-none-match", s(CURRENT))], true, 412, "write with If-None-Match matching"),
        (&patch, vec![("if-none-match", s("\"6\""))], true, 200, "write with If-None-Match not matching"),
        (&put, vec![("if-match", s(CURRENT)), ("if-none-match", s(CURRENT))], true, 412, "both: If-Match passes, If-None-Match fails"),
        (&get, vec![("if-match", s("\"6\"")), ("if-none-match", s(CURRENT))], true, 412, "If-Match is evaluated first"),
        // Step 4: If-Modified-Since, GET/HEAD only, only without If-None-Match.
        (&get, vec![("if-modified-since", same.clone())], true, 304, "not modified since the same second"),
        (&get, vec![("if-modified-since", later.clone())], true, 304, "not modified since later"),
        (&get, vec![("if-modified-since", old.clone())], true, 200, "modified since"),
        (&head, vec![("if-modified-since", same.clone())], true, 304, "HEAD not modified"),
        (&put, vec![("if-modified-since", same.clone())], true, 200, "ignored for writes"),
        (&get, vec![("if-none-match", s("\"6\"")), ("if-modified-since", later.clone())], true, 200, "If-None-Match present: If-Modified-Since ignored"),
        (&get, vec![("if-modified-since", s("not a date"))], true, 200, "invalid date ignored"),
        (&get, vec![("if-modified-since", same.clone()), ("if-modified-since", same.clone())], true, 200, "two dates: ignored"),
        (&get, vec![("if-modified-since", date(MODIFIED).replace("GMT", "UTC"))], true, 200, "not an HTTP-date: ignored"),
        // Obsolete date formats are HTTP-dates too (RFC 9110 §5.6.7).
        (&get, vec![("if-modified-since", s("Tuesday, 14-Nov-23 22:13:20 GMT"))], true, 304, "rfc850-date"),
        (&get, vec![("if-modified-since", s("Tue Nov 14 22:13:20 2023"))], true, 304, "asctime-date"),
    ];
    assert_eq!(date(MODIFIED), "Tue, 14 Nov 2023 22:13:20 GMT");
    for (method, headers, exists, expected, what) in &table {
        assert_eq!(
            status(method, headers, *exists),
            *expected,
            "{what}: {method} {headers:?} (exists: {exists})"
        );
    }
}

#[test]
fn the_handler_is_told_what_to_expect() {
    let cur = current();
    let conditions = |name: &str, value: &str| {
        let mut map = HeaderMap::new();
        map.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        Conditions::from_headers(&map).unwrap()
    };
    assert_eq!(
        evaluate(&Method::PATCH, &conditions("if-match", "*"), Some(&cur)),
        Evaluation::Proceed(Expected::Version(Version::number(7)))
    );
    assert_eq!(
        evaluate(&Method::PUT, &conditions("if-none-match", "*"), None),
        Evaluation::Proceed(Expected::Absent)
    );
    assert_eq!(
        evaluate(&Method::PUT, &Conditions::default(), Some(&cur)),
        Evaluation::Proceed(Expected::Unconditional)
    );
}

#[test]
fn malformed_lists_are_errors_and_several_lines_form_one_list() {
    for bad in [
        "7",
        "\"7",
        "W/7",
        "w/\"7\"",
        "\"a\" \"b\"",
        "*, \"a\"",
        "\"a\", *",
        "\"a\"b",
        "\"a\u{7f}\"",
    ] {
        assert!(TagList::parse(bad).is_err(), "{bad:?} should be refused");
    }
    for good in [
        "\"\"",
        " \"a\" ",
        "\"a\",",
        ",\"a\"",
        "\"a\" , W/\"b\"",
        "\"!#~\"",
    ] {
        assert!(TagList::parse(good).is_ok(), "{good:?} should parse");
    }
    let mut map = HeaderMap::new();
    map.append(http::header::IF_MATCH, "\"1\"".parse().unwrap());
    map.append(http::header::IF_MATCH, "\"2\", \"3\"".parse().unwrap());
    assert_eq!(
        TagList::from_headers(&map, &http::header::IF_MATCH).unwrap(),
        Some(TagList::Tags(vec![
            ETag::strong("1").unwrap(),
            ETag::strong("2").unwrap(),
            ETag::strong("3").unwrap()
        ]))
    );
    map.append(http::header::IF_MATCH, "*".parse().unwrap());
    assert!(TagList::from_headers(&map, &http::header::IF_MATCH).is_err());
    let too_many = vec!["\"x\""; optimistic_lock::MAX_TAGS + 1].join(",");
    assert!(TagList::parse(&too_many).is_err());
}

#[test]
fn versions_render_as_strong_etags() {
    assert_eq!(Version::number(0).etag().to_string(), "\"0\"");
    assert!(!Version::number(1).etag().is_weak());
    let t = Version::timestamp(at(5) + Duration::from_nanos(7));
    assert_eq!(t.etag().to_string(), "\"t5000000007\"");
    assert_ne!(Version::hash_of(b"a"), Version::hash_of(b"b"));
    assert_eq!(Version::hash_of(b"a"), Version::hash_of(b"a"));
    assert!(ETag::strong("a\"b").is_err());
}

fn etagc() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof![Just(0x21u8), 0x23u8..=0x7e], 0..12)
        .prop_map(|b| String::from_utf8(b).unwrap())
}

proptest! {
    /// The parser never panics, whatever the bytes.
    #[test]
    fn any_input_parses_or_errs(s in ".{0,80}") {
        let _ = TagList::parse(&s);
        let _ = ETag::parse(&s);
    }

    /// A list rendered from tags parses back to the same tags, whatever the spacing and empty
    /// elements between them.
    #[test]
    fn rendered_lists_round_trip(
        tags in proptest::collection::vec((any::<bool>(), etagc()), 1..8),
        sep in prop_oneof![Just(","), Just(", "), Just(" ,\t"), Just(",,")],
    ) {
        let tags: Vec<ETag> = tags.into_iter()
            .map(|(weak, o)| if weak { ETag::weak(o).unwrap() } else { ETag::strong(o).unwrap() })
            .collect();
        let text = tags.iter().map(ToString::to_string).collect::<Vec<_>>().join(sep);
        prop_assert_eq!(TagList::parse(&text).unwrap(), TagList::Tags(tags.clone()));
        for t in &tags {
            prop_assert_eq!(&ETag::parse(&t.to_string()).unwrap(), t);
        }
    }

    /// Strong comparison implies weak comparison; weak tags never compare strongly.
    #[test]
    fn comparison_laws(a in (any::<bool>(), etagc()), b in (any::<bool>(), etagc())) {
        let mk = |(weak, o): (bool, String)| if weak { ETag::weak(o).unwrap() } else { ETag::strong(o).unwrap() };
        let (a, b) = (mk(a), mk(b));
        if a.strong_eq(&b) { prop_assert!(a.weak_eq(&b)); }
        if a.is_weak() || b.is_weak() { prop_assert!(!a.strong_eq(&b)); }
        prop_assert_eq!(a.weak_eq(&b), b.weak_eq(&a));
    }
}
