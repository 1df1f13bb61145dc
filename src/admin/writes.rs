//! Admin writes: create, replace, partial update (with rename), delete.
//!
//! Every write follows one protocol, under `App::rebuild_lock` and inside one store transaction
//! that holds the store's write lock (`Store::transact`; with PostgreSQL, the whole fleet's):
//! read the store's rows, decide the changes (a pure function of those rows and the live
//! snapshot), build and validate the whole new snapshot with the config currently loaded, and
//! only then commit (bumping the store's revision) and swap the snapshot in. `If-Match`, a free
//! source and a rename's target are therefore checked against the rows the write commits over,
//! whichever gateway wrote last. A write that fails at any step leaves the store and the live
//! snapshot as they were; a successful one is live on the next request. A store out of reach
//! answers 503 `store_unavailable`.

use serde_json::Value;

use super::entry;
use super::{conflict, internal, not_found, patch, unprocessable, Response};
use crate::api_error::ApiError;
use crate::app::App;
use crate::config::schema::VirtualModelSpec;
use crate::routing::model::Origin;
use crate::snapshot::Snapshot;
use crate::store::{derived_id, new_etag, new_id, now_s, Change, Outcome, StoreError, StoredRow};

/// What a write decides from: the store's rows and the live snapshot, read under the lock.
pub struct Current<'a> {
    pub rows: Vec<StoredRow>,
    pub snap: &'a Snapshot,
}

impl Current<'_> {
    /// A store row by source: exact, else case-insensitive (sources are unique that way).
    pub fn find(&self, source: &str) -> Option<&StoredRow> {
        let lower = source.to_lowercase();
        self.rows.iter().find(|r| r.source() == source).or_else(|| {
            self.rows
                .iter()
                .find(|r| r.source().to_lowercase() == lower)
        })
    }

    /// Where a config or env entry with exactly this source is declared.
    pub fn managed(&self, source: &str) -> Option<String> {
        self.snap
            .table
            .models
            .iter()
            .find(|m| m.origin != Origin::Store && m.source == source)
            .map(|m| m.origin.location())
    }
}

/// What one write does.
#[derive(Debug)]
pub struct Decision {
    pub changes: Vec<Change>,
    /// The row as written (none for a delete).
    pub row: Option<StoredRow>,
    /// 201 created, 200 replaced, 204 deleted.
    pub status: u16,
}

pub fn managed_by_config(source: &str, location: &str) -> ApiError {
    conflict(
        "managed_by_config",
        format!(
            "virtual model {source:?} is declared in {location}; edit it there (config and env entries are read-only to the admin API)"
        ),
    )
}

fn etag_mismatch(given: &str, current: Option<&str>) -> ApiError {
    conflict(
        "etag_mismatch",
        match current {
            Some(c) => format!(
                "If-Match {given} does not match the current etag \"{c}\": the row changed since you read it; read it again"
            ),
            None => format!("If-Match {given} names a row that no longer exists"),
        },
    )
}

/// Whether an `If-Match` header admits a row with etag `current` (None: no row).
pub fn if_match_ok(header: &str, current: Option<&str>) -> bool {
    header.split(',').map(str::trim).any(|tag| match tag {
        "*" => current.is_some(),
        t => {
            let t = t.strip_prefix("W/").unwrap_or(t).trim_matches('"');
            current == Some(t)
        }
    })
}

/// How a write treats an existing row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// POST: the source must be free.
    Create,
    /// PUT: create or replace.
    Upsert,
    /// PATCH / rename: the row must exist.
    Update,
}

/// Decides a write of `spec` to the row now stored under `at` (the spec's own source when
/// none); the spec's source may differ from `at` (a rename).
pub fn decide_write(
    cur: &Current<'_>,
    at: Option<&str>,
    mut spec: VirtualModelSpec,
    if_match: Option<&str>,
    mode: Mode,
    now: i64,
) -> Result<Decision, ApiError> {
    let source = entry::required_source(&spec)?;
    spec.source = Some(source.clone());
    let at = at.unwrap_or(&source);
    if let Some(loc) = cur.managed(at) {
        return Err(managed_by_config(at, &loc));
    }
    if let Some(loc) = cur.managed(&source) {
        return Err(managed_by_config(&source, &loc));
    }
    let existing = if mode == Mode::Create {
        None
    } else {
        cur.find(at)
    };
    if mode == Mode::Update && existing.is_none() {
        return Err(not_found(format!("no store row with source {at:?}")));
    }
    if let Some(h) = if_match {
        let etag = existing.map(|e| e.etag.as_str());
        if !if_match_ok(h, etag) {
            return Err(etag_mismatch(h, etag));
        }
    }
    if let Some(other) = cur.find(&source) {
        let same = existing.is_some_and(|e| e.source() == other.source());
        if !same {
            return Err(conflict(
                "already_exists",
                format!(
                    "a virtual model with source {:?} already exists; PUT or PATCH it instead",
                    other.source()
                ),
            ));
        }
    }
    // The id and the creator are the row's own: kept across replaces and renames, whatever the
    // body says.
    spec.id = Some(match existing {
        Some(e) => e.spec.id.clone().unwrap_or_else(|| derived_id(e.source())),
        None => new_id(),
    });
    if let Some(e) = existing {
        spec.created_by = e.spec.created_by.clone();
    }
    let row = StoredRow {
        spec,
        created_at: existing.map_or(now, |e| e.created_at),
        updated_at: now,
        etag: new_etag(),
    };
    let mut changes = Vec::new();
    if let Some(e) = existing {
        if e.source() != source {
            changes.push(Change::Delete(e.source().to_string()));
        }
    }
    changes.push(Change::Upsert(Box::new(row.clone())));
    Ok(Decision {
        changes,
        row: Some(row),
        status: if existing.is_some() { 200 } else { 201 },
    })
}

/// Decides a partial update: merges `patch` into the stored entry, then writes it (a new
/// `source` renames).
pub fn decide_patch(
    cur: &Current<'_>,
    at: &str,
    mut patch: serde_json::Map<String, Value>,
    if_match: Option<&str>,
    by: Option<&str>,
    now: i64,
) -> Result<Decision, ApiError> {
    if let Some(loc) = cur.managed(at) {
        return Err(managed_by_config(at, &loc));
    }
    let existing = cur
        .find(at)
        .ok_or_else(|| not_found(format!("no store row with source {at:?}")))?;
    entry::strip_view_keys(&mut patch);
    let mut merged = serde_json::to_value(&existing.spec).map_err(|e| internal(e.to_string()))?;
    patch::merge(&mut merged, &Value::Object(patch));
    let Value::Object(m) = merged else {
        return Err(internal("the merged entry is not an object"));
    };
    let mut spec = entry::from_object(m)?;
    spec.updated_by = by.map(str::to_string);
    let at = existing.source().to_string();
    decide_write(cur, Some(&at), spec, if_match, Mode::Update, now)
}

/// Decides a delete. A store row hidden by a config entry of the same source may be deleted;
/// the config entry itself may not.
pub fn decide_delete(
    cur: &Current<'_>,
    at: &str,
    if_match: Option<&str>,
) -> Result<Decision, ApiError> {
    let existing = match cur.managed(at) {
        Some(loc) => cur
            .rows
            .iter()
            .find(|r| r.source() == at)
            .ok_or_else(|| managed_by_config(at, &loc))?,
        None => cur
            .find(at)
            .ok_or_else(|| not_found(format!("no store row with source {at:?}")))?,
    };
    if let Some(h) = if_match {
        if !if_match_ok(h, Some(&existing.etag)) {
            return Err(etag_mismatch(h, Some(&existing.etag)));
        }
    }
    Ok(Decision {
        changes: vec![Change::Delete(existing.source().to_string())],
        row: None,
        status: 204,
    })
}

/// The rows after `changes`.
pub fn apply_changes(rows: &[StoredRow], changes: &[Change]) -> Vec<StoredRow> {
    let mut out = rows.to_vec();
    for c in changes {
        match c {
            Change::Delete(s) => out.retain(|r| r.source() != s),
            Change::Upsert(row) => match out.iter_mut().find(|r| r.source() == row.source()) {
                Some(r) => *r = (**row).clone(),
                None => out.push((**row).clone()),
            },
        }
    }
    out
}

/// A 422 from snapshot validation; `param` names the field when the error is about the
/// written row.
pub fn validation_failed(errors: &[String], source: Option<&str>) -> ApiError {
    let param = source.and_then(|s| {
        let prefix = format!("{} (source {s:?}): ", Origin::Store.location());
        errors.iter().find_map(|e| {
            let rest = e.strip_prefix(&prefix)?;
            let field: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "_.[]".contains(*c))
                .collect();
            (!field.is_empty()).then_some(field)
        })
    });
    unprocessable("validation_failed", errors.join("\n"), param)
}

/// The answer for a store that failed: 503 `store_unavailable` while it is out of reach (the
/// gateway keeps serving its last snapshot), else 500. `doing` says what failed.
pub fn store_failed(e: &StoreError, doing: &str) -> ApiError {
    if e.is_unavailable() {
        ApiError::new(
            503,
            "service_unavailable",
            "store_unavailable",
            format!("{doing}: {e}; requests are served from the last loaded virtual models, and writes are refused until it is back"),
        )
    } else {
        internal(format!("{doing}: {e}"))
    }
}

/// Runs the write protocol around `decide`.
pub fn commit(
    app: &App,
    decide: impl FnOnce(&Current<'_>) -> Result<Decision, ApiError>,
) -> Result<Decision, ApiError> {
    let Some(store) = app.store.as_ref() else {
        return Err(ApiError::new(
            503,
            "service_unavailable",
            "store_unavailable",
            "no admin store is open",
        ));
    };
    let _guard = app.rebuild_lock.lock().unwrap_or_else(|p| p.into_inner());
    let snap = app.snapshot();
    let loaded = app.loaded();
    let mut decide = Some(decide);
    // What the decision inside the transaction came to: the write and its snapshot, or why not.
    let mut result: Option<Result<(Decision, Snapshot), ApiError>> = None;
    let revision = store
        .transact(&mut |rows| {
            let Some(decide) = decide.take() else {
                return Outcome::Abort;
            };
            let cur = Current {
                rows: rows.to_vec(),
                snap: &snap,
            };
            let decided = decide(&cur).and_then(|decision| {
                super::scope::check_changes(&decision.changes)?;
                let next = apply_changes(&cur.rows, &decision.changes);
                let specs: Vec<VirtualModelSpec> = next.into_iter().map(|r| r.spec).collect();
                let built = app.build_snapshot(&loaded, &specs).map_err(|errors| {
                    validation_failed(&errors, decision.row.as_ref().map(StoredRow::source))
                })?;
                Ok((decision, built))
            });
            let outcome = match &decided {
                Ok((d, _)) => Outcome::Commit(d.changes.clone()),
                Err(_) => Outcome::Abort,
            };
            result = Some(decided);
            outcome
        })
        .map_err(|e| store_failed(&e, "writing the store"))?;
    let (decision, built) = match result {
        Some(r) => r?,
        None => return Err(internal("the store ran no decision")),
    };
    let Some(revision) = revision else {
        return Err(internal(
            "the store rolled back a write it was told to commit",
        ));
    };
    app.install(loaded, built);
    store.health().applied(revision);
    if let Some(r) = &decision.row {
        log::info!(
            "admin: wrote virtual model {:?} to the store (revision {revision})",
            r.source()
        );
    } else if let Some(Change::Delete(s)) = decision.changes.first() {
        log::info!("admin: deleted virtual model {s:?} from the store (revision {revision})");
    }
    Ok(decision)
}

/// Everything but RFC 3986's unreserved characters is encoded (so `/` becomes `%2F`).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The answer to a successful write: the row's view with its etag.
fn written(app: &App, d: &Decision) -> Result<Response, ApiError> {
    let Some(row) = &d.row else {
        return Ok(Response::empty(204));
    };
    let rows = super::views::store_rows(app)?;
    let all = super::views::entries(&app.snapshot(), &rows);
    let view = all
        .iter()
        .find(|e| e.origin == Origin::Store && e.source == row.source())
        .map(super::views::Entry::to_json)
        .unwrap_or(Value::Null);
    let mut r = Response::json(d.status, &view).with_header("etag", format!("\"{}\"", row.etag));
    if d.status == 201 {
        r = r.with_header(
            "location",
            format!(
                "/admin/api/v1/virtual-models/{}",
                percent_encoding::utf8_percent_encode(row.source(), PATH_SEGMENT)
            ),
        );
    }
    Ok(r)
}

/// Records who writes an entry (`by`: the caller's user path): the creator on a new row (an
/// existing row keeps its own, see `decide_write`) and the last writer.
pub fn stamp(spec: &mut VirtualModelSpec, by: Option<&str>) {
    spec.created_by = by.map(str::to_string);
    spec.updated_by = by.map(str::to_string);
}

/// `POST /admin/api/v1/virtual-models`.
pub fn create(app: &App, body: &[u8], by: Option<&str>) -> Result<Response, ApiError> {
    let mut spec = entry::parse(body)?;
    if let Some(source) = spec.source.as_deref().filter(|s| !s.trim().is_empty()) {
        super::scope::check_addressed(source)?;
    }
    stamp(&mut spec, by);
    let d = commit(app, |cur| {
        decide_write(cur, None, spec, None, Mode::Create, now_s())
    })?;
    written(app, &d)
}

/// `PUT /admin/api/v1/virtual-models/{source}`.
pub fn put(
    app: &App,
    source: &str,
    body: &[u8],
    if_match: Option<&str>,
    by: Option<&str>,
) -> Result<Response, ApiError> {
    super::scope::check_addressed(source)?;
    let mut spec = entry::parse(body)?;
    stamp(&mut spec, by);
    match spec.source.as_deref() {
        None | Some("") => spec.source = Some(source.to_string()),
        Some(s) if s == source => {}
        Some(s) => {
            return Err(unprocessable(
                "source_mismatch",
                format!("source: the body names {s:?} but the path names {source:?}; PATCH the row with a new source to rename it"),
                Some("source".into()),
            ))
        }
    }
    let d = commit(app, |cur| {
        decide_write(cur, Some(source), spec, if_match, Mode::Upsert, now_s())
    })?;
    written(app, &d)
}

/// `PATCH /admin/api/v1/virtual-models/{source}`.
pub fn patch(
    app: &App,
    source: &str,
    body: &[u8],
    if_match: Option<&str>,
    by: Option<&str>,
) -> Result<Response, ApiError> {
    super::scope::check_addressed(source)?;
    let patch = entry::object(body)?;
    let d = commit(app, |cur| {
        decide_patch(cur, source, patch, if_match, by, now_s())
    })?;
    written(app, &d)
}

/// `DELETE /admin/api/v1/virtual-models/{source}`.
pub fn delete(app: &App, source: &str, if_match: Option<&str>) -> Result<Response, ApiError> {
    super::scope::check_addressed(source)?;
    commit(app, |cur| decide_delete(cur, source, if_match))?;
    Ok(Response::empty(204))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::StateRegistry;
    use crate::config::env::Env;

    fn snapshot() -> Snapshot {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "providers:\n  p:\n    type: mock\n    models: [m1, m2]\nvirtual_models:\n  - source: cfg\n    target: p/m1\n",
        )
        .unwrap();
        let loaded = crate::config::load(Some(&path), &Env::default()).unwrap();
        Snapshot::build(&loaded, &[], None, &StateRegistry::default()).unwrap()
    }

    fn row(source: &str, etag: &str) -> StoredRow {
        StoredRow {
            spec: serde_json::from_value(serde_json::json!({"source": source, "target": "p/m1"}))
                .unwrap(),
            created_at: 10,
            updated_at: 20,
            etag: etag.into(),
        }
    }

    fn spec(source: &str) -> VirtualModelSpec {
        serde_json::from_value(serde_json::json!({"source": source, "target": "p/m2"})).unwrap()
    }

    #[test]
    fn if_match_accepts_quoted_weak_lists_and_star() {
        assert!(if_match_ok("\"abc\"", Some("abc")));
        assert!(if_match_ok("W/\"abc\"", Some("abc")));
        assert!(if_match_ok("\"x\", \"abc\"", Some("abc")));
        assert!(if_match_ok("*", Some("abc")));
        assert!(!if_match_ok("*", None));
        assert!(!if_match_ok("\"abd\"", Some("abc")));
    }

    #[test]
    fn upsert_replaces_keeping_created_at_and_rename_deletes_the_old_row() {
        let snap = snapshot();
        let cur = Current {
            rows: vec![row("a", "e1")],
            snap: &snap,
        };
        let d = decide_write(&cur, Some("a"), spec("a"), Some("\"e1\""), Mode::Upsert, 99).unwrap();
        assert_eq!(d.status, 200);
        let r = d.row.unwrap();
        assert_eq!((r.created_at, r.updated_at), (10, 99));
        assert_ne!(r.etag, "e1");
        let d = decide_write(&cur, Some("a"), spec("b"), None, Mode::Update, 99).unwrap();
        assert!(matches!(&d.changes[0], Change::Delete(s) if s == "a"));
        assert_eq!(apply_changes(&cur.rows, &d.changes)[0].source(), "b");
    }

    #[test]
    fn conflicts_and_missing_rows() {
        let snap = snapshot();
        let cur = Current {
            rows: vec![row("a", "e1"), row("b", "e2")],
            snap: &snap,
        };
        let e = decide_write(&cur, None, spec("A"), None, Mode::Create, 1).unwrap_err();
        assert_eq!((e.status, e.code), (409, "already_exists"));
        let e = decide_write(&cur, Some("a"), spec("b"), None, Mode::Update, 1).unwrap_err();
        assert_eq!(e.code, "already_exists");
        let e = decide_write(&cur, Some("zz"), spec("zz"), None, Mode::Update, 1).unwrap_err();
        assert_eq!(e.status, 404);
        let e =
            decide_write(&cur, Some("a"), spec("a"), Some("\"old\""), Mode::Upsert, 1).unwrap_err();
        assert_eq!(e.code, "etag_mismatch");
        let e = decide_write(&cur, None, spec("cfg"), None, Mode::Create, 1).unwrap_err();
        assert_eq!(e.code, "managed_by_config");
        assert!(
            e.message.contains("c.yaml: virtual_models[0]"),
            "{}",
            e.message
        );
        let e = decide_delete(&cur, "cfg", None).unwrap_err();
        assert_eq!(e.code, "managed_by_config");
    }

    #[test]
    fn patch_merges_into_the_stored_entry() {
        let snap = snapshot();
        let mut a = row("a", "e1");
        a.spec.description = Some("keep me".into());
        let cur = Current {
            rows: vec![a],
            snap: &snap,
        };
        let patch = serde_json::json!({"user_paths": ["/t"], "etag": "ignored"});
        let d = decide_patch(&cur, "a", patch.as_object().unwrap().clone(), None, None, 5).unwrap();
        let r = d.row.unwrap();
        assert_eq!(r.spec.description.as_deref(), Some("keep me"));
        assert_eq!(r.spec.user_paths, Some(vec!["/t".to_string()]));
        let bad = serde_json::json!({"target": {"weight": "x"}});
        let e =
            decide_patch(&cur, "a", bad.as_object().unwrap().clone(), None, None, 5).unwrap_err();
        assert_eq!(e.status, 422);
    }

    #[test]
    fn validation_param_names_the_written_rows_field_only() {
        let errs = vec![
            "config.yaml: virtual_models[0] (source \"x\"): target.model is blank".to_string(),
            "store (source \"s\"): targets[1].weight -1 must be a finite number >= 0".to_string(),
        ];
        assert_eq!(
            validation_failed(&errs, Some("s")).param.as_deref(),
            Some("targets[1].weight")
        );
        assert_eq!(validation_failed(&errs, Some("x")).param, None);
    }
}
