//! The admin store: virtual model rows written through the admin API, kept behind the `Store`
//! trait so that another backend (PostgreSQL, for fleets of gateways sharing rows) can follow.
//!
//! The store never validates rows and never touches the request path: the admin API validates
//! a whole new snapshot before it commits, and rows reach requests only through a snapshot.

pub mod columns;
pub mod migrations;
pub mod sqlite;

use crate::app::StoreRows;
use crate::config::schema::VirtualModelSpec;

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
}

/// A backend for admin rows. Implementations keep every `apply` atomic: after a crash at any
/// point each row is wholly there or not, and the changes of one call land together or not at
/// all.
pub trait Store: StoreRows + Send + Sync {
    /// `sqlite` (or the name of another backend), for the status API.
    fn kind(&self) -> &'static str;
    /// Where the rows live (a file path or a database URL without credentials).
    fn location(&self) -> String;
    /// Every row, ordered by source.
    fn list(&self) -> Result<Vec<StoredRow>, StoreError>;
    /// Applies `changes` in one transaction.
    fn apply(&self, changes: &[Change]) -> Result<(), StoreError>;
}

/// A fresh etag: random, so a row deleted and created again never repeats an old one.
pub fn new_etag() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// A fresh row id, in UUID form (random, version 4 layout).
pub fn new_id() -> String {
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    let a = (a & !0xf000) | 0x4000;
    let b = (b & !(0xc << 60)) | (0x8 << 60);
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
        assert_ne!(a, b);
        assert_eq!(&a[14..15], "4");
        assert_eq!(derived_id("w/x"), derived_id("w/x"));
        assert_ne!(derived_id("w/x"), derived_id("w/y"));
        assert!(shape(&derived_id("w/x")));
    }
}
