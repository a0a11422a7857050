//! Property tests of the parsers of untrusted headers.

use proptest::prelude::*;
use trace_ctx::{RequestId, TraceParent, TraceState};

fn hex(n: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(b"0123456789abcdef".to_vec()), n)
        .prop_map(|v| String::from_utf8(v).unwrap())
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_*/-]{0,20}",
        "[a-z0-9][a-z0-9_*/-]{0,10}@[a-z][a-z0-9_*/-]{0,13}",
    ]
}

fn value() -> impl Strategy<Value = String> {
    "[ -+\\--<>-~]{0,30}[!-+\\--<>-~]"
}

proptest! {
    #[test]
    fn a_valid_traceparent_round_trips(trace in hex(32), parent in hex(16), flags in hex(2)) {
        prop_assume!(trace != "0".repeat(32) && parent != "0".repeat(16));
        let text = format!("00-{trace}-{parent}-{flags}");
        let tp = TraceParent::parse(text.as_bytes()).unwrap();
        prop_assert_eq!(tp.to_string(), text);
        prop_assert_eq!(TraceParent::parse(&tp.to_bytes()).unwrap(), tp);
    }

    #[test]
    fn the_traceparent_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        if let Ok(tp) = TraceParent::parse(&bytes) {
            // Whatever it accepts formats to a valid version-00 value.
            let again = TraceParent::parse(&tp.with_parent(tp.parent_id).to_bytes()).unwrap();
            prop_assert_eq!(again.trace_id, tp.trace_id);
        }
    }

    #[test]
    fn the_traceparent_parser_never_panics_near_valid_input(
        pos in 0usize..60, byte in any::<u8>(), cut in 50usize..70,
    ) {
        let mut v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra".to_vec();
        if pos < v.len() { v[pos] = byte; }
        v.truncate(cut);
        let _ = TraceParent::parse(&v);
    }

    #[test]
    fn a_valid_tracestate_round_trips(
        members in proptest::collection::btree_map(key(), value(), 0..32),
        ows in "[ \t]{0,2}",
    ) {
        let text = members.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(&format!("{ows},{ows}"));
        let ts = TraceState::parse([text.as_bytes()]).unwrap();
        prop_assert_eq!(ts.len(), members.len());
        let again = TraceState::parse([ts.to_string().as_bytes()]).unwrap();
        prop_assert_eq!(again, ts);
    }

    #[test]
    fn the_tracestate_parser_never_panics(fields in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..4)) {
        let _ = TraceState::parse(fields.iter().map(Vec::as_slice));
    }

    #[test]
    fn request_ids_are_accepted_only_when_safe(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Some(id) = RequestId::parse(&bytes) {
            prop_assert!(!id.as_str().is_empty() && id.as_str().len() <= 128);
            prop_assert!(http::HeaderValue::from_str(id.as_str()).is_ok());
        }
    }
}
