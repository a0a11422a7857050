use bytes::Bytes;
use http::StatusCode;
use proptest::prelude::*;
use retry_safe_core::{is_problem, retry_after_secs, Problem, PROBLEM_JSON};
use serde_json::Value;
use std::time::Duration;

fn json(res: &http::Response<Bytes>) -> Value {
    serde_json::from_slice(res.body()).expect("problem bodies are JSON")
}

#[test]
fn standard_members_come_first_and_extensions_cannot_replace_them() {
    let problem = Problem::new(StatusCode::CONFLICT, "in_flight", "Request in progress")
        .with_detail("another attempt holds the key")
        .with_instance("/orders")
        .with("status", 200)
        .with("type", "about:blank")
        .with("code", "forged")
        .with("holder", "a")
        .with("holder", "b");
    let body = problem.body();
    let text = std::str::from_utf8(&body).unwrap();
    assert!(
        text.starts_with(
            r#"{"type":"urn:problem-type:in_flight","title":"Request in progress","status":409,"#
        ),
        "{text}"
    );
    let res: http::Response<Bytes> = problem.into_response();
    let v = json(&res);
    assert_eq!(v["status"], 409);
    assert_eq!(v["code"], "in_flight");
    assert_eq!(v["error_code"], "in_flight");
    assert_eq!(v["detail"], "another attempt holds the key");
    assert_eq!(v["instance"], "/orders");
    assert_eq!(v["holder"], "b");
    assert_eq!(v.as_object().unwrap().len(), 8);
    assert!(res.headers().get("retry-after").is_none());
    assert!(is_problem(res.headers()));
}

#[test]
fn custom_type_and_retry_after() {
    let res: http::Response<Bytes> = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "Server overloaded",
    )
    .with_type("https://example.com/probs/overloaded")
    .with_retry_after(Duration::from_millis(10))
    .into();
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(json(&res)["type"], "https://example.com/probs/overloaded");
}

#[test]
fn content_type_detection_ignores_case_and_parameters() {
    let mut h = http::HeaderMap::new();
    assert!(!is_problem(&h));
    h.insert(
        "content-type",
        "Application/Problem+JSON; charset=utf-8".parse().unwrap(),
    );
    assert!(is_problem(&h));
    h.insert("content-type", "application/json".parse().unwrap());
    assert!(!is_problem(&h));
    assert_eq!(PROBLEM_JSON, "application/problem+json");
}

proptest! {
    #[test]
    fn retry_after_never_invites_an_early_retry(nanos in any::<u64>()) {
        let wait = Duration::from_nanos(nanos);
        let secs = retry_after_secs(wait);
        prop_assert!(secs >= 1);
        prop_assert!(Duration::from_secs(secs) >= wait);
        prop_assert!(Duration::from_secs(secs) < wait + Duration::from_secs(1) || secs == 1);
    }

    #[test]
    fn any_detail_and_extension_render_as_valid_json(detail in ".*", name in "[a-z_]{1,12}", value in ".*") {
        let res: http::Response<Bytes> = Problem::new(StatusCode::BAD_REQUEST, "bad", "Bad")
            .with_detail(detail.clone())
            .with(name.clone(), value.clone())
            .into_response();
        let v = json(&res);
        prop_assert_eq!(v["detail"].as_str(), Some(detail.as_str()));
        if !retry_safe_core::RESERVED_MEMBERS.contains(&name.as_str()) {
            prop_assert_eq!(v[name.as_str()].as_str(), Some(value.as_str()));
        }
    }
}
