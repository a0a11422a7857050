//! Property tests of the gRPC metadata parsers and encoders (untrusted input).

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use retry_safe_core::grpc::{self, Code};

proptest! {
    #[test]
    fn message_round_trips_and_is_a_valid_header(s in any::<String>()) {
        let encoded = grpc::encode_message(&s);
        prop_assert!(HeaderValue::from_str(&encoded).is_ok());
        prop_assert!(encoded.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        prop_assert_eq!(grpc::decode_message(&encoded), s);
    }

    #[test]
    fn decoding_any_value_never_panics(s in "[ -~]{0,64}") {
        let _ = grpc::decode_message(&s);
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&s) {
            h.insert("grpc-status", v.clone());
            h.insert("grpc-retry-pushback-ms", v.clone());
            h.insert("content-type", v);
        }
        let _ = grpc::status_of(&h);
        let _ = grpc::pushback(&h);
        let _ = grpc::is_grpc(&h);
    }

    #[test]
    fn any_status_number_is_a_code(n in any::<i32>()) {
        let code = Code::from_i32(n);
        prop_assert!((0..=16).contains(&code.as_i32()));
        if (0..=16).contains(&n) { prop_assert_eq!(code.as_i32(), n); }
    }
}
