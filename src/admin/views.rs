//! Read side of the admin API: the merged view of every virtual model (config, env and store
//! rows, store rows hidden by config included), one entry, the status document and the model
//! catalog the dashboard shows.
//!
//! Views are computed from the live snapshot plus the store's rows; nothing here writes.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::{not_found, rfc3339};
use crate::api_error::ApiError;
use crate::app::App;
use crate::config::schema::VirtualModelSpec;
use crate::config::validate::{self, Merged};
use crate::routing::model::{Kind, Origin, Target, VirtualModel};
use crate::routing::plan::Availability;
use crate::snapshot::Snapshot;
use crate::store::StoredRow;

/// One target of an entry, with whether the gateway can serve it now.
#[derive(Debug, Clone)]
pub struct TargetStatus {
    pub name: String,
    pub provider: Option<String>,
    pub model: String,
    pub weight: f64,
    pub available: bool,
}

/// One row of the merged view.
#[derive(Debug, Clone)]
pub struct Entry {
    pub spec: VirtualModelSpec,
    pub source: String,
    pub origin: Origin,
    pub kind: Kind,
    /// Whether requests use this entry now (false for a store row hidden by config).
    pub live: bool,
    /// Where the declaration hiding this store row lives.
    pub overridden_by: Option<String>,
    pub valid: bool,
    pub error: Option<String>,
    pub targets: Vec<TargetStatus>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
    pub etag: String,
}

impl Entry {
    pub fn managed(&self) -> bool {
        self.origin != Origin::Store
    }

    /// The REST view: the entry's own fields plus what the gateway knows about it.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.spec).unwrap_or_else(|_| json!({}));
        if let Value::Object(m) = &mut v {
            m.insert("source".into(), json!(self.source));
            m.insert("origin".into(), json!(self.origin.label()));
            m.insert("managed".into(), json!(self.managed()));
            m.insert("location".into(), json!(self.origin.location()));
            m.insert("kind".into(), json!(self.kind.label()));
            m.insert("valid".into(), json!(self.valid));
            m.insert("overridden".into(), json!(self.overridden_by.is_some()));
            if let Some(by) = &self.overridden_by {
                m.insert("overridden_by".into(), json!(by));
            }
            if let Some(e) = &self.error {
                m.insert("error".into(), json!(e));
            }
            m.insert(
                "targets_status".into(),
                Value::Array(
                    self.targets
                        .iter()
                        .map(|t| {
                            json!({"name": t.name, "weight": t.weight, "available": t.available})
                        })
                        .collect(),
                ),
            );
            m.insert("etag".into(), json!(self.etag));
            m.insert(
                "created_at".into(),
                self.created_at.map_or(Value::Null, rfc3339),
            );
            m.insert(
                "updated_at".into(),
                self.updated_at.map_or(Value::Null, rfc3339),
            );
        }
        v
    }
}

fn available(snap: &Snapshot, t: &Target) -> bool {
    let provider = t.provider.or_else(|| snap.locate(&t.model));
    provider.is_some_and(|p| snap.availability(p, &t.model) == Availability::Available)
}

fn target_statuses(snap: &Snapshot, vm: &VirtualModel) -> Vec<TargetStatus> {
    vm.targets
        .iter()
        .map(|t| TargetStatus {
            name: t.name.to_string(),
            provider: t.provider.map(|p| snap.table.providers[p].clone()),
            model: t.model.to_string(),
            weight: t.weight,
            available: available(snap, t),
        })
        .collect()
}

/// A stable etag for a declaration the store does not track (config and env rows).
fn declared_etag(origin: &Origin, spec: &VirtualModelSpec) -> String {
    // FNV-1a: stable across processes, unlike std's randomly seeded hasher.
    let text = format!(
        "{}\u{0}{}",
        origin.location(),
        serde_json::to_string(spec).unwrap_or_default()
    );
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("c{h:016x}")
}

/// Validates a store row that is not live (hidden by config) on its own, to tell whether it
/// would work if it came back.
fn check_hidden(
    snap: &Snapshot,
    spec: &VirtualModelSpec,
) -> (Kind, Vec<TargetStatus>, bool, Option<String>) {
    let redirects: foldhash::HashSet<&str> = snap
        .table
        .models
        .iter()
        .filter(|m| m.kind == Kind::Redirect)
        .map(|m| m.source.as_str())
        .collect();
    let merged = Merged {
        origin: Origin::Store,
        spec,
        shared: None,
        overrides_store: false,
    };
    let mut warnings = Vec::new();
    match validate::build_one(
        &merged,
        &snap.table.providers,
        &validate::RetryDefaults::default(),
        &redirects,
        None,
        &mut warnings,
    ) {
        Ok(vm) => {
            let targets = target_statuses(snap, &vm);
            let valid = vm.kind == Kind::Policy || targets.iter().any(|t| t.available);
            (vm.kind, targets, valid, None)
        }
        Err(e) => {
            let kind = if crate::store::columns::spec_targets(spec).is_empty() {
                Kind::Policy
            } else {
                Kind::Redirect
            };
            (kind, Vec::new(), false, Some(e))
        }
    }
}

/// The merged view: live entries in precedence order (config, env, store), then store rows
/// that are not live.
pub fn entries(snap: &Snapshot, rows: &[StoredRow]) -> Vec<Entry> {
    let by_source: HashMap<&str, &StoredRow> = rows.iter().map(|r| (r.source(), r)).collect();
    let mut out = Vec::with_capacity(snap.table.models.len() + rows.len());
    let mut shown: HashSet<&str> = HashSet::new();
    for vm in &snap.table.models {
        let targets = target_statuses(snap, vm);
        let valid = vm.kind == Kind::Policy || targets.iter().any(|t| t.available);
        let mut e = Entry {
            spec: VirtualModelSpec::clone(&vm.spec),
            source: vm.source.to_string(),
            origin: vm.origin.clone(),
            kind: vm.kind,
            live: true,
            overridden_by: None,
            valid,
            error: None,
            targets,
            // The store does not track config and env rows.
            created_at: None,
            updated_at: None,
            etag: declared_etag(&vm.origin, &vm.spec),
        };
        if vm.origin == Origin::Store {
            if let Some(r) = by_source.get(vm.source.as_str()) {
                shown.insert(r.source());
                e.spec = r.spec.clone();
                e.created_at = Some(r.created_at);
                e.updated_at = Some(r.updated_at);
                e.etag = r.etag.clone();
            }
        }
        out.push(e);
    }
    let locations: HashMap<&str, String> = snap
        .table
        .models
        .iter()
        .filter(|m| m.origin != Origin::Store)
        .map(|m| (m.source.as_str(), m.origin.location()))
        .collect();
    for r in rows {
        if shown.contains(r.source()) {
            continue;
        }
        let (kind, targets, valid, error) = check_hidden(snap, &r.spec);
        let overridden_by = locations.get(r.source()).cloned();
        let error = match (&overridden_by, error) {
            (_, Some(e)) => Some(e),
            (Some(_), None) => None,
            // Written to the file by something else since the last snapshot.
            (None, None) => Some(
                "not loaded yet: the store changed outside this gateway; reload to apply it"
                    .to_string(),
            ),
        };
        out.push(Entry {
            spec: r.spec.clone(),
            source: r.source().to_string(),
            origin: Origin::Store,
            kind,
            live: false,
            overridden_by,
            valid,
            error,
            targets,
            created_at: Some(r.created_at),
            updated_at: Some(r.updated_at),
            etag: r.etag.clone(),
        });
    }
    out
}

/// The store's rows, or none without a store.
pub fn store_rows(app: &App) -> Result<Vec<StoredRow>, ApiError> {
    match &app.store {
        None => Ok(Vec::new()),
        Some(s) => s
            .list()
            .map_err(|e| super::writes::store_failed(&e, "reading the store")),
    }
}

pub fn list(app: &App) -> Result<Vec<Value>, ApiError> {
    let rows = store_rows(app)?;
    Ok(entries(&app.snapshot(), &rows)
        .iter()
        .map(Entry::to_json)
        .collect())
}

/// The live entry for `source` (exact, then case-insensitive), else a hidden store row.
pub fn find<'a>(entries: &'a [Entry], source: &str) -> Option<&'a Entry> {
    let lower = source.to_lowercase();
    entries
        .iter()
        .filter(|e| e.live)
        .find(|e| e.source == source)
        .or_else(|| entries.iter().find(|e| e.source == source))
        .or_else(|| entries.iter().find(|e| e.source.to_lowercase() == lower))
}

pub fn one(app: &App, source: &str) -> Result<super::Response, ApiError> {
    let rows = store_rows(app)?;
    let all = entries(&app.snapshot(), &rows);
    let e = find(&all, source)
        .ok_or_else(|| not_found(format!("no virtual model with source {source:?}")))?;
    Ok(super::Response::json(200, &e.to_json()).with_header("etag", format!("\"{}\"", e.etag)))
}

/// `GET /admin/api/v1/status`.
pub fn status(app: &App) -> Value {
    let snap = app.snapshot();
    let reload = app.reload_status.load();
    let ms = |ms: u64| rfc3339((ms / 1000) as i64);
    json!({
        "config_path": app.source.path.as_ref().map(|p| p.display().to_string()),
        "loaded_at": ms(snap.loaded_at_ms),
        "last_reload": {
            "at": reload.at_ms.map_or(Value::Null, ms),
            "ok": reload.ok,
            "error": reload.error,
        },
        "virtual_models": snap.origin_counts(),
        "store": match &app.store {
            Some(s) => {
                let h = s.health().state();
                let mut v = json!({
                    "type": s.kind(),
                    "revision": h.revision,
                    "connected": h.connected,
                    "last_error": h.last_error,
                });
                v[s.location_field()] = json!(s.location());
                v
            }
            None => json!({"type": "none", "path": null}),
        },
        "master_key": snap.settings.master_key.is_some(),
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// `GET /admin/api/v1/models`: every concrete model the providers serve now, with its access
/// state for callers in general.
pub fn models(snap: &Snapshot) -> Value {
    let mut data = Vec::new();
    let providers: Vec<Value> = snap
        .providers
        .iter()
        .enumerate()
        .map(|(pi, p)| {
            for m in snap.models_of(pi) {
                let (access, policy) = access_state(snap, &p.config.name, &m);
                // USD per million tokens, for the playground's cost estimate.
                let pricing = crate::catalog::price(&p.config, &m).map(|pr| {
                    json!({"input_per_mtok": pr.input_per_mtok, "output_per_mtok": pr.output_per_mtok})
                });
                data.push(json!({
                    "id": format!("{}/{m}", p.config.name),
                    "provider": p.config.name,
                    "provider_type": p.config.kind.name(),
                    "model": m,
                    "available": snap.availability(pi, &m) == Availability::Available,
                    "access": access,
                    "policy": policy,
                    "pricing": pricing,
                }));
            }
            json!({
                "name": p.config.name,
                "type": p.config.kind.name(),
                "usable": p.config.usable(),
            })
        })
        .collect();
    json!({"object": "list", "providers": providers, "data": data})
}

/// `enabled`, `restricted` (only some user paths) or `disabled`, and the deciding policy.
fn access_state(snap: &Snapshot, provider: &str, model: &str) -> (&'static str, Option<String>) {
    match snap.table.policy_for(provider, model) {
        None if snap.table.models_enabled_by_default => ("enabled", None),
        None => ("disabled", None),
        Some(i) => {
            let p = &snap.table.models[i];
            let state = if !p.enabled {
                "disabled"
            } else if p
                .user_paths
                .as_ref()
                .is_some_and(|l| !l.iter().any(|u| u.is_root()))
            {
                "restricted"
            } else {
                "enabled"
            };
            (state, Some(p.source.to_string()))
        }
    }
}
