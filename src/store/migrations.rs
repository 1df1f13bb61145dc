//! Versioned schema migrations for the SQLite store, tracked in SQLite's `user_version`.
//!
//! Each migration runs in its own transaction together with the `user_version` bump, so a crash
//! leaves the schema at one version or the next, never between. Migrations only add: they never
//! drop a column or rewrite rows, so a database GoModel created (`user_version` 0, its own
//! `virtual_models` table) is adopted in place.

use rusqlite::Connection;

use super::StoreError;

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    apply: fn(&Connection) -> rusqlite::Result<()>,
}

/// Every migration, in order. Append only.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "virtual_models table with GoModel's columns",
        apply: v1_gomodel_table,
    },
    Migration {
        version: 2,
        name: "spec and etag columns",
        apply: v2_spec_and_etag,
    },
    Migration {
        version: 3,
        name: "store revision",
        apply: v3_revision,
    },
    Migration {
        version: 4,
        name: "managed API keys and hourly usage",
        apply: v4_api_keys,
    },
];

/// The schema version this build writes.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = stmt.query_map([], |r| r.get::<_, String>(1))?;
    for n in names {
        if n? == column {
            return Ok(true);
        }
    }
    Ok(false)
}

fn add_column(conn: &Connection, column: &str, decl: &str) -> rusqlite::Result<()> {
    if !has_column(conn, "virtual_models", column)? {
        conn.execute_batch(&format!(
            "ALTER TABLE virtual_models ADD COLUMN {column} {decl}"
        ))?;
    }
    Ok(())
}

fn v1_gomodel_table(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS virtual_models (
            source TEXT PRIMARY KEY,
            targets TEXT NOT NULL DEFAULT '[]',
            strategy TEXT NOT NULL DEFAULT '',
            session_affinity TEXT NOT NULL DEFAULT '',
            provider_name TEXT NOT NULL DEFAULT '',
            model TEXT NOT NULL DEFAULT '',
            user_paths TEXT NOT NULL DEFAULT '[]',
            description TEXT NOT NULL DEFAULT '',
            enabled INTEGER NOT NULL DEFAULT 1,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS idx_virtual_models_enabled ON virtual_models(enabled);
        CREATE INDEX IF NOT EXISTS idx_virtual_models_updated_at ON virtual_models(updated_at DESC);",
    )?;
    // Tables from older GoModel releases predate this column.
    add_column(conn, "session_affinity", "TEXT NOT NULL DEFAULT ''")
}

fn v2_spec_and_etag(conn: &Connection) -> rusqlite::Result<()> {
    // NULL spec marks a row GoModel wrote: it is read from the GoModel columns.
    add_column(conn, "spec", "TEXT")?;
    add_column(conn, "etag", "TEXT NOT NULL DEFAULT ''")
}

fn v3_revision(conn: &Connection) -> rusqlite::Result<()> {
    // One row: bumped by every write, so a copy to PostgreSQL carries on from it.
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS modelgate_store_revision (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            revision INTEGER NOT NULL
        );
        INSERT OR IGNORE INTO modelgate_store_revision (id, revision) VALUES (1, 0);",
    )
}

fn v4_api_keys(conn: &Connection) -> rusqlite::Result<()> {
    // Only the SHA-256 of a secret is kept; `spec` is the key's JSON (user path, scopes,
    // expiry, limits).
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS modelgate_api_keys (
            name TEXT PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            spec TEXT NOT NULL,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE IF NOT EXISTS modelgate_usage (
            hour INTEGER NOT NULL,
            key_name TEXT NOT NULL,
            user_path TEXT NOT NULL,
            virtual_model TEXT NOT NULL,
            model TEXT NOT NULL,
            requests INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cost_usd REAL NOT NULL,
            PRIMARY KEY (hour, key_name, user_path, virtual_model, model)
        );",
    )
}

/// Brings the schema to `latest()`. Fails on a database from a newer modelgate.
pub fn run(conn: &mut Connection, path: &str) -> Result<(), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > latest() {
        return Err(StoreError::TooNew {
            path: path.to_string(),
            found: current,
            known: latest(),
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let fail = |source| StoreError::Migration {
            path: path.to_string(),
            version: m.version,
            name: m.name,
            source,
        };
        let tx = conn.transaction().map_err(fail)?;
        (m.apply)(&tx).map_err(fail)?;
        tx.pragma_update(None, "user_version", m.version)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok(())
}
