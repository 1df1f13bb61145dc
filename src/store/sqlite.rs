//! The SQLite store: one file (`SQLITE_PATH`), WAL journal, full sync on commit, versioned
//! migrations. Every `apply` is one transaction, so a process killed at any point leaves each
//! row wholly there or not, and a write's changes together or not at all.
//!
//! One connection behind a mutex: admin writes are rare and serialized anyway, and the request
//! path never calls into the store. A write takes SQLite's write lock before it reads
//! (`BEGIN IMMEDIATE`), so a second process on the same file cannot slip in between.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::columns::{self, Columns};
use super::{
    migrations, Change, Health, KeyChange, Outcome, Revisioned, Store, StoreError, StoredRow,
    UsageRow,
};
use crate::config::schema::VirtualModelSpec;
use crate::keys::StoredKey;

pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    health: Health,
}

const SELECT: &str = "SELECT source, targets, strategy, session_affinity, provider_name, model,
    user_paths, description, enabled, created_at, updated_at, spec, etag
    FROM virtual_models";

const UPSERT: &str = "INSERT INTO virtual_models (source, targets, strategy, session_affinity,
    provider_name, model, user_paths, description, enabled, created_at, updated_at, spec, etag)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
    ON CONFLICT(source) DO UPDATE SET targets = excluded.targets, strategy = excluded.strategy,
    session_affinity = excluded.session_affinity, provider_name = excluded.provider_name,
    model = excluded.model, user_paths = excluded.user_paths, description = excluded.description,
    enabled = excluded.enabled, created_at = excluded.created_at, updated_at = excluded.updated_at,
    spec = excluded.spec, etag = excluded.etag";

impl SqliteStore {
    /// Opens (creating the file and its directory when missing) and migrates the store.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: shown.clone(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: shown.clone(),
            source,
        })?;
        Self::with_connection(path, conn)
    }

    /// Opens the store only when its file exists (`check` and `resolve` create nothing).
    pub fn open_existing(path: &Path) -> Result<Option<SqliteStore>, StoreError> {
        if !path.is_file() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Self::with_connection(path, conn).map(Some)
    }

    fn with_connection(path: &Path, mut conn: Connection) -> Result<SqliteStore, StoreError> {
        let shown = path.display().to_string();
        let open_err = |source| StoreError::Open {
            path: shown.clone(),
            source,
        };
        // Another process (a second gateway on the same file) may hold the write lock briefly.
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            log::warn!("admin store {shown}: journal mode is {mode}, not WAL");
        }
        // Admin writes are rare: pay for an fsync per commit so a power loss keeps them too.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        migrations::run(&mut conn, &shown)?;
        let health = Health::default();
        health.connected();
        let store = SqliteStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            health,
        };
        let revision = read_revision(&store.conn())?;
        store.health.applied(revision);
        Ok(store)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written: keep going.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `PRAGMA integrity_check`: "ok" for a sound file.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        Ok(self
            .conn()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// One row by exact source, as stored.
    pub fn get(&self, source: &str) -> Result<Option<StoredRow>, StoreError> {
        let conn = self.conn();
        let raw = conn
            .query_row(&format!("{SELECT} WHERE source = ?1"), [source], raw_row)
            .optional()?;
        raw.map(decode).transpose()
    }
}

fn read_revision(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT revision FROM modelgate_store_revision WHERE id = 1",
        [],
        |r| r.get(0),
    )?)
}

fn read_keys(conn: &Connection) -> Result<Vec<StoredKey>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT name, hash, spec, created_at FROM modelgate_api_keys ORDER BY name")?;
    let keys = stmt
        .query_map([], |r| {
            Ok(StoredKey {
                name: r.get(0)?,
                hash: r.get(1)?,
                spec: r.get(2)?,
                created_at: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(keys)
}

fn bump_revision(tx: &Connection) -> Result<i64, StoreError> {
    Ok(tx.query_row(
        "UPDATE modelgate_store_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision",
        [],
        |r| r.get(0),
    )?)
}

fn read_rows(conn: &Connection) -> Result<Vec<StoredRow>, StoreError> {
    let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY source"))?;
    let raws = stmt
        .query_map([], raw_row)?
        .collect::<Result<Vec<_>, _>>()?;
    raws.into_iter().map(decode).collect()
}

fn write_change(tx: &Connection, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::Upsert(row) => {
            let c = columns::from_spec(&row.spec);
            let spec = serde_json::to_string(&row.spec).map_err(|e| StoreError::BadRow {
                source_name: c.source.clone(),
                message: e.to_string(),
            })?;
            tx.execute(
                UPSERT,
                params![
                    c.source,
                    c.targets,
                    c.strategy,
                    c.session_affinity,
                    c.provider_name,
                    c.model,
                    c.user_paths,
                    c.description,
                    c.enabled as i64,
                    row.created_at,
                    row.updated_at,
                    spec,
                    row.etag,
                ],
            )?;
        }
        Change::Delete(source) => {
            tx.execute("DELETE FROM virtual_models WHERE source = ?1", [source])?;
        }
    }
    Ok(())
}

/// A row's columns as read, before decoding (either backend).
pub(super) struct RawRow {
    pub(super) columns: Columns,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) spec: Option<String>,
    pub(super) etag: String,
}

fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        columns: Columns {
            source: r.get(0)?,
            targets: r.get(1)?,
            strategy: r.get(2)?,
            session_affinity: r.get(3)?,
            provider_name: r.get(4)?,
            model: r.get(5)?,
            user_paths: r.get(6)?,
            description: r.get(7)?,
            enabled: r.get::<_, i64>(8)? != 0,
        },
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        spec: r.get(11)?,
        etag: r.get(12)?,
    })
}

pub(super) fn decode(raw: RawRow) -> Result<StoredRow, StoreError> {
    let bad = |message: String| StoreError::BadRow {
        source_name: raw.columns.source.clone(),
        message,
    };
    let mut spec: VirtualModelSpec = match raw.spec.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(json) => serde_json::from_str(json).map_err(|e| {
            bad(format!(
                "spec column: {}",
                crate::config::suggest(&e.to_string())
            ))
        })?,
        None => columns::to_spec(&raw.columns).map_err(bad)?,
    };
    // The primary key is the source that counts.
    spec.source = Some(raw.columns.source.trim().to_string());
    let etag = if raw.etag.is_empty() {
        // A row GoModel wrote: its update time is what changes on every write.
        format!("g{:x}", raw.updated_at)
    } else {
        raw.etag
    };
    Ok(StoredRow {
        spec,
        created_at: raw.created_at,
        updated_at: raw.updated_at,
        etag,
    })
}

impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn location_field(&self) -> &'static str {
        "path"
    }

    fn load(&self) -> Result<Revisioned, StoreError> {
        let mut conn = self.conn();
        // A read transaction: the rows and the revision of one moment.
        let tx = conn.transaction()?;
        let revision = read_revision(&tx)?;
        let rows = read_rows(&tx)?;
        let keys = read_keys(&tx)?;
        tx.commit()?;
        Ok(Revisioned {
            rows,
            keys,
            revision,
        })
    }

    fn transact(
        &self,
        decide: &mut dyn FnMut(&[StoredRow]) -> Outcome,
    ) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let rows = read_rows(&tx)?;
        let changes = match decide(&rows) {
            Outcome::Commit(changes) => changes,
            Outcome::Abort => return Ok(None),
        };
        for change in &changes {
            write_change(&tx, change)?;
        }
        let revision = bump_revision(&tx)?;
        tx.commit()?;
        Ok(Some(revision))
    }

    fn write_key(&self, change: &KeyChange) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let changed = match change {
            KeyChange::Create(k) => tx.execute(
                "INSERT INTO modelgate_api_keys (name, hash, spec, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO NOTHING",
                params![k.name, k.hash, k.spec, k.created_at],
            )?,
            KeyChange::Delete(name) => {
                tx.execute("DELETE FROM modelgate_api_keys WHERE name = ?1", [name])?
            }
        };
        if changed == 0 {
            return Ok(None);
        }
        let revision = bump_revision(&tx)?;
        tx.commit()?;
        Ok(Some(revision))
    }

    fn add_usage(&self, rows: &[UsageRow]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare(USAGE_UPSERT)?;
            for r in rows {
                stmt.execute(params![
                    r.hour,
                    r.key,
                    r.user_path,
                    r.virtual_model,
                    r.model,
                    r.requests,
                    r.input_tokens,
                    r.output_tokens,
                    r.cost_usd
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn usage(&self, from: i64, to: i64) -> Result<Vec<UsageRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(USAGE_SELECT)?;
        let rows = stmt
            .query_map(params![from, to], |r| {
                Ok(UsageRow {
                    hour: r.get(0)?,
                    key: r.get(1)?,
                    user_path: r.get(2)?,
                    virtual_model: r.get(3)?,
                    model: r.get(4)?,
                    requests: r.get(5)?,
                    input_tokens: r.get(6)?,
                    output_tokens: r.get(7)?,
                    cost_usd: r.get(8)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn clear_usage(&self) -> Result<(), StoreError> {
        self.conn().execute("DELETE FROM modelgate_usage", [])?;
        Ok(())
    }

    fn health(&self) -> &Health {
        &self.health
    }
}

/// Adds to an hour's row (both backends: the statement is plain SQL with numbered parameters
/// in SQLite's spelling; PostgreSQL's is built from it).
pub(super) const USAGE_UPSERT: &str = "INSERT INTO modelgate_usage (hour, key_name, user_path,
    virtual_model, model, requests, input_tokens, output_tokens, cost_usd)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
    ON CONFLICT (hour, key_name, user_path, virtual_model, model) DO UPDATE SET
    requests = modelgate_usage.requests + excluded.requests,
    input_tokens = modelgate_usage.input_tokens + excluded.input_tokens,
    output_tokens = modelgate_usage.output_tokens + excluded.output_tokens,
    cost_usd = modelgate_usage.cost_usd + excluded.cost_usd";

pub(super) const USAGE_SELECT: &str = "SELECT hour, key_name, user_path, virtual_model, model,
    requests, input_tokens, output_tokens, cost_usd FROM modelgate_usage
    WHERE hour >= ?1 AND hour < ?2 ORDER BY hour, key_name, user_path, virtual_model, model";

#[cfg(test)]
mod tests {
    use super::*;

    fn row(json: &str, etag: &str) -> StoredRow {
        StoredRow {
            spec: serde_json::from_str(json).unwrap(),
            created_at: 100,
            updated_at: 200,
            etag: etag.to_string(),
        }
    }

    #[test]
    fn open_creates_the_directory_migrates_and_uses_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/store.db");
        let s = SqliteStore::open(&path).unwrap();
        assert!(path.is_file());
        assert_eq!(s.schema_version().unwrap(), migrations::latest());
        let mode: String = s
            .conn()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert!(s.list().unwrap().is_empty());
        drop(s);
        // Opening again is a no-op migration.
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), migrations::latest());
    }

    #[test]
    fn apply_is_all_or_nothing_and_rows_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let a = row(
            r#"{"source":"a","targets":[{"model":"p/m","weight":2,"retry":{"attempts":3}}],"slug":"a1"}"#,
            "e1",
        );
        s.apply(&[Change::Upsert(Box::new(a.clone()))]).unwrap();
        assert_eq!(s.list().unwrap(), vec![a.clone()]);
        // A failing statement inside a write rolls back the changes before it.
        let conn = s.conn();
        conn.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON virtual_models WHEN NEW.source = 'boom'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
        drop(conn);
        let err = s.apply(&[
            Change::Delete("a".into()),
            Change::Upsert(Box::new(row(r#"{"source":"boom"}"#, "e2"))),
        ]);
        assert!(err.is_err());
        assert_eq!(s.list().unwrap(), vec![a]);
    }

    #[test]
    fn gomodel_columns_are_written_beside_the_spec() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        s.apply(&[Change::Upsert(Box::new(row(
            r#"{"source":"smart","targets":["a/m1","a/m2"],"strategy":"priority","user_paths":["/t"],"enabled":false}"#,
            "e",
        )))])
        .unwrap();
        let (targets, strategy, paths, enabled): (String, String, String, i64) = s
            .conn()
            .query_row(
                "SELECT targets, strategy, user_paths, enabled FROM virtual_models",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(targets, r#"[{"model":"a/m1"},{"model":"a/m2"}]"#);
        assert_eq!(strategy, "failover");
        assert_eq!(paths, r#"["/t"]"#);
        assert_eq!(enabled, 0);
    }

    #[test]
    fn a_gomodel_database_is_adopted_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gomodel.db");
        {
            // The table as an older GoModel release created it (no session_affinity).
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE virtual_models (source TEXT PRIMARY KEY, targets TEXT NOT NULL DEFAULT '[]',
                  strategy TEXT NOT NULL DEFAULT '', provider_name TEXT NOT NULL DEFAULT '',
                  model TEXT NOT NULL DEFAULT '', user_paths TEXT NOT NULL DEFAULT '[]',
                  description TEXT NOT NULL DEFAULT '', enabled INTEGER NOT NULL DEFAULT 1,
                  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
                 INSERT INTO virtual_models VALUES ('smart', '[{\"model\":\"openai/gpt-4o\"}]', '', '', '', '[]', 'primary', 1, 10, 20);
                 INSERT INTO virtual_models VALUES ('openai/gpt-4o', '[]', '', 'openai', 'gpt-4o', '[\"/team\"]', '', 0, 10, 30);",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let rows = s.list().unwrap();
        assert_eq!(rows.len(), 2);
        let policy = &rows[0];
        assert_eq!(policy.source(), "openai/gpt-4o");
        assert_eq!(policy.spec.enabled, Some(false));
        assert_eq!(policy.spec.user_paths, Some(vec!["/team".to_string()]));
        assert_eq!(policy.etag, "g1e");
        let smart = &rows[1];
        assert_eq!(
            smart.spec.targets.as_ref().unwrap()[0].model.as_deref(),
            Some("openai/gpt-4o")
        );
        assert_eq!(smart.spec.description.as_deref(), Some("primary"));
        assert_eq!((smart.created_at, smart.updated_at), (10, 20));
    }

    #[test]
    fn a_newer_schema_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = SqliteStore::open(&path).err().unwrap().to_string();
        assert!(err.contains("schema version 99 is newer"), "{err}");
    }

    #[test]
    fn an_unreadable_spec_names_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        s.conn()
            .execute(
                "INSERT INTO virtual_models (source, created_at, updated_at, spec) VALUES ('x', 1, 1, '{\"sorce\": 1}')",
                [],
            )
            .unwrap();
        let err = s.list().unwrap_err().to_string();
        assert!(err.contains("row \"x\""), "{err}");
        assert!(err.contains("did you mean `source`?"), "{err}");
    }

    #[test]
    fn every_write_bumps_the_revision_and_a_refused_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.load().unwrap().revision, 0);
        let rev = s
            .transact(&mut |rows| {
                assert!(rows.is_empty());
                Outcome::Commit(vec![Change::Upsert(Box::new(row(
                    r#"{"source":"a"}"#,
                    "e",
                )))])
            })
            .unwrap();
        assert_eq!(rev, Some(1));
        assert_eq!(s.transact(&mut |_| Outcome::Abort).unwrap(), None);
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        let current = s.load().unwrap();
        assert_eq!((current.revision, current.rows.len()), (1, 1));
        assert_eq!(s.health().revision(), 1);
    }

    #[test]
    fn keys_are_created_once_listed_and_deleted_each_bumping_the_revision() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let key = StoredKey {
            name: "ci".into(),
            hash: "ab".repeat(32),
            spec: "{}".into(),
            created_at: 7,
        };
        assert_eq!(
            s.write_key(&KeyChange::Create(key.clone())).unwrap(),
            Some(1)
        );
        // The name is taken: nothing changes, the revision stays.
        let mut other = key.clone();
        other.hash = "cd".repeat(32);
        assert_eq!(s.write_key(&KeyChange::Create(other)).unwrap(), None);
        let current = s.load().unwrap();
        assert_eq!((current.keys, current.revision), (vec![key], 1));
        assert_eq!(
            s.write_key(&KeyChange::Delete("ci".into())).unwrap(),
            Some(2)
        );
        assert_eq!(s.write_key(&KeyChange::Delete("ci".into())).unwrap(), None);
        assert!(s.load().unwrap().keys.is_empty());
    }

    #[test]
    fn usage_adds_up_per_hour_and_row_without_touching_the_revision() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let row = |hour, requests| UsageRow {
            hour,
            key: "k".into(),
            user_path: "/t".into(),
            virtual_model: String::new(),
            model: "p/m".into(),
            requests,
            input_tokens: 10 * requests,
            output_tokens: requests,
            cost_usd: 0.5 * requests as f64,
        };
        s.add_usage(&[row(3600, 1), row(7200, 2)]).unwrap();
        s.add_usage(&[row(3600, 3)]).unwrap();
        assert_eq!(s.usage(0, 7200).unwrap(), vec![row(3600, 4)]);
        assert_eq!(s.usage(0, 10_000).unwrap().len(), 2);
        assert_eq!(s.load().unwrap().revision, 0);
    }

    #[test]
    fn open_existing_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.db");
        assert!(SqliteStore::open_existing(&path).unwrap().is_none());
        assert!(!path.exists());
    }
}
