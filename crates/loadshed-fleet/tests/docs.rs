//! The outcome table lists every code the crate emits: the docs cannot drift from the code.
#[test]
fn the_outcome_table_lists_every_code_the_layer_emits() {
    testkit::assert_codes_documented(env!("CARGO_MANIFEST_DIR"), "src/middleware/layer.rs");
}
