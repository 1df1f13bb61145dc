//! `modelgate store copy`: every row from one store to another (SQLite to PostgreSQL or back):
//! the virtual models, keeping each row's source, id, etag and times, in one transaction of the
//! target; then the managed API keys (their hashes: a key keeps working on the new store); then
//! the hourly usage rows.
//!
//! A target that holds any row (a virtual model, a key or usage) is refused unless the copy is
//! told to replace them; replacing removes the target's own keys and usage too. Nothing here
//! validates rows (the gateway that serves them does, as for any store).

use std::path::Path;
use std::time::Duration;

use super::endpoint::Endpoint;
use super::{Change, Outcome, PostgresStore, SqliteStore, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("--from {0}: no such file")]
    NoSource(String),
    #[error("--to {target} already holds {rows} virtual models, {keys} API keys and {usage} usage rows; pass --replace to overwrite them, or copy into an empty store")]
    NotEmpty {
        target: String,
        rows: usize,
        keys: usize,
        usage: usize,
    },
    #[error("store copy: {0}")]
    Store(#[from] StoreError),
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq)]
pub struct Copied {
    pub rows: usize,
    pub keys: usize,
    pub usage: usize,
    /// Rows of the target that were replaced.
    pub replaced: usize,
    /// The target's revision after the copy.
    pub revision: i64,
}

/// Opens the store an endpoint names: a source must exist; a target is created (and migrated).
pub fn open(endpoint: &Endpoint, create: bool) -> Result<Box<dyn Store>, CopyError> {
    Ok(match endpoint {
        Endpoint::Sqlite(path) => Box::new(open_sqlite(path, create)?),
        // The copy never follows the store: the poll interval is not used.
        Endpoint::Postgres(url) => Box::new(PostgresStore::open(url, Duration::from_secs(30))?),
    })
}

fn open_sqlite(path: &Path, create: bool) -> Result<SqliteStore, CopyError> {
    if create {
        return Ok(SqliteStore::open(path)?);
    }
    SqliteStore::open_existing(path)?
        .ok_or_else(|| CopyError::NoSource(format!("sqlite:{}", path.display())))
}

/// Every usage hour there is.
const ALL_HOURS: (i64, i64) = (i64::MIN, i64::MAX);

/// Copies every row of `from` into `to`: the virtual models in one transaction of `to`, then
/// the keys and the usage rows.
pub fn copy(from: &dyn Store, to: &dyn Store, replace: bool) -> Result<Copied, CopyError> {
    let source = from.load()?;
    let rows = source.rows;
    let usage = from.usage(ALL_HOURS.0, ALL_HOURS.1)?;
    let target_keys = to.load()?.keys;
    let target_usage = to.usage(ALL_HOURS.0, ALL_HOURS.1)?.len();
    let not_empty = |rows: usize| CopyError::NotEmpty {
        target: to.location(),
        rows,
        keys: target_keys.len(),
        usage: target_usage,
    };
    if !replace && (!target_keys.is_empty() || target_usage > 0) {
        return Err(not_empty(to.list()?.len()));
    }
    let mut refused = None;
    let mut replaced = 0;
    let revision = to.transact(&mut |existing| {
        if !existing.is_empty() && !replace {
            refused = Some(existing.len());
            return Outcome::Abort;
        }
        replaced = existing.len();
        let mut changes: Vec<Change> = existing
            .iter()
            .map(|r| Change::Delete(r.source().to_string()))
            .collect();
        changes.extend(rows.iter().map(|r| Change::Upsert(Box::new(r.clone()))));
        Outcome::Commit(changes)
    })?;
    let mut revision = match (refused, revision) {
        (Some(n), _) => return Err(not_empty(n)),
        (None, Some(revision)) => revision,
        (None, None) => return Err(not_empty(0)),
    };
    // With --replace the target's own keys go: a name taken there would keep its old secret.
    for key in &target_keys {
        if let Some(r) = to.write_key(&super::KeyChange::Delete(key.name.clone()))? {
            revision = r;
        }
    }
    let keys = source.keys.len();
    for key in source.keys {
        if let Some(r) = to.write_key(&super::KeyChange::Create(key))? {
            revision = r;
        }
    }
    if target_usage > 0 {
        to.clear_usage()?;
    }
    to.add_usage(&usage)?;
    Ok(Copied {
        rows: rows.len(),
        keys,
        usage: usage.len(),
        replaced,
        revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredRow;

    fn row(source: &str, etag: &str) -> StoredRow {
        StoredRow {
            spec: serde_json::from_value(serde_json::json!({"source": source, "target": "p/m"}))
                .unwrap(),
            created_at: 11,
            updated_at: 22,
            etag: etag.into(),
        }
    }

    #[test]
    fn rows_keep_their_etags_and_times_and_a_full_target_needs_replace() {
        let dir = tempfile::tempdir().unwrap();
        let a = SqliteStore::open(&dir.path().join("a.db")).unwrap();
        let b = SqliteStore::open(&dir.path().join("b.db")).unwrap();
        a.apply(&[
            Change::Upsert(Box::new(row("x", "e1"))),
            Change::Upsert(Box::new(row("y", "e2"))),
        ])
        .unwrap();
        let done = copy(&a, &b, false).unwrap();
        assert_eq!((done.rows, done.replaced, done.revision), (2, 0, 1));
        assert_eq!(b.list().unwrap(), a.list().unwrap());
        let e = copy(&a, &b, false).unwrap_err().to_string();
        assert!(
            e.contains(
                "already holds 2 virtual models, 0 API keys and 0 usage rows; pass --replace"
            ),
            "{e}"
        );
        b.apply(&[Change::Upsert(Box::new(row("z", "e3")))])
            .unwrap();
        let done = copy(&a, &b, true).unwrap();
        assert_eq!(done.replaced, 3);
        assert_eq!(b.list().unwrap(), a.list().unwrap());
    }

    #[test]
    fn keys_are_copied_with_their_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let a = SqliteStore::open(&dir.path().join("a.db")).unwrap();
        let b = SqliteStore::open(&dir.path().join("b.db")).unwrap();
        let key = crate::keys::StoredKey {
            name: "ci".into(),
            hash: "ab".repeat(32),
            spec: r#"{"user_path":"/t"}"#.into(),
            created_at: 5,
        };
        a.write_key(&crate::store::KeyChange::Create(key.clone()))
            .unwrap();
        let done = copy(&a, &b, false).unwrap();
        assert_eq!(b.load().unwrap().keys, vec![key]);
        assert_eq!(done.revision, b.load().unwrap().revision);
    }

    #[test]
    fn keys_and_usage_are_rows_too() {
        let dir = tempfile::tempdir().unwrap();
        let a = SqliteStore::open(&dir.path().join("a.db")).unwrap();
        let b = SqliteStore::open(&dir.path().join("b.db")).unwrap();
        let key = |name: &str, hash: &str| crate::keys::StoredKey {
            name: name.into(),
            hash: hash.repeat(32),
            spec: "{}".into(),
            created_at: 5,
        };
        let usage = |hour: i64, requests: i64| crate::store::UsageRow {
            hour,
            key: "ci".into(),
            user_path: "/t".into(),
            virtual_model: String::new(),
            model: "p/m".into(),
            requests,
            input_tokens: 10,
            output_tokens: 2,
            cost_usd: 0.5,
        };
        a.write_key(&crate::store::KeyChange::Create(key("ci", "ab")))
            .unwrap();
        a.add_usage(&[usage(3600, 3), usage(7200, 1)]).unwrap();
        // A target holding only a key is not empty.
        b.write_key(&crate::store::KeyChange::Create(key("ci", "cd")))
            .unwrap();
        let e = copy(&a, &b, false).unwrap_err().to_string();
        assert!(
            e.contains("0 virtual models, 1 API keys and 0 usage rows"),
            "{e}"
        );
        // Replaced: the source's key (its hash) and usage, nothing of the target's.
        b.add_usage(&[usage(0, 9)]).unwrap();
        let done = copy(&a, &b, true).unwrap();
        assert_eq!((done.keys, done.usage), (1, 2));
        assert_eq!(b.load().unwrap().keys, a.load().unwrap().keys);
        assert_eq!(
            b.usage(i64::MIN, i64::MAX).unwrap(),
            a.usage(i64::MIN, i64::MAX).unwrap()
        );
    }

    #[test]
    fn a_missing_sqlite_source_is_named_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.db");
        let e = open(&Endpoint::Sqlite(path.clone()), false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("--from sqlite:"), "{e}");
        assert!(e.ends_with("no such file"), "{e}");
        assert!(!path.exists());
    }
}
