//! `cargo xtask features`: every published crate builds, compiles its tests and documents with
//! warnings denied in each feature set it offers (no default features, the defaults, each feature
//! alone, all features).

use crate::msrv::{feature_sets, metadata};

/// Runs the whole matrix, then reports every failure.
pub fn run() -> Result<(), String> {
    let (crates, _) = metadata()?;
    let mut runs = 0;
    let mut failed = Vec::new();
    for c in &crates {
        for flags in feature_sets(c) {
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            let mut check = vec!["check", "--quiet", "-p", &c.name, "--all-targets"];
            check.extend(&flags);
            if let Err(e) = crate::cargo(&check, &[("RUSTFLAGS", "-D warnings")]) {
                failed.push(e);
            }
            let mut doc = vec!["doc", "--quiet", "--no-deps", "-p", &c.name];
            doc.extend(&flags);
            if let Err(e) = crate::cargo(&doc, &[("RUSTDOCFLAGS", "-D warnings")]) {
                failed.push(e);
            }
            runs += 1;
        }
    }
    if !failed.is_empty() {
        for e in &failed {
            eprintln!("xtask features: {e}");
        }
        return Err(format!("{} of {} runs failed", failed.len(), runs * 2));
    }
    eprintln!(
        "xtask features: {} crates, {runs} feature sets: check --all-targets and doc clean",
        crates.len()
    );
    Ok(())
}
