//! Versioned schema migrations for the PostgreSQL store, recorded in
//! `modelgate_schema_migrations`.
//!
//! Every gateway of a fleet runs them at start-up, possibly at the same moment: all of them run
//! in one transaction that first takes a transaction-scoped advisory lock, so one instance
//! migrates while the others wait and then find nothing left to do. DDL is transactional in
//! PostgreSQL, so a failure leaves the schema as it was. Migrations only add, like the SQLite
//! store's, and create the same `virtual_models` columns.

use tokio_postgres::Client;

use super::StoreError;

pub struct PgMigration {
    pub version: i64,
    pub name: &'static str,
    sql: &'static str,
}

/// The advisory lock key that serializes migrations ("mgate" in ASCII).
const LOCK_KEY: i64 = 0x006d_6761_7465;

/// Every migration, in order. Append only.
pub const MIGRATIONS: &[PgMigration] = &[
    PgMigration {
        version: 1,
        name: "virtual_models table with GoModel's columns",
        sql: "CREATE TABLE IF NOT EXISTS virtual_models (
            source TEXT PRIMARY KEY,
            targets TEXT NOT NULL DEFAULT '[]',
            strategy TEXT NOT NULL DEFAULT '',
            session_affinity TEXT NOT NULL DEFAULT '',
            provider_name TEXT NOT NULL DEFAULT '',
            model TEXT NOT NULL DEFAULT '',
            user_paths TEXT NOT NULL DEFAULT '[]',
            description TEXT NOT NULL DEFAULT '',
            enabled BOOLEAN NOT NULL DEFAULT TRUE,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS idx_virtual_models_enabled ON virtual_models(enabled);
        CREATE INDEX IF NOT EXISTS idx_virtual_models_updated_at ON virtual_models(updated_at DESC);
        ALTER TABLE virtual_models ADD COLUMN IF NOT EXISTS session_affinity TEXT NOT NULL DEFAULT '';",
    },
    PgMigration {
        version: 2,
        name: "spec and etag columns",
        sql: "ALTER TABLE virtual_models ADD COLUMN IF NOT EXISTS spec TEXT;
        ALTER TABLE virtual_models ADD COLUMN IF NOT EXISTS etag TEXT NOT NULL DEFAULT '';",
    },
    PgMigration {
        version: 3,
        name: "store revision",
        sql: "CREATE TABLE IF NOT EXISTS modelgate_store_revision (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            revision BIGINT NOT NULL
        );
        INSERT INTO modelgate_store_revision (id, revision) VALUES (1, 0) ON CONFLICT DO NOTHING;",
    },
    PgMigration {
        version: 4,
        name: "managed API keys and hourly usage",
        sql: "CREATE TABLE IF NOT EXISTS modelgate_api_keys (
            name TEXT PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            spec TEXT NOT NULL,
            created_at BIGINT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS modelgate_usage (
            hour BIGINT NOT NULL,
            key_name TEXT NOT NULL,
            user_path TEXT NOT NULL,
            virtual_model TEXT NOT NULL,
            model TEXT NOT NULL,
            requests BIGINT NOT NULL,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            cost_usd DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (hour, key_name, user_path, virtual_model, model)
        );",
    },
];

/// The schema version this build writes.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the schema to `latest()`. Fails on a database from a newer modelgate.
pub async fn run(client: &mut Client, location: &str) -> Result<(), StoreError> {
    let pg = |source| StoreError::Postgres {
        location: location.to_string(),
        source,
    };
    let tx = client.transaction().await.map_err(pg)?;
    tx.query_one("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(pg)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS modelgate_schema_migrations (
            version BIGINT PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at BIGINT NOT NULL
        )",
    )
    .await
    .map_err(pg)?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM modelgate_schema_migrations",
            &[],
        )
        .await
        .and_then(|r| r.try_get(0))
        .map_err(pg)?;
    if current > latest() {
        return Err(StoreError::PgTooNew {
            location: location.to_string(),
            found: current,
            known: latest(),
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let fail = |source| StoreError::PgMigration {
            location: location.to_string(),
            version: m.version,
            name: m.name,
            source,
        };
        tx.batch_execute(m.sql).await.map_err(fail)?;
        tx.execute(
            "INSERT INTO modelgate_schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &super::now_s()],
        )
        .await
        .map_err(fail)?;
    }
    tx.commit().await.map_err(pg)
}
