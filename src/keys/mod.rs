//! Managed API keys: the secret a key is created with (shown once), the hash that is all the
//! store keeps, the key's user path and scopes, and the lock-free table the request path looks
//! callers up in.
//!
//! The table is rebuilt off the request path whenever the store's keys change (this gateway's
//! admin write, or another gateway's through the store's follower) and swapped in whole; a
//! request does one `ArcSwap` load and one hash lookup. Nothing here reads a request, the
//! network or the store, and no secret is ever kept: only its SHA-256.

pub mod admin;
pub mod spec;

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::limits::LimitSpec;
use crate::routing::user_path::UserPath;
pub use spec::{KeySpec, Scope};

/// The prefix of every managed key's secret.
pub const PREFIX: &str = "mg-";

/// A managed key as the request path sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedKey {
    pub name: String,
    /// The key's user path: a request may narrow it with the user-path header, never widen it.
    pub user_path: UserPath,
    pub scopes: Vec<Scope>,
    /// Unix seconds; None never expires.
    pub expires_at: Option<i64>,
    pub limits: Vec<LimitSpec>,
    pub created_at: i64,
}

impl ManagedKey {
    /// Whether the key may call models.
    pub fn may_infer(&self) -> bool {
        self.scopes.iter().any(|s| matches!(s, Scope::Inference))
    }

    /// The groups this key manages (`manage:GROUP`).
    pub fn managed_groups(&self) -> impl Iterator<Item = &str> {
        self.scopes.iter().filter_map(|s| match s {
            Scope::Manage(g) => Some(g.as_str()),
            Scope::Inference => None,
        })
    }

    /// Whether the key has expired at `now` (unix seconds).
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }
}

/// The SHA-256 of a secret, as stored (lower-case hex).
pub fn hash_hex(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let d = |c: u8| (c as char).to_digit(16);
        out[i] = u8::try_from(d(pair[0])? * 16 + d(pair[1])?).ok()?;
    }
    Some(out)
}

/// A fresh secret: `mg-` and 32 bytes from the operating system's random source, in hex.
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{PREFIX}{}", hex(&bytes)))
}

/// One stored key row, as the store keeps it (the store never decodes `spec`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredKey {
    pub name: String,
    /// SHA-256 of the secret, lower-case hex.
    pub hash: String,
    /// The `KeySpec` as JSON.
    pub spec: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Every managed key by the hash of its secret.
#[derive(Debug, Default)]
pub struct KeyTable {
    by_hash: HashMap<[u8; 32], Arc<ManagedKey>>,
    /// Every key, by name (the admin list).
    pub keys: Vec<Arc<ManagedKey>>,
}

impl KeyTable {
    /// Builds the table from stored rows; a row that does not decode is left out and named in
    /// the returned warnings (the key then fails closed: it authenticates nobody).
    pub fn build(rows: &[StoredKey]) -> (KeyTable, Vec<String>) {
        let mut table = KeyTable::default();
        let mut warnings = Vec::new();
        for row in rows {
            let decoded = unhex(&row.hash)
                .ok_or_else(|| "its hash is not 64 hex digits".to_string())
                .and_then(|h| {
                    let spec: KeySpec =
                        serde_json::from_str(&row.spec).map_err(|e| e.to_string())?;
                    spec.into_key(&row.name, row.created_at)
                        .map(|k| (h, k))
                        .map_err(|e| e.message)
                });
            match decoded {
                Ok((h, key)) => {
                    let key = Arc::new(key);
                    table.by_hash.insert(h, key.clone());
                    table.keys.push(key);
                }
                Err(e) => warnings.push(format!(
                    "admin store: API key {:?} cannot be read and is refused: {e}",
                    row.name
                )),
            }
        }
        table.keys.sort_by(|a, b| a.name.cmp(&b.name));
        (table, warnings)
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The key whose secret is `secret`. The lookup is by the secret's hash, so its time
    /// does not depend on how much of a stored secret a guess shares.
    pub fn find(&self, secret: &str) -> Option<&Arc<ManagedKey>> {
        if self.by_hash.is_empty() || !secret.starts_with(PREFIX) {
            return None;
        }
        self.by_hash.get(&hash(secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, secret: &str, spec: &str) -> StoredKey {
        StoredKey {
            name: name.into(),
            hash: hash_hex(secret),
            spec: spec.into(),
            created_at: 1,
        }
    }

    #[test]
    fn secrets_are_prefixed_random_and_found_by_their_hash_only() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert!(a.starts_with("mg-") && a.len() == 67, "{a}");
        assert_ne!(a, b);
        let (t, w) = KeyTable::build(&[row("k", &a, r#"{"user_path":"/team"}"#)]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(t.find(&a).unwrap().name, "k");
        assert_eq!(t.find(&a).unwrap().user_path.as_str(), "/team");
        assert!(t.find(&b).is_none());
        assert!(t.find("mg-").is_none());
        assert_eq!(unhex(&hash_hex(&a)), Some(hash(&a)));
    }

    #[test]
    fn an_unreadable_row_is_named_and_authenticates_nobody() {
        let (t, w) = KeyTable::build(&[row("bad", "mg-x", r#"{"user_path": 5}"#)]);
        assert!(t.find("mg-x").is_none());
        assert!(w[0].contains("\"bad\""), "{w:?}");
    }

    #[test]
    fn expiry_is_inclusive_of_its_second() {
        let (t, _) = KeyTable::build(&[row("k", "mg-1", r#"{"expires_at": 100}"#)]);
        let k = t.find("mg-1").unwrap();
        assert!(!k.expired(99));
        assert!(k.expired(100));
    }
}
