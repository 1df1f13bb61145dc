//! The NeMo view of virtual models: each live entry whose source is `workspace/name`, and each
//! concrete model that no entry shadows as an autoprovisioned passthrough; one VirtualModel as
//! NeMo's JSON. Reads only.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::one_workspace;
use crate::admin::views::{self, Entry};
use crate::admin::{not_found, rfc3339, Response};
use crate::app::App;
use crate::config::schema::{TargetSpec, VirtualModelSpec};
use crate::middleware::call::MiddlewareCall;
use crate::proxy::respond::ApiError;
use crate::routing::model::WireFormat;
use crate::snapshot::Snapshot;
use crate::store::columns::spec_targets;
use crate::store::derived_id;

/// NeMo's name for a wire format.
pub(super) fn format_name(f: WireFormat) -> &'static str {
    match f {
        WireFormat::OpenAiChat => "OPENAI_CHAT",
        WireFormat::AnthropicMessages => "ANTHROPIC_MESSAGES",
    }
}

/// One VirtualModel as NeMo shows it.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub(super) workspace: String,
    pub(super) name: String,
    pub(super) source: String,
    pub(super) spec: VirtualModelSpec,
    /// `(model, backend_format)` of every target, in declared order.
    pub(super) models: Vec<(String, Option<String>)>,
    /// A provider's concrete model shown as a passthrough (not an entry of any origin).
    pub(super) passthrough: bool,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) etag: String,
}

/// A target's model as `provider/model` when the provider is written apart.
pub(super) fn target_model(t: &TargetSpec) -> String {
    let model = t.model.as_deref().unwrap_or("").trim();
    match t.provider.as_deref().map(str::trim) {
        Some(p) if !p.is_empty() && !model.starts_with(&format!("{p}/")) => format!("{p}/{model}"),
        _ => model.to_string(),
    }
}

pub(super) fn target_format(t: &TargetSpec) -> Option<String> {
    t.backend_format
        .as_deref()
        .map(|f| match WireFormat::parse(f) {
            Some(w) => format_name(w).to_string(),
            None => f.to_string(),
        })
}

impl Item {
    fn of_entry(e: &Entry, workspace: &str, name: &str, loaded_s: i64) -> Item {
        Item {
            workspace: workspace.to_string(),
            name: name.to_string(),
            source: e.source.clone(),
            models: spec_targets(&e.spec)
                .into_iter()
                .map(|t| (target_model(t), target_format(t)))
                .collect(),
            spec: e.spec.clone(),
            passthrough: false,
            created_at: e.created_at.unwrap_or(loaded_s),
            updated_at: e.updated_at.unwrap_or(loaded_s),
            etag: e.etag.clone(),
        }
    }

    pub(super) fn autoprovisioned(&self) -> bool {
        self.passthrough || self.spec.autoprovisioned == Some(true)
    }

    /// NeMo's `default_model_entity`: the first target, unless the entry has none.
    pub(super) fn default_model(&self) -> Option<&str> {
        if self.spec.no_default_model == Some(true) {
            return None;
        }
        self.models.first().map(|(m, _)| m.as_str())
    }

    /// The stable id: assigned at creation, else derived from the source.
    pub(super) fn id(&self) -> std::borrow::Cow<'_, str> {
        match &self.spec.id {
            Some(id) => id.as_str().into(),
            None => derived_id(&self.source).into(),
        }
    }

    pub(super) fn to_json(&self) -> Value {
        let id = self.id();
        let list = |l: &Option<Box<[MiddlewareCall]>>| json!(l.as_deref().unwrap_or(&[]));
        json!({
            "id": id,
            "entity_id": id,
            "name": self.name,
            "workspace": self.workspace,
            "parent": self.workspace,
            "project": self.spec.project,
            "created_at": rfc3339(self.created_at),
            "created_by": self.spec.created_by,
            "updated_at": rfc3339(self.updated_at),
            "updated_by": self.spec.updated_by,
            "default_model_entity": self.default_model(),
            "models": self.models.iter()
                .map(|(model, format)| json!({"model": model, "backend_format": format}))
                .collect::<Vec<_>>(),
            "autoprovisioned": self.autoprovisioned(),
            "request_middleware": list(&self.spec.request_middleware),
            "response_middleware": list(&self.spec.response_middleware),
            "post_response_middleware": list(&self.spec.post_response_middleware),
            "override_proxy": Value::Null,
        })
    }
}

/// Every VirtualModel: the live entries whose source is `workspace/name`, then each concrete
/// model that no entry shadows, as an autoprovisioned passthrough.
fn items(snap: &Snapshot, rows: &[crate::store::StoredRow]) -> Vec<Item> {
    let loaded_s = (snap.loaded_at_ms / 1000) as i64;
    let mut out = Vec::new();
    let mut taken: HashSet<String> = HashSet::new();
    for e in views::entries(snap, rows).iter().filter(|e| e.live) {
        let Some((ws, name)) = e.source.split_once('/') else {
            continue;
        };
        if ws.is_empty() || name.is_empty() {
            continue;
        }
        taken.insert(e.source.to_lowercase());
        out.push(Item::of_entry(e, ws, name, loaded_s));
    }
    for (pi, p) in snap.providers.iter().enumerate() {
        let format = format_name(p.config.kind.wire_format());
        for m in snap.models_of(pi) {
            let source = format!("{}/{m}", p.config.name);
            if taken.contains(&source.to_lowercase()) {
                continue;
            }
            out.push(Item {
                workspace: p.config.name.clone(),
                name: m.clone(),
                etag: format!("p{}", &derived_id(&source)[..8]),
                models: vec![(source.clone(), Some(format.to_string()))],
                source,
                spec: VirtualModelSpec::default(),
                passthrough: true,
                created_at: loaded_s,
                updated_at: loaded_s,
            });
        }
    }
    out
}

/// The item for `source`: exact, else case-insensitive (sources are unique that way).
pub(super) fn find<'a>(items: &'a [Item], source: &str) -> Option<&'a Item> {
    let lower = source.to_lowercase();
    items
        .iter()
        .find(|i| i.source == source)
        .or_else(|| items.iter().find(|i| i.source.to_lowercase() == lower))
}

pub(super) fn current_items(app: &App) -> Result<Vec<Item>, ApiError> {
    let rows = views::store_rows(app)?;
    Ok(items(&app.snapshot(), &rows))
}
/// `GET .../virtual-models/{name}`.
pub(super) fn get(app: &App, workspace: &str, name: &str) -> Result<Response, ApiError> {
    let workspace = one_workspace(workspace)?;
    let all = current_items(app)?;
    let item = find(&all, &format!("{workspace}/{name}")).ok_or_else(|| {
        not_found(format!(
            "no virtual model {name:?} in workspace {workspace:?}"
        ))
    })?;
    Ok(Response::json(200, &item.to_json()).with_header("etag", format!("\"{}\"", item.etag)))
}
