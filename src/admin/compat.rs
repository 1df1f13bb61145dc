//! GoModel's admin routes, so GoModel's dashboard and scripts work unchanged:
//! `GET /admin/virtual-models` (an array of GoModel views), `PUT /admin/virtual-models`
//! (`{source, old_source?, target_model? | targets?, strategy?, session_affinity?, failover?,
//! user_paths?, description?, enabled?}`: create, replace or rename) and
//! `DELETE /admin/virtual-models` (`{source}`).
//!
//! Codes follow GoModel: 200 with the view, 204 on delete, 400 for validation errors and
//! managed (config/env) rows, 404 for a missing row. Deliberate difference: renaming a missing
//! `old_source` is 404 (GoModel answers 502). Writes go through the same protocol as the REST
//! routes (`writes::commit`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::scope;
use super::views::{self, Entry};
use super::writes::{self, Mode};
use super::{entry, rfc3339, Response};
use crate::api_error::ApiError;
use crate::app::App;
use crate::config::schema::{TargetSpec, VirtualModelSpec};
use crate::routing::model::Kind;
use crate::store::columns;
use crate::store::now_s;

/// GoModel's upsert body. Unknown keys are ignored, as GoModel does.
#[derive(Debug, Default, Deserialize)]
struct Upsert {
    #[serde(default)]
    source: String,
    #[serde(default)]
    old_source: String,
    #[serde(default)]
    target_model: String,
    #[serde(default)]
    targets: Vec<Target>,
    #[serde(default)]
    strategy: String,
    session_affinity: Option<bool>,
    failover: Option<bool>,
    #[serde(default)]
    user_paths: Option<Vec<String>>,
    #[serde(default)]
    description: String,
    enabled: Option<bool>,
}

/// A target in GoModel's bodies and views. An absent weight is 1; an explicit 0 makes the
/// target a fallback only, and a negative one is a validation error (400), as everywhere in
/// modelgate (README, "Deliberate differences from GoModel").
#[derive(Debug, Default, Deserialize, Serialize)]
struct Target {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    provider: String,
    #[serde(default)]
    model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weight: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct Delete {
    #[serde(default)]
    source: String,
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::invalid_request("invalid_request", message)
}

/// GoModel reports validation problems and managed rows as 400.
fn as_gomodel(mut e: ApiError) -> ApiError {
    if e.status == 409 || e.status == 422 {
        e.status = 400;
    }
    e
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    let m = entry::object(body)?;
    serde_json::from_value(Value::Object(m))
        .map_err(|e| bad_request(format!("invalid request body: {e}")))
}

/// The entry a GoModel upsert describes. What GoModel's body cannot express (slug,
/// model_types, sticky routing, per-target retry and headers) is kept from the existing row.
fn to_spec(u: &Upsert, existing: Option<&VirtualModelSpec>) -> Result<VirtualModelSpec, ApiError> {
    let old_targets: Vec<&TargetSpec> = existing.map(columns::spec_targets).unwrap_or_default();
    let keep = |provider: &Option<String>, model: &str| -> TargetSpec {
        old_targets
            .iter()
            .find(|t| &t.provider == provider && t.model.as_deref() == Some(model))
            .map(|t| (*t).clone())
            .unwrap_or_default()
    };
    let mut targets: Vec<TargetSpec> = Vec::new();
    if !u.targets.is_empty() {
        for t in &u.targets {
            let model = t.model.trim();
            if model.is_empty() {
                continue;
            }
            let provider = Some(t.provider.trim().to_string()).filter(|p| !p.is_empty());
            targets.push(TargetSpec {
                weight: t.weight,
                ..TargetSpec {
                    provider: provider.clone(),
                    model: Some(model.to_string()),
                    ..keep(&provider, model)
                }
            });
        }
        if targets.is_empty() {
            return Err(bad_request("targets must contain at least one model"));
        }
    } else if !u.target_model.trim().is_empty() {
        let model = u.target_model.trim();
        targets.push(TargetSpec {
            model: Some(model.to_string()),
            ..keep(&None, model)
        });
    }
    if u.failover == Some(false) {
        // GoModel's failover=false serves the chosen target only.
        for t in targets.iter_mut() {
            t.fallback_candidate = Some(false);
        }
    }
    let enabled = u
        .enabled
        .or(existing.and_then(|e| e.enabled))
        .filter(|e| !e);
    let single = targets.len() == 1 && u.targets.is_empty();
    Ok(VirtualModelSpec {
        source: Some(u.source.trim().to_string()),
        target: if single {
            targets.first().cloned().map(Box::new)
        } else {
            None
        },
        targets: if single || targets.is_empty() {
            None
        } else {
            Some(targets)
        },
        strategy: columns::strategy_from_gomodel(&u.strategy),
        session_affinity: u
            .session_affinity
            .map(|on| Box::new(crate::config::schema::SessionAffinitySpec::Enabled(on))),
        // GoModel's empty list means "everyone"; ours would mean "no one".
        user_paths: u.user_paths.clone().filter(|p| !p.is_empty()),
        description: Some(u.description.trim().to_string()).filter(|d| !d.is_empty()),
        enabled,
        slug: existing.and_then(|e| e.slug.clone()),
        model_types: existing.and_then(|e| e.model_types.clone()),
        sticky_routing: existing.and_then(|e| e.sticky_routing.clone()),
        hedge: existing.and_then(|e| e.hedge.clone()),
        steer: existing.and_then(|e| e.steer.clone()),
        routing_config: None,
        // GoModel's body has no NeMo fields: the existing row keeps them.
        id: existing.and_then(|e| e.id.clone()),
        project: existing.and_then(|e| e.project.clone()),
        autoprovisioned: existing.and_then(|e| e.autoprovisioned),
        // GoModel's targets are written whole: the first one is NeMo's default again.
        no_default_model: None,
        created_by: existing.and_then(|e| e.created_by.clone()),
        updated_by: existing.and_then(|e| e.updated_by.clone()),
        request_middleware: existing.and_then(|e| e.request_middleware.clone()),
        response_middleware: existing.and_then(|e| e.response_middleware.clone()),
        post_response_middleware: existing.and_then(|e| e.post_response_middleware.clone()),
    })
}

/// One entry as GoModel's admin view.
pub fn gomodel_view(e: &Entry, snap: &crate::snapshot::Snapshot) -> Value {
    let mut m = Map::new();
    m.insert("source".into(), json!(e.source));
    m.insert("kind".into(), json!(e.kind.label()));
    let targets: Vec<Target> = columns::spec_targets(&e.spec)
        .into_iter()
        .map(|t| Target {
            provider: t.provider.clone().unwrap_or_default(),
            model: t.model.clone().unwrap_or_default(),
            weight: t.weight,
        })
        .collect();
    if !targets.is_empty() {
        m.insert("targets".into(), json!(targets));
    }
    let c = columns::from_spec(&e.spec);
    if !c.strategy.is_empty() {
        m.insert("strategy".into(), json!(c.strategy));
    }
    if let Some(a) = &e.spec.session_affinity {
        m.insert("session_affinity".into(), json!(a.enabled()));
    }
    if e.kind == Kind::Policy {
        if !c.provider_name.is_empty() {
            m.insert("provider_name".into(), json!(c.provider_name));
        }
        if !c.model.is_empty() {
            m.insert("model".into(), json!(c.model));
        }
        let scope = match e.source.as_str() {
            "/" | "*" => "global",
            s if s.ends_with('/') => "provider",
            _ => "model",
        };
        m.insert("scope_kind".into(), json!(scope));
    }
    if let Some(p) = e.spec.user_paths.as_ref().filter(|p| !p.is_empty()) {
        m.insert("user_paths".into(), json!(p));
    }
    if let Some(d) = e.spec.description.as_ref().filter(|d| !d.is_empty()) {
        m.insert("description".into(), json!(d));
    }
    m.insert("enabled".into(), json!(e.spec.enabled.unwrap_or(true)));
    if e.managed() {
        m.insert("managed".into(), json!(true));
    }
    if let Some(t) = e.targets.iter().find(|t| t.available) {
        m.insert("resolved_model".into(), json!(t.name));
        let ptype = t
            .provider
            .as_deref()
            .and_then(|p| snap.table.provider(p))
            .map(|i| snap.providers[i].config.kind.name());
        if let Some(pt) = ptype {
            m.insert("provider_type".into(), json!(pt));
        }
    }
    if e.valid {
        m.insert("valid".into(), json!(true));
    }
    // Go's zero time, which GoModel shows for rows the store did not write.
    let zero = json!("0001-01-01T00:00:00Z");
    m.insert(
        "created_at".into(),
        e.created_at.map_or(zero.clone(), rfc3339),
    );
    m.insert("updated_at".into(), e.updated_at.map_or(zero, rfc3339));
    Value::Object(m)
}

/// `GET /admin/virtual-models`: the live entries (a hidden store row is not listed, as in
/// GoModel, where the managed row replaces it).
pub fn list(app: &App) -> Response {
    let rows = match views::store_rows(app) {
        Ok(r) => r,
        Err(e) => return Response::error(&e),
    };
    let snap = app.snapshot();
    let all = views::entries(&snap, &rows);
    let out: Vec<Value> = all
        .iter()
        .filter(|e| e.live)
        .map(|e| gomodel_view(e, &snap))
        .collect();
    Response::json(200, &Value::Array(out))
}

/// `PUT /admin/virtual-models`.
pub fn upsert(app: &App, body: &[u8]) -> Result<Response, ApiError> {
    let u: Upsert = parse(body)?;
    let source = u.source.trim().to_string();
    if source.is_empty() {
        return Err(bad_request("source is required"));
    }
    let old = u.old_source.trim().to_string();
    let renaming = !old.is_empty() && old != source;
    scope::check_addressed(&source)?;
    if renaming {
        scope::check_addressed(&old)?;
    }
    let at = if renaming { old } else { source.clone() };
    let d = writes::commit(app, |cur| {
        let existing = cur.find(&at).map(|r| r.spec.clone());
        let spec = to_spec(&u, existing.as_ref())?;
        let mode = if renaming { Mode::Update } else { Mode::Upsert };
        writes::decide_write(cur, Some(&at), spec, None, mode, now_s())
    })
    .map_err(as_gomodel)?;
    let rows = views::store_rows(app)?;
    let snap = app.snapshot();
    let all = views::entries(&snap, &rows);
    let written = d
        .row
        .as_ref()
        .map(|r| r.source().to_string())
        .unwrap_or(source);
    match all.iter().find(|e| e.live && e.source == written) {
        Some(e) => Ok(Response::json(200, &gomodel_view(e, &snap))),
        None => Ok(Response::empty(204)),
    }
}

/// `DELETE /admin/virtual-models`.
pub fn delete(app: &App, body: &[u8]) -> Result<Response, ApiError> {
    let d: Delete = parse(body)?;
    let source = d.source.trim().to_string();
    if source.is_empty() {
        return Err(bad_request("source is required"));
    }
    scope::check_addressed(&source)?;
    writes::commit(app, |cur| writes::decide_delete(cur, &source, None)).map_err(as_gomodel)?;
    Ok(Response::empty(204))
}
