//! A bad config file names the line, the column, the key and the reason; `--check` exits 2.

use retry_safe_gateway::Config;
use std::process::Command;

const BASE: &str = "[[listener]]\naddress = \"127.0.0.1:8080\"\n\n[upstreams.orders]\naddress = \"127.0.0.1:8000\"\n";

#[test]
fn an_unknown_key_is_named_with_its_line_and_column() {
    let src = format!("{BASE}\n[[route]]\npath = \"/orders\"\nupstream = \"orders\"\nidempotency = {{ required = true, retension = \"1h\" }}\n");
    let e = Config::parse(&src).unwrap_err();
    assert_eq!(
        (e.line, e.key.as_str()),
        (10, "route[0].idempotency.retension"),
        "{e}"
    );
    assert!(e.column > 1 && e.reason.contains("unknown field"), "{e}");
}

#[test]
fn a_route_naming_no_upstream_points_at_the_name() {
    let src = format!("{BASE}\n[[route]]\npath = \"/orders\"\nupstream = \"order\"\n");
    let e = Config::parse(&src).unwrap_err();
    assert_eq!(
        (e.line, e.column, e.key.as_str()),
        (9, 12, "route[0].upstream"),
        "{e}"
    );
    assert!(e.reason.contains("[upstreams.order]"), "{e}");
}

#[test]
fn a_bad_duration_a_bad_address_and_conflicting_patterns_are_each_located() {
    let dur = format!("{BASE}request_timeout = \"30 parsecs\"\n");
    let e = Config::parse(&dur).unwrap_err();
    assert_eq!(
        (e.line, e.key.as_str()),
        (6, "upstreams.orders.request_timeout"),
        "{e}"
    );
    assert!(e.reason.contains("not a duration"), "{e}");
    let addr = BASE.replace("127.0.0.1:8080", "localhost");
    let e = Config::parse(&addr).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (2, "listener[0].address"), "{e}");
    let clash = format!("{BASE}\n[[route]]\npath = \"/o/{{id}}\"\nupstream = \"orders\"\n\n[[route]]\npath = \"/o/{{name}}\"\nupstream = \"orders\"\n");
    let e = Config::parse(&clash).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (12, "route[1].path"), "{e}");
}

#[test]
fn a_shared_limit_without_redis_is_refused() {
    let src = format!("{BASE}\n[[route]]\npath = \"/o\"\nupstream = \"orders\"\nrate_limit = [{{ rate = 5, shared = true }}]\n");
    let e = Config::parse(&src).unwrap_err();
    assert_eq!(
        (e.line, e.key.as_str()),
        (10, "route[0].rate_limit[0].shared"),
        "{e}"
    );
}

#[test]
fn the_example_config_parses() {
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/gateway/gateway.toml"
    ))
    .unwrap();
    let config = Config::parse(&src).unwrap();
    assert_eq!(config.routes.len(), 6);
}

#[test]
fn check_exits_2_naming_the_place_and_0_on_a_good_file() {
    let dir = std::env::temp_dir().join(format!("gateway-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!("{BASE}\n[[route]]\npath = \"/o\"\nupstream = \"nope\"\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_retry-safe-gateway"))
        .arg("--check")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:9:12: route[0].upstream: no [upstreams.nope]"),
        "{stderr}"
    );
    let good = dir.join("good.toml");
    std::fs::write(&good, BASE).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_retry-safe-gateway"))
        .arg("--check")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
