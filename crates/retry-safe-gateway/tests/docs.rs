//! docs/gateway.md lists every code the gateway emits: the docs cannot drift from the code.
#[test]
fn the_refusal_table_lists_every_code_the_gateway_emits() {
    testkit::assert_codes_documented(env!("CARGO_MANIFEST_DIR"), "../../docs/gateway.md");
}

/// Every key of the config structs appears in the config reference.
#[test]
fn the_config_reference_names_every_key() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/gateway.md"
    ))
    .unwrap();
    let src =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/config.rs")).unwrap();
    let mut missing = Vec::new();
    for line in src.lines() {
        let Some(field) = line
            .trim()
            .strip_prefix("pub ")
            .and_then(|l| l.split_once(':'))
            .map(|(n, _)| n)
        else {
            continue;
        };
        if field.contains(' ')
            || field.contains('(')
            || ["file", "line", "column", "key", "reason"].contains(&field)
        {
            continue; // not a field, or ConfigError's own
        }
        let renamed = match field {
            "listeners" => "listener",
            "routes" => "route",
            f => f,
        };
        if !doc.contains(&format!("`{renamed}`"))
            && !doc.contains(&format!("[{renamed}"))
            && !doc.contains(&format!("{renamed} ="))
        {
            missing.push(renamed.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "docs/gateway.md does not document {missing:?}"
    );
}
