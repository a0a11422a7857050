//! API keys: a keys file holding only SHA-256 digests of the keys, each naming a principal and a
//! plan.

use crate::config::ConfigError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Whom a known API key speaks for: put into the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The principal's name from the keys file (never the key).
    pub name: Arc<str>,
    /// The index of its plan among the config's plans (sorted by name), if it has one.
    pub plan: Option<usize>,
}

/// The principal of requests without a key.
pub(crate) fn anonymous() -> Principal {
    Principal {
        name: "anonymous".into(),
        plan: None,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    key: Vec<toml::Spanned<KeyEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    /// Hex SHA-256 of the key.
    sha256: String,
    principal: String,
    plan: Option<String>,
}

/// The known keys, by digest.
pub(crate) struct KeyRing {
    by_digest: HashMap<[u8; 32], (Principal, [u8; 32])>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.by_digest.len())
            .finish()
    }
}

/// The SHA-256 digest of `key`, as the keys file stores it (hex).
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl KeyRing {
    /// Reads the keys file at `path`; `plans` are the config's plan names, sorted.
    pub(crate) fn load(path: &Path, plans: &[&str]) -> Result<Self, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::of_file(path, format_args!("cannot read the keys file: {e}"))
        })?;
        Self::parse(&src, plans).map_err(|e| e.in_file(path))
    }

    fn parse(src: &str, plans: &[&str]) -> Result<Self, ConfigError> {
        let file: KeysFile =
            toml::from_str(src).map_err(|e| ConfigError::at(src, e.span(), "", e.message()))?;
        let mut by_digest = HashMap::new();
        for (i, entry) in file.key.iter().enumerate() {
            let span = Some(entry.span());
            let e = entry.get_ref();
            let digest: [u8; 32] = hex::decode(&e.sha256)
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| {
                    ConfigError::at(
                        src,
                        span.clone(),
                        &format!("key[{i}].sha256"),
                        "not 64 hex digits of a SHA-256",
                    )
                })?;
            let plan = match &e.plan {
                None => None,
                Some(name) => Some(plans.iter().position(|p| p == name).ok_or_else(|| {
                    ConfigError::at(
                        src,
                        span.clone(),
                        &format!("key[{i}].plan"),
                        format!("no [plans.{name}] in the config"),
                    )
                })?),
            };
            let principal = Principal {
                name: e.principal.as_str().into(),
                plan,
            };
            if by_digest.insert(digest, (principal, digest)).is_some() {
                return Err(ConfigError::at(
                    src,
                    span,
                    &format!("key[{i}].sha256"),
                    "the same key is listed twice",
                ));
            }
        }
        Ok(Self { by_digest })
    }

    /// The principal of `key`, if it is known. The key is hashed first, so the table is looked up
    /// by a digest an attacker cannot steer; the digest found is compared in constant time.
    pub(crate) fn find(&self, key: &[u8]) -> Option<&Principal> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let (principal, stored) = self.by_digest.get(&digest)?;
        bool::from(stored.ct_eq(&digest)).then_some(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_key_finds_its_principal_and_plan_and_others_find_nothing() {
        let src = format!(
            "[[key]]\nsha256 = \"{}\"\nprincipal = \"acme\"\nplan = \"gold\"\n",
            hash_key("sk_live_acme")
        );
        let ring = KeyRing::parse(&src, &["free", "gold"]).unwrap();
        let p = ring.find(b"sk_live_acme").unwrap();
        assert_eq!((&*p.name, p.plan), ("acme", Some(1)));
        assert!(ring.find(b"sk_live_acmf").is_none());
        assert!(!format!("{ring:?}").contains("acme"));
    }

    #[test]
    fn a_keys_file_naming_an_unknown_plan_is_refused_at_its_line() {
        let src = format!(
            "\n[[key]]\nsha256 = \"{}\"\nprincipal = \"a\"\nplan = \"platinum\"\n",
            hash_key("k")
        );
        let e = KeyRing::parse(&src, &["gold"]).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "key[0].plan"));
        assert!(e.reason.contains("platinum"), "{e}");
    }
}
