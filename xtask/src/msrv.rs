//! `cargo xtask msrv`: every published crate's `rust-version` is at least what each of its
//! dependencies needs, in every feature set the crate offers.
//!
//! For each workspace crate that is published, and each feature set (no default features, the
//! defaults, each feature alone, all features), `cargo tree -e normal` lists the packages it
//! builds; `cargo metadata` gives each package's `rust-version`. A crate fails when one of them
//! claims a newer Rust than the crate does (or when the crate claims none).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// A Rust version as (major, minor, patch).
pub type Version = (u64, u64, u64);

/// Parses `1.85` or `1.85.1`.
pub fn parse_version(s: &str) -> Option<Version> {
    let mut parts = s.trim().split('.').map(|p| p.parse::<u64>());
    let major = parts.next()?.ok()?;
    let minor = parts.next().unwrap_or(Ok(0)).ok()?;
    let patch = parts.next().unwrap_or(Ok(0)).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

fn show((major, minor, patch): Version) -> String {
    if patch == 0 {
        format!("{major}.{minor}")
    } else {
        format!("{major}.{minor}.{patch}")
    }
}

/// One crate of the workspace as the check sees it.
#[derive(Debug, Clone)]
pub struct Crate {
    /// Package name.
    pub name: String,
    /// Its `rust-version`, if any.
    pub claim: Option<Version>,
    /// Its features (without `default`).
    pub features: Vec<String>,
}

/// A dependency that needs a newer Rust than the crate claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The workspace crate.
    pub krate: String,
    /// The feature set, as `cargo tree` flags.
    pub features: String,
    /// `name@version` of the dependency.
    pub dependency: String,
    /// What the dependency needs.
    pub needs: Version,
    /// What the crate claims (`None`: no claim).
    pub claim: Option<Version>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}) claims rust-version {} but {} needs {}",
            self.krate,
            self.features,
            self.claim.map_or("(none)".to_owned(), show),
            self.dependency,
            show(self.needs)
        )
    }
}

/// The check itself, on data already gathered: `builds[(crate, feature set)]` lists the
/// `name@version` of every package that feature set builds, `needs[name@version]` each package's
/// `rust-version`.
pub fn violations(
    crates: &[Crate],
    builds: &BTreeMap<(String, String), BTreeSet<String>>,
    needs: &BTreeMap<String, Version>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for ((krate, features), packages) in builds {
        let Some(c) = crates.iter().find(|c| &c.name == krate) else {
            continue;
        };
        for package in packages {
            let Some(&need) = needs.get(package) else {
                continue;
            };
            if c.claim.is_none_or(|claim| claim < need) {
                out.push(Violation {
                    krate: krate.clone(),
                    features: features.clone(),
                    dependency: package.clone(),
                    needs: need,
                    claim: c.claim,
                });
            }
        }
    }
    out
}

/// What `cargo metadata` says: the published workspace crates and every package's need.
pub fn metadata() -> Result<(Vec<Crate>, BTreeMap<String, Version>), String> {
    let out = Command::new(cargo_bin())
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .map_err(|e| format!("could not run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let meta: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut crates = Vec::new();
    let mut needs = BTreeMap::new();
    for p in meta["packages"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default().to_owned();
        let version = p["version"].as_str().unwrap_or_default();
        let claim = p["rust_version"].as_str().and_then(parse_version);
        if let Some(claim) = claim {
            needs.insert(format!("{name}@{version}"), claim);
        }
        let id = p["id"].as_str().unwrap_or_default();
        let published = !matches!(p["publish"].as_array(), Some(list) if list.is_empty());
        if members.contains(id) && published {
            let features = p["features"]
                .as_object()
                .map(|f| {
                    f.keys()
                        .filter(|k| *k != "default")
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            crates.push(Crate {
                name,
                claim,
                features,
            });
        }
    }
    Ok((crates, needs))
}

/// The feature sets a crate is checked in, as cargo flags.
pub fn feature_sets(c: &Crate) -> Vec<Vec<String>> {
    let mut sets = vec![vec!["--no-default-features".to_owned()], vec![]];
    for f in &c.features {
        if f.starts_with('_') {
            continue;
        }
        sets.push(vec![
            "--no-default-features".to_owned(),
            "--features".to_owned(),
            f.clone(),
        ]);
    }
    sets.push(vec!["--all-features".to_owned()]);
    sets
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The `name@version` of every package `krate` builds (normal dependencies) with `flags`.
fn tree(krate: &str, flags: &[String]) -> Result<BTreeSet<String>, String> {
    let out = Command::new(cargo_bin())
        .args(["tree", "--locked", "-e", "normal", "--prefix", "none"])
        .args(["--format", "{p}", "-p", krate])
        .args(flags)
        .output()
        .map_err(|e| format!("could not run cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo tree -p {krate} {} failed: {}",
            flags.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "name v1.2.3 (path) (*)" → "name@1.2.3"
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let version = words.next()?.strip_prefix('v')?;
            Some(format!("{name}@{version}"))
        })
        .collect())
}

/// Runs the check on the workspace.
pub fn run() -> Result<(), String> {
    let (crates, needs) = metadata()?;
    let mut builds = BTreeMap::new();
    for c in &crates {
        for flags in feature_sets(c) {
            let label = if flags.is_empty() {
                "default features".to_owned()
            } else {
                flags.join(" ")
            };
            builds.insert((c.name.clone(), label), tree(&c.name, &flags)?);
        }
    }
    let found = violations(&crates, &builds, &needs);
    for c in &crates {
        eprintln!(
            "xtask msrv: {} claims {}",
            c.name,
            c.claim.map_or("(none)".to_owned(), show)
        );
    }
    if found.is_empty() {
        eprintln!(
            "xtask msrv: every crate's rust-version covers its dependencies in {} feature sets",
            builds.len()
        );
        Ok(())
    } else {
        // The most demanding dependency of each failing crate.
        let mut worst: BTreeMap<&str, &Violation> = BTreeMap::new();
        for v in &found {
            let slot = worst.entry(&v.krate).or_insert(v);
            if v.needs > slot.needs {
                *slot = v;
            }
        }
        for v in worst.values() {
            eprintln!("xtask msrv: {v}");
        }
        Err(format!(
            "{} crates claim a rust-version below what their dependencies need (see above)",
            worst.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(parse_version("1.85"), Some((1, 85, 0)));
        assert_eq!(parse_version("1.85.1"), Some((1, 85, 1)));
        assert_eq!(parse_version("1"), Some((1, 0, 0)));
        assert_eq!(parse_version("1.x"), None);
        assert!(parse_version("1.9").unwrap() < parse_version("1.10").unwrap());
    }

    /// The real workspace passes, and the same data with one claim lowered fails, naming the
    /// crate and a dependency that needs more.
    #[test]
    fn the_check_passes_on_the_workspace_and_fails_when_a_claim_is_lowered() {
        let (mut crates, needs) = metadata().expect("cargo metadata");
        let target = "ratelimit-token-bucket";
        let flags = vec!["--all-features".to_owned()];
        let packages = tree(target, &flags).expect("cargo tree");
        let mut builds = BTreeMap::new();
        builds.insert((target.to_owned(), "--all-features".to_owned()), packages);
        assert_eq!(violations(&crates, &builds, &needs), vec![]);

        let c = crates.iter_mut().find(|c| c.name == target).unwrap();
        c.claim = Some((1, 60, 0));
        let found = violations(&crates, &builds, &needs);
        assert!(!found.is_empty(), "a claim of 1.60 must fail");
        assert!(found
            .iter()
            .all(|v| v.krate == target && v.needs > (1, 60, 0)));
        // tokio, redis and others need far more than 1.60.
        assert!(found
            .iter()
            .any(|v| v.dependency.starts_with("tokio@") || v.dependency.starts_with("redis@")));
    }

    #[test]
    fn a_crate_without_a_claim_fails() {
        let crates = vec![Crate {
            name: "a".into(),
            claim: None,
            features: vec![],
        }];
        let mut builds = BTreeMap::new();
        builds.insert(
            ("a".to_owned(), "default".to_owned()),
            BTreeSet::from(["dep@1.0.0".to_owned()]),
        );
        let needs = BTreeMap::from([("dep@1.0.0".to_owned(), (1, 70, 0))]);
        let v = violations(&crates, &builds, &needs);
        assert_eq!(v.len(), 1);
        assert!(v[0].to_string().contains("claims rust-version (none)"));
    }
}
