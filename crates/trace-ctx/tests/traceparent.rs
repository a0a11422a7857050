//! `traceparent` cases written from the W3C Trace Context Level 1 Recommendation (§3.2
//! "traceparent Header", §3.2.2 field definitions, §3.2.4 "Versioning of traceparent") and the
//! Level 2 draft's `random` flag (§3.2.2.5).

use trace_ctx::{TraceParent, TraceParentError as E};

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn parse(s: &str) -> Result<TraceParent, E> {
    TraceParent::parse(s.as_bytes())
}

#[test]
fn the_specification_example_parses_and_formats_back() {
    let tp = parse(VALID).unwrap();
    assert_eq!(tp.version, 0);
    assert_eq!(tp.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(tp.parent_id.to_string(), "00f067aa0ba902b7");
    assert!(tp.flags.sampled());
    assert!(!tp.flags.random());
    assert_eq!(tp.to_string(), VALID);
    // Unsampled, and the Level 2 random flag.
    let tp = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02").unwrap();
    assert!(!tp.flags.sampled() && tp.flags.random());
}

#[test]
fn ids_and_flags_must_be_lowercase_hex_of_their_size() {
    for bad in [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper-case trace-id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01", // upper-case parent-id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A", // upper-case flags
        "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // upper-case version
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", // non-hex
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // wrong separators
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
    ] {
        assert_eq!(parse(bad), Err(E::Malformed), "{bad}");
    }
}

#[test]
fn all_zero_ids_are_invalid() {
    assert_eq!(
        parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Err(E::ZeroTraceId)
    );
    assert_eq!(
        parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
        Err(E::ZeroParentId)
    );
}

#[test]
fn version_ff_is_invalid_and_version_00_is_exactly_55_characters() {
    assert_eq!(
        parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        Err(E::ForbiddenVersion)
    );
    assert_eq!(parse(&format!("{VALID}-")), Err(E::Length));
    assert_eq!(parse(&format!("{VALID}-extra")), Err(E::Length));
    assert_eq!(parse(&VALID[..54]), Err(E::Length));
    assert_eq!(parse(""), Err(E::Length));
    // Fields of the wrong size shift the separators.
    assert_eq!(
        parse("00-4bf92f3577b34da6a3ce929d0e0e47366-0f067aa0ba902b7-01"),
        Err(E::Malformed)
    );
}

#[test]
fn a_higher_version_is_read_by_the_version_00_layout() {
    // §3.2.4: a parser of version 00 given a higher version reads the first 55 characters as
    // version 00 fields; if the value is longer, the next character must be "-".
    let tp = parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    assert_eq!(tp.version, 0xcc);
    assert_eq!(tp.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    let tp = parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds")
        .unwrap();
    assert_eq!(tp.parent_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(
        parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what-the-future-holds"),
        Err(E::Malformed)
    );
    // Unknown flags of a future version are kept when read, dropped when propagated (version 00
    // defines only sampled and random).
    let tp = parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff").unwrap();
    assert_eq!(tp.flags.bits(), 0xff);
    let child = tp.with_parent(tp.parent_id);
    assert_eq!(child.version, 0);
    assert_eq!(child.flags.bits(), 0x03);
    assert!(child.to_string().starts_with("00-"));
}

#[test]
fn optional_whitespace_around_the_value_is_ignored() {
    assert!(parse(&format!("  {VALID}\t")).is_ok());
    assert_eq!(parse(&format!("{VALID} x")), Err(E::Length));
}

#[test]
fn a_new_root_is_random_sampled_and_flagged_random() {
    let a = TraceParent::new_root(true);
    let b = TraceParent::new_root(true);
    assert_ne!(a.trace_id, b.trace_id);
    assert_ne!(a.parent_id, b.parent_id);
    assert!(a.flags.sampled() && a.flags.random());
    assert_eq!(parse(&a.to_string()).unwrap(), a);
    assert!(!TraceParent::new_root(false).flags.sampled());
}
