//! The admin store: virtual model rows and managed API keys written through the admin API,
//! behind the `Store` trait:
//! `sqlite` (one file, the default) or `postgres` (one database shared by a fleet of gateways).
//!
//! The store never validates rows and never touches the request path: a write decides and
//! validates its whole new snapshot inside the store's transaction (`Store::transact`), and rows
//! reach requests only through a snapshot. Every committed write bumps the store's revision, so
//! a gateway knows whether the rows it serves are the latest.

pub mod columns;
pub mod copy;
pub mod endpoint;
pub mod migrations;
pub mod pg_migrations;
pub mod postgres;
pub mod sqlite;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::config::schema::VirtualModelSpec;
use crate::keys::StoredKey;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// One stored virtual model with its bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    /// The entry as a config file would declare it; `source` is always set and trimmed.
    pub spec: VirtualModelSpec,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Changes on every write of the row; compared with `If-Match`.
    pub etag: String,
}

impl StoredRow {
    pub fn source(&self) -> &str {
        self.spec.source.as_deref().unwrap_or("")
    }
}

/// One change of a write. A write's changes are applied in one transaction.
#[derive(Debug, Clone)]
pub enum Change {
    /// Inserts the row or replaces the row with the same source.
    Upsert(Box<StoredRow>),
    /// Removes the row with exactly this source (no error when absent).
    Delete(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("admin store {path}: cannot create its directory: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("admin store {path}: cannot open: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("admin store {path}: schema version {found} is newer than this modelgate knows ({known}); upgrade modelgate or point SQLITE_PATH elsewhere")]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("admin store {path}: migration {version} ({name}) failed: {source}")]
    Migration {
        path: String,
        version: i64,
        name: &'static str,
        source: rusqlite::Error,
    },
    #[error("admin store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("admin store: row {source_name:?} cannot be read: {message}")]
    BadRow {
        source_name: String,
        message: String,
    },
    /// The database cannot be reached now (connection refused or lost, server shutting down):
    /// admin writes answer 503 and the gateway keeps serving its last snapshot.
    #[error("admin store {location} is unavailable: {message}")]
    Unavailable { location: String, message: String },
    #[error("admin store {location}: {source}")]
    Postgres {
        location: String,
        source: tokio_postgres::Error,
    },
    #[error("admin store {location}: schema version {found} is newer than this modelgate knows ({known}); upgrade modelgate or point POSTGRES_URL elsewhere")]
    PgTooNew {
        location: String,
        found: i64,
        known: i64,
    },
    #[error("admin store {location}: migration {version} ({name}) failed: {source}")]
    PgMigration {
        location: String,
        version: i64,
        name: &'static str,
        source: tokio_postgres::Error,
    },
    #[error("{0}")]
    Endpoint(String),
}

impl StoreError {
    /// Whether the error is the database being out of reach (503) rather than a fault (500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// Rows and keys together with the revision they are at.
#[derive(Debug, Clone)]
pub struct Revisioned {
    pub rows: Vec<StoredRow>,
    /// Managed API keys, ordered by name.
    pub keys: Vec<StoredKey>,
    pub revision: i64,
}

/// Usage of one hour by one (key, user path, virtual model, served model); empty strings stand
/// for none. Rows with the same five fields add up.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    /// Unix seconds of the hour's start.
    pub hour: i64,
    pub key: String,
    pub user_path: String,
    pub virtual_model: String,
    pub model: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

/// One write of a managed key, applied in its own transaction.
#[derive(Debug, Clone)]
pub enum KeyChange {
    /// Inserts the key; changes nothing when its name is taken.
    Create(StoredKey),
    /// Removes the key with this name; changes nothing when there is none.
    Delete(String),
}

/// What a write's decision does with the transaction it runs in.
#[derive(Debug)]
pub enum Outcome {
    /// Apply these changes, bump the revision and commit.
    Commit(Vec<Change>),
    /// Roll back: the decision refused the write (its reason is the caller's to keep).
    Abort,
}

/// The store's health as the status API and `/metrics` show it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreState {
    /// The revision the live snapshot was built at (0 before any write).
    pub revision: i64,
    pub connected: bool,
    pub last_error: Option<String>,
}

/// Connection state shared by a store and its follower: atomics and one swapped string, so
/// the status API and `/metrics` read it without a lock.
#[derive(Debug, Default)]
pub struct Health {
    revision: AtomicI64,
    connected: AtomicBool,
    last_error: ArcSwapOption<String>,
}

impl Health {
    /// The store answered. Back from an outage, the outage's error is over: `last_error`
    /// clears (the log keeps it).
    pub fn connected(&self) {
        if !self.connected.swap(true, Ordering::Relaxed) {
            self.last_error.store(None);
        }
    }

    pub fn failed(&self, error: &str) {
        self.connected.store(false, Ordering::Relaxed);
        self.last_error.store(Some(Arc::new(error.to_string())));
    }

    /// Records a failure that says nothing about the connection (rows that do not validate).
    pub fn error(&self, error: &str) {
        self.last_error.store(Some(Arc::new(error.to_string())));
    }

    /// Records the revision the live snapshot now reflects.
    pub fn applied(&self, revision: i64) {
        self.revision.store(revision, Ordering::Relaxed);
    }

    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Relaxed)
    }

    pub fn state(&self) -> StoreState {
        StoreState {
            revision: self.revision(),
            connected: self.connected.load(Ordering::Relaxed),
            last_error: self.last_error.load_full().map(|e| (*e).clone()),
        }
    }
}

/// What a follower calls when the rows changed under the gateway (another instance wrote, or
/// the connection came back): rebuild the snapshot. Runs on a blocking thread.
pub type OnChange = Arc<dyn Fn() + Send + Sync>;

/// A backend for admin rows. Implementations keep every write atomic: after a crash at any
/// point each row is wholly there or not, and the changes of one call land together or not at
/// all.
pub trait Store: Send + Sync {
    /// `sqlite` or `postgresql`, for the status API.
    fn kind(&self) -> &'static str;
    /// Where the rows live (a file path or a database URL without credentials).
    fn location(&self) -> String;
    /// The status API's name for `location`: `path` (a file) or `url` (a database).
    fn location_field(&self) -> &'static str;
    /// Every row, ordered by source.
    fn list(&self) -> Result<Vec<StoredRow>, StoreError> {
        self.load().map(|r| r.rows)
    }
    /// Every row and the revision they are at, read in one transaction.
    fn load(&self) -> Result<Revisioned, StoreError>;
    /// One write: in one transaction that holds the store's write lock, reads every row, asks
    /// `decide` what to do with them, and applies its changes, bumps the revision (and tells
    /// the other gateways) and commits; `decide` refusing rolls back. So whatever `decide`
    /// checks (`If-Match`, a free source) still holds when the changes land, whichever gateway
    /// wrote last. Returns the new revision, or None when `decide` refused.
    fn transact(
        &self,
        decide: &mut dyn FnMut(&[StoredRow]) -> Outcome,
    ) -> Result<Option<i64>, StoreError>;
    /// One key write in its own transaction that holds the store's write lock, bumping the
    /// revision (and telling the other gateways) when it changed something. Returns the new
    /// revision, or None when it changed nothing (the name was taken, or no such key).
    fn write_key(&self, change: &KeyChange) -> Result<Option<i64>, StoreError>;
    /// Adds usage rows to their hours, in one transaction (not a configuration change: the
    /// revision stays).
    fn add_usage(&self, rows: &[UsageRow]) -> Result<(), StoreError>;
    /// The usage rows of the hours from `from` up to `to` (unix seconds, `to` excluded).
    fn usage(&self, from: i64, to: i64) -> Result<Vec<UsageRow>, StoreError>;
    /// Removes every usage row (`store copy --replace`).
    fn clear_usage(&self) -> Result<(), StoreError>;
    /// Applies `changes` in one transaction, whatever the rows are.
    fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        self.transact(&mut |_| Outcome::Commit(changes.to_vec()))
            .map(|_| ())
    }
    /// Revision, connection state and last error.
    fn health(&self) -> &Health;
    /// Starts watching for writes by other gateways, calling `on_change` after each (and when a
    /// lost connection comes back). A store only this process writes needs no watching.
    fn follow(&self, on_change: OnChange) {
        let _ = on_change;
    }
}

/// A fresh etag: random, so a row deleted and created again never repeats an old one.
pub fn new_etag() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// A fresh row id in UUID version 7 form: the creation time in milliseconds, then random bits.
/// Ids of one process increase (a second id in the same millisecond takes the next one), so
/// rows created within one second still sort by creation (NeMo's `-created_at` list order).
pub fn new_id() -> String {
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    let now = crate::wall_clock::now_ms();
    let mut prev = LAST_MS.load(Ordering::Relaxed);
    let ms = loop {
        let next = now.max(prev + 1);
        match LAST_MS.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(seen) => prev = seen,
        }
    };
    let a = ((ms & 0xffff_ffff_ffff) << 16) | 0x7000 | (fastrand::u64(..) & 0x0fff);
    let b = (fastrand::u64(..) & !(0xc << 60)) | (0x8 << 60);
    uuid_text(a, b)
}

/// A stable id for a row that has none yet (written by GoModel, or by an older modelgate):
/// derived from its source, so it reads the same until the admin API stores it.
pub fn derived_id(source: &str) -> String {
    // FNV-1a twice with different offsets: stable across processes and versions.
    let fnv = |seed: u64| {
        source.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    uuid_text(fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4))
}

fn uuid_text(a: u64, b: u64) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// The current time in unix seconds.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid_shaped_fresh_ones_random_derived_ones_stable() {
        let shape = |s: &str| {
            let parts: Vec<usize> = s.split('-').map(str::len).collect();
            parts == [8, 4, 4, 4, 12] && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
        };
        let (a, b) = (new_id(), new_id());
        assert!(shape(&a) && shape(&b), "{a} {b}");
        assert!(a < b, "ids of one process increase: {a} then {b}");
        assert_eq!(&a[14..15], "7");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        let ms = u64::from_str_radix(&a[..8], 16).unwrap() << 16
            | u64::from_str_radix(&a[9..13], 16).unwrap();
        assert!(ms.abs_diff(crate::wall_clock::now_ms()) < 60_000, "{a}");
        assert_eq!(derived_id("w/x"), derived_id("w/x"));
        assert_ne!(derived_id("w/x"), derived_id("w/y"));
        assert!(shape(&derived_id("w/x")));
    }
}
