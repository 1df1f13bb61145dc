//! NVIDIA NeMo Inference Gateway's workspace VirtualModel API, as a view of the same store as
//! the REST and GoModel routes: `GET|POST /apis/inference-gateway/v2/workspaces/{workspace}/
//! virtual-models` and `GET|PATCH|DELETE .../virtual-models/{name}`, with NeMo's bodies, fields
//! and codes.
//!
//! The NeMo VirtualModel `{workspace}/{name}` is the virtual model whose source is
//! `workspace/name`; `default_model_entity` is its first target and `models` all of them. Every
//! concrete model of a provider shows as an autoprovisioned passthrough in the workspace named
//! after the provider. Writes go through `writes::commit` like every other admin write; this
//! module only translates NeMo's shapes to entries and back, and never touches Pingora.

use std::cmp::Ordering;
use std::collections::HashSet;

use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

use super::views::{self, Entry};
use super::writes::{self, Current, Mode};
use super::{conflict, entry, internal, not_found, rfc3339, unprocessable, Request, Response};
use crate::app::App;
use crate::config::schema::{TargetSpec, VirtualModelSpec};
use crate::middleware::call::MiddlewareCall;
use crate::proxy::respond::ApiError;
use crate::routing::model::{Strategy, WireFormat};
use crate::snapshot::Snapshot;
use crate::store::columns::spec_targets;
use crate::store::{derived_id, now_s};

const WORKSPACES: &str = "/apis/inference-gateway/v2/workspaces/";
/// The workspace that stands for all of them in a list.
const ALL_WORKSPACES: &str = "-";
const DEFAULT_PAGE_SIZE: usize = 20;
const MAX_PAGE_SIZE: usize = 200;
const DEFAULT_SORT: &str = "-created_at";
const SORT_FIELDS: [&str; 4] = ["created_at", "updated_at", "name", "workspace"];

/// A NeMo route, parsed from the path.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `.../workspaces/{workspace}/virtual-models`
    Collection { workspace: String },
    /// `.../workspaces/{workspace}/virtual-models/{name}` (the name may hold slashes).
    Item { workspace: String, name: String },
}

/// The raw workspace segment and name of a NeMo VirtualModel path.
fn split(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix(WORKSPACES)?;
    let (workspace, rest) = rest.split_once('/')?;
    match rest.strip_prefix("virtual-models")? {
        "" | "/" => Some((workspace, None)),
        r => r.strip_prefix('/').map(|name| (workspace, Some(name))),
    }
}

/// Whether a path belongs to this API (it is then an admin path).
pub fn is_api_path(path: &str) -> bool {
    split(path).is_some()
}

fn decode(field: &str, raw: &str) -> Result<String, ApiError> {
    let bad = |why: &str| {
        unprocessable(
            "invalid_path",
            format!("{field} in the path {why}"),
            Some(field.to_string()),
        )
    };
    let s = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| bad("is not UTF-8"))?;
    let s = s.trim();
    if s.is_empty() {
        return Err(bad("is empty"));
    }
    if s.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain spaces or control characters"));
    }
    Ok(s.to_string())
}

impl Route {
    /// None when the path is not this API's.
    pub fn parse(path: &str) -> Option<Result<Route, ApiError>> {
        let (workspace, name) = split(path)?;
        let parsed = decode("workspace", workspace).and_then(|workspace| {
            if workspace.contains('/') {
                return Err(unprocessable(
                    "invalid_path",
                    "workspace in the path must not contain '/'",
                    Some("workspace".into()),
                ));
            }
            Ok(match name {
                None => Route::Collection { workspace },
                Some(n) => Route::Item {
                    workspace,
                    name: decode("name", n)?,
                },
            })
        });
        Some(parsed)
    }
}

/// Answers a request of this API (already authorized), or None when the path is not its own.
pub fn handle(app: &App, req: &Request) -> Option<Response> {
    let route = match Route::parse(&req.path)? {
        Ok(r) => r,
        Err(e) => return Some(Response::error(&e)),
    };
    let by = req.user_path.as_deref();
    let if_match = req.if_match.as_deref();
    let answer = match (route, req.method.as_str()) {
        (Route::Collection { workspace }, "GET") => list(app, &workspace, req.query.as_deref()),
        (Route::Collection { workspace }, "POST") => {
            return Some(super::with_json_body(req, || {
                create(app, &workspace, &req.body, by)
            }))
        }
        (Route::Collection { .. }, _) => {
            return Some(super::method_not_allowed(&req.path, "GET, POST"))
        }
        (Route::Item { workspace, name }, "GET") => get(app, &workspace, &name),
        (Route::Item { workspace, name }, "PATCH") => {
            return Some(super::with_json_body(req, || {
                patch(app, &workspace, &name, &req.body, if_match, by)
            }))
        }
        (Route::Item { workspace, name }, "DELETE") => delete(app, &workspace, &name, if_match),
        (Route::Item { .. }, _) => {
            return Some(super::method_not_allowed(&req.path, "GET, PATCH, DELETE"))
        }
    };
    Some(answer.unwrap_or_else(|e| Response::error(&e)))
}

/// NeMo's name for a wire format.
fn format_name(f: WireFormat) -> &'static str {
    match f {
        WireFormat::OpenAiChat => "OPENAI_CHAT",
        WireFormat::AnthropicMessages => "ANTHROPIC_MESSAGES",
    }
}

/// One VirtualModel as NeMo shows it.
#[derive(Debug, Clone)]
struct Item {
    workspace: String,
    name: String,
    source: String,
    spec: VirtualModelSpec,
    /// `(model, backend_format)` of every target, in declared order.
    models: Vec<(String, Option<String>)>,
    /// A provider's concrete model shown as a passthrough (not an entry of any origin).
    passthrough: bool,
    created_at: i64,
    updated_at: i64,
    etag: String,
}

/// A target's model as `provider/model` when the provider is written apart.
fn target_model(t: &TargetSpec) -> String {
    let model = t.model.as_deref().unwrap_or("").trim();
    match t.provider.as_deref().map(str::trim) {
        Some(p) if !p.is_empty() && !model.starts_with(&format!("{p}/")) => format!("{p}/{model}"),
        _ => model.to_string(),
    }
}

fn target_format(t: &TargetSpec) -> Option<String> {
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

    fn autoprovisioned(&self) -> bool {
        self.passthrough || self.spec.autoprovisioned == Some(true)
    }

    fn to_json(&self) -> Value {
        let id = self
            .spec
            .id
            .clone()
            .unwrap_or_else(|| derived_id(&self.source));
        let list = |l: &Option<Vec<MiddlewareCall>>| json!(l.as_deref().unwrap_or(&[]));
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
            "default_model_entity": self.models.first().map(|(m, _)| m),
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
fn find<'a>(items: &'a [Item], source: &str) -> Option<&'a Item> {
    let lower = source.to_lowercase();
    items
        .iter()
        .find(|i| i.source == source)
        .or_else(|| items.iter().find(|i| i.source.to_lowercase() == lower))
}

fn current_items(app: &App) -> Result<Vec<Item>, ApiError> {
    let rows = views::store_rows(app)?;
    Ok(items(&app.snapshot(), &rows))
}

/// The workspace of a single-VirtualModel route (`-` only lists).
fn one_workspace(workspace: &str) -> Result<&str, ApiError> {
    if workspace == ALL_WORKSPACES {
        return Err(unprocessable(
            "invalid_path",
            "workspace \"-\" stands for every workspace and only lists; name one workspace",
            Some("workspace".into()),
        ));
    }
    Ok(workspace)
}

fn missing(snap: &Snapshot, workspace: &str, name: &str) -> ApiError {
    let passthrough = snap
        .providers
        .iter()
        .position(|p| p.config.name == workspace)
        .is_some_and(|pi| snap.models_of(pi).iter().any(|m| m == name));
    if passthrough {
        conflict(
            "autoprovisioned",
            format!(
                "{workspace}/{name} is the autoprovisioned passthrough of provider {workspace:?}'s model {name:?} and cannot be changed or deleted; POST a virtual model named {name:?} to workspace {workspace:?} to shadow it"
            ),
        )
    } else {
        not_found(format!(
            "no virtual model {name:?} in workspace {workspace:?}"
        ))
    }
}

/// The store row a write may change: config and env entries are read-only (409 naming where
/// to edit), a passthrough is read-only (409), anything else missing is 404.
fn writable<'a>(
    cur: &'a Current<'_>,
    workspace: &str,
    name: &str,
) -> Result<&'a crate::store::StoredRow, ApiError> {
    let source = format!("{workspace}/{name}");
    if let Some(loc) = cur.managed(&source) {
        return Err(writes::managed_by_config(&source, &loc));
    }
    cur.find(&source)
        .ok_or_else(|| missing(cur.snap, workspace, name))
}

// ---- list ----

/// The list's query: `page`, `page_size`, `sort`, `exclude_autoprovisioned`.
#[derive(Debug, PartialEq)]
struct Query {
    page: usize,
    page_size: usize,
    sort: String,
    exclude_autoprovisioned: bool,
}

fn bad_query(param: &str, message: String) -> ApiError {
    unprocessable("invalid_query", message, Some(param.to_string()))
}

impl Query {
    fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let mut q = Query {
            page: 1,
            page_size: DEFAULT_PAGE_SIZE,
            sort: DEFAULT_SORT.to_string(),
            exclude_autoprovisioned: false,
        };
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .trim()
                    .to_string()
            };
            let (k, v) = (decode(k), decode(v));
            let number = |max: usize| -> Result<usize, ApiError> {
                match v.parse::<usize>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(n),
                    _ => Err(bad_query(
                        &k,
                        format!("{k} {v:?} must be a whole number from 1 to {max}"),
                    )),
                }
            };
            match k.as_str() {
                "page" => q.page = number(usize::MAX)?,
                "page_size" => q.page_size = number(MAX_PAGE_SIZE)?,
                "sort" => {
                    let field = v.strip_prefix('-').unwrap_or(&v);
                    if !SORT_FIELDS.contains(&field) {
                        return Err(bad_query(
                            "sort",
                            format!(
                                "sort {v:?} is unknown; use {}, each optionally prefixed with - for descending order",
                                SORT_FIELDS.join(", ")
                            ),
                        ));
                    }
                    q.sort = v;
                }
                "exclude_autoprovisioned" => {
                    q.exclude_autoprovisioned = match v.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(bad_query(
                                &k,
                                format!("exclude_autoprovisioned {v:?} must be true or false"),
                            ))
                        }
                    }
                }
                other if other.starts_with("filter") => {
                    return Err(bad_query(
                        "filter",
                        "filter is not supported; list one workspace (or - for all) and sort"
                            .into(),
                    ))
                }
                _ => {}
            }
        }
        Ok(q)
    }

    fn compare(&self, a: &Item, b: &Item) -> Ordering {
        let field = self.sort.strip_prefix('-').unwrap_or(&self.sort);
        let primary = match field {
            "created_at" => a.created_at.cmp(&b.created_at),
            "updated_at" => a.updated_at.cmp(&b.updated_at),
            "workspace" => a.workspace.cmp(&b.workspace),
            _ => a.name.cmp(&b.name),
        };
        let primary = if self.sort.starts_with('-') {
            primary.reverse()
        } else {
            primary
        };
        primary
            .then_with(|| a.workspace.cmp(&b.workspace))
            .then_with(|| a.name.cmp(&b.name))
    }
}

/// One page of `items` in NeMo's envelope.
fn page(mut items: Vec<Item>, workspace: &str, q: &Query) -> Value {
    items.retain(|i| {
        (workspace == ALL_WORKSPACES || i.workspace == workspace)
            && !(q.exclude_autoprovisioned && i.autoprovisioned())
    });
    items.sort_by(|a, b| q.compare(a, b));
    let total = items.len();
    let data: Vec<Value> = items
        .iter()
        .skip((q.page - 1).saturating_mul(q.page_size))
        .take(q.page_size)
        .map(Item::to_json)
        .collect();
    json!({
        "data": data,
        "pagination": {
            "page": q.page,
            "page_size": q.page_size,
            "current_page_size": data.len(),
            "total_pages": total.div_ceil(q.page_size),
            "total_results": total,
        },
        "sort": q.sort,
    })
}

/// `GET .../workspaces/{workspace}/virtual-models`.
fn list(app: &App, workspace: &str, query: Option<&str>) -> Result<Response, ApiError> {
    let q = Query::parse(query)?;
    Ok(Response::json(
        200,
        &page(current_items(app)?, workspace, &q),
    ))
}

/// `GET .../virtual-models/{name}`.
fn get(app: &App, workspace: &str, name: &str) -> Result<Response, ApiError> {
    let workspace = one_workspace(workspace)?;
    let all = current_items(app)?;
    let item = find(&all, &format!("{workspace}/{name}")).ok_or_else(|| {
        not_found(format!(
            "no virtual model {name:?} in workspace {workspace:?}"
        ))
    })?;
    Ok(Response::json(200, &item.to_json()).with_header("etag", format!("\"{}\"", item.etag)))
}

// ---- writes ----

/// `{model, backend_format}`: one model of a VirtualModel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelRef {
    model: String,
    #[serde(default)]
    backend_format: Option<String>,
}

/// A present field: `Some(None)` is an explicit null, an absent field stays `None`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The view's read-only fields: accepted in bodies and ignored, so a client may send back what
/// it read.
const READ_ONLY: [&str; 8] = [
    "id",
    "entity_id",
    "workspace",
    "parent",
    "created_at",
    "created_by",
    "updated_at",
    "updated_by",
];

/// The fields of a create or PATCH body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    default_model_entity: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    models: Option<Option<Vec<ModelRef>>>,
    #[serde(default, deserialize_with = "present")]
    request_middleware: Option<Option<Vec<MiddlewareCall>>>,
    #[serde(default, deserialize_with = "present")]
    response_middleware: Option<Option<Vec<MiddlewareCall>>>,
    #[serde(default, deserialize_with = "present")]
    post_response_middleware: Option<Option<Vec<MiddlewareCall>>>,
    #[serde(default, deserialize_with = "present")]
    override_proxy: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    project: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    autoprovisioned: Option<Option<bool>>,
}

impl Fields {
    fn parse(mut m: Map<String, Value>) -> Result<Fields, ApiError> {
        for k in READ_ONLY {
            m.remove(k);
        }
        let f: Fields = serde_path_to_error::deserialize(Value::Object(m)).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let unknown = inner
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
                .map(str::to_string);
            let param = match path.as_str() {
                "." => unknown,
                p => Some(p.to_string()),
            };
            let message = crate::config::suggest(&inner);
            let message = match &param {
                Some(p) => format!("{p}: {message}"),
                None => message,
            };
            unprocessable("invalid_field", message, param)
        })?;
        if let Some(Some(p)) = &f.override_proxy {
            return Err(unprocessable(
                "invalid_field",
                format!("override_proxy: {p:?} cannot be used: this gateway has one proxy; leave override_proxy out or set it to null"),
                Some("override_proxy".into()),
            ));
        }
        Ok(f)
    }

    /// Project, autoprovisioned and the middleware lists: absent keeps, null clears, a value
    /// (an empty list included) replaces.
    fn apply(&self, spec: &mut VirtualModelSpec) {
        fn set<T: Clone>(slot: &mut Option<T>, field: &Option<Option<T>>) {
            if let Some(v) = field {
                *slot = v.clone();
            }
        }
        set(&mut spec.project, &self.project);
        set(&mut spec.autoprovisioned, &self.autoprovisioned);
        set(&mut spec.request_middleware, &self.request_middleware);
        set(&mut spec.response_middleware, &self.response_middleware);
        set(
            &mut spec.post_response_middleware,
            &self.post_response_middleware,
        );
    }
}

/// The targets of a VirtualModel: the default first, then the models not equal to it, each
/// keeping what an existing target of the same model declared beyond NeMo's fields (weights,
/// retries, headers set through the REST API).
fn targets(
    default: Option<String>,
    models: Vec<ModelRef>,
    old: &[TargetSpec],
) -> Result<Vec<TargetSpec>, ApiError> {
    let mut list: Vec<(String, Option<String>)> = Vec::new();
    let mut formats: Vec<(String, Option<String>)> = Vec::with_capacity(models.len());
    for (i, m) in models.iter().enumerate() {
        let model = m.model.trim();
        if model.is_empty() {
            return Err(unprocessable(
                "invalid_field",
                format!("models[{i}].model is blank"),
                Some(format!("models[{i}].model")),
            ));
        }
        let format = match m.backend_format.as_deref() {
            None => None,
            Some(f) => Some(
                WireFormat::parse(f)
                    .filter(|_| !f.trim().is_empty())
                    .map(format_name)
                    .ok_or_else(|| {
                        unprocessable(
                            "invalid_field",
                            format!("models[{i}].backend_format {f:?} is unknown; use OPENAI_CHAT or ANTHROPIC_MESSAGES"),
                            Some(format!("models[{i}].backend_format")),
                        )
                    })?
                    .to_string(),
            ),
        };
        formats.push((model.to_string(), format));
    }
    if let Some(d) = default {
        let d = d.trim().to_string();
        if d.is_empty() {
            return Err(unprocessable(
                "invalid_field",
                "default_model_entity is blank; give a model as \"workspace/name\" or null",
                Some("default_model_entity".into()),
            ));
        }
        let format = formats
            .iter()
            .find(|(m, _)| *m == d)
            .and_then(|(_, f)| f.clone());
        list.push((d, format));
    }
    for (m, f) in formats {
        if !list.iter().any(|(x, _)| *x == m) {
            list.push((m, f));
        }
    }
    if list.is_empty() {
        return Err(unprocessable(
            "invalid_field",
            "default_model_entity: give default_model_entity or at least one of models; this gateway sends a virtual model's requests to its models",
            Some("default_model_entity".into()),
        ));
    }
    Ok(list
        .into_iter()
        .map(|(model, backend_format)| {
            let kept = old
                .iter()
                .find(|t| target_model(t) == model)
                .cloned()
                .unwrap_or_default();
            TargetSpec {
                provider: None,
                model: Some(model),
                priority: None,
                backend_format,
                ..kept
            }
        })
        .collect())
}

/// Sets an entry's targets, in the priority strategy (the default first, the rest fallbacks).
fn set_targets(spec: &mut VirtualModelSpec, targets: Vec<TargetSpec>) {
    spec.target = None;
    spec.routing_config = None;
    spec.targets = Some(targets);
    spec.strategy = Some(Strategy::Priority.name().to_string());
}

/// The answer to a write: the VirtualModel as now stored, with its etag.
fn written(app: &App, source: &str, status: u16) -> Result<Response, ApiError> {
    let all = current_items(app)?;
    let item =
        find(&all, source).ok_or_else(|| internal("the written virtual model is not listed"))?;
    Ok(Response::json(status, &item.to_json()).with_header("etag", format!("\"{}\"", item.etag)))
}

/// `POST .../workspaces/{workspace}/virtual-models`: 201, 409 when the name exists, 422.
fn create(app: &App, workspace: &str, body: &[u8], by: Option<&str>) -> Result<Response, ApiError> {
    let workspace = one_workspace(workspace)?;
    let f = Fields::parse(entry::object(body)?)?;
    let name = match f.name.as_deref().map(str::trim) {
        Some(n) if !n.is_empty() && !n.contains(char::is_whitespace) => n.to_string(),
        Some(n) if !n.is_empty() => {
            return Err(unprocessable(
                "invalid_field",
                format!("name {n:?} must not contain spaces"),
                Some("name".into()),
            ))
        }
        _ => {
            return Err(unprocessable(
                "invalid_field",
                "name is required",
                Some("name".into()),
            ))
        }
    };
    let source = format!("{workspace}/{name}");
    let mut spec = VirtualModelSpec {
        source: Some(source.clone()),
        ..VirtualModelSpec::default()
    };
    let default = f.default_model_entity.clone().flatten();
    let models = f.models.clone().flatten().unwrap_or_default();
    set_targets(&mut spec, targets(default, models, &[])?);
    f.apply(&mut spec);
    writes::stamp(&mut spec, by);
    let d = writes::commit(app, |cur| {
        writes::decide_write(cur, None, spec, None, Mode::Create, now_s())
    })?;
    written(app, &source, d.status)
}

/// `PATCH .../virtual-models/{name}`: absent fields keep their value, `null` clears
/// `default_model_entity` (the next model becomes the default) and `override_proxy`, `[]`
/// empties a list. 200, 404, 409 (read-only entry, stale `If-Match`), 422.
fn patch(
    app: &App,
    workspace: &str,
    name: &str,
    body: &[u8],
    if_match: Option<&str>,
    by: Option<&str>,
) -> Result<Response, ApiError> {
    let workspace = one_workspace(workspace)?;
    let f = Fields::parse(entry::object(body)?)?;
    if let Some(n) = f.name.as_deref().map(str::trim) {
        if n != name {
            return Err(unprocessable(
                "invalid_field",
                format!("name: the body names {n:?} but the path names {name:?}; NeMo's API does not rename (PATCH the source through /admin/api/v1/virtual-models to rename)"),
                Some("name".into()),
            ));
        }
    }
    let d = writes::commit(app, |cur| {
        let existing = writable(cur, workspace, name)?;
        let mut spec = existing.spec.clone();
        if f.default_model_entity.is_some() || f.models.is_some() {
            let old: Vec<TargetSpec> = spec_targets(&spec).into_iter().cloned().collect();
            let old_default = old.first().map(target_model);
            let default = match &f.default_model_entity {
                Some(v) => v.clone(),
                None => old_default.clone(),
            };
            let models = match &f.models {
                Some(v) => v.clone().unwrap_or_default(),
                None => old
                    .iter()
                    .map(|t| ModelRef {
                        model: target_model(t),
                        backend_format: target_format(t),
                    })
                    // A cleared default leaves the models; the next one serves first.
                    .filter(|m| {
                        f.default_model_entity.is_none() || Some(&m.model) != old_default.as_ref()
                    })
                    .collect(),
            };
            set_targets(&mut spec, targets(default, models, &old)?);
        }
        f.apply(&mut spec);
        spec.updated_by = by.map(str::to_string);
        let at = existing.source().to_string();
        writes::decide_write(cur, Some(&at), spec, if_match, Mode::Update, now_s())
    })?;
    let source = d
        .row
        .as_ref()
        .map(|r| r.source().to_string())
        .unwrap_or_else(|| format!("{workspace}/{name}"));
    written(app, &source, 200)
}

/// `DELETE .../virtual-models/{name}`: 204, 404, 409 (read-only entry, stale `If-Match`).
fn delete(
    app: &App,
    workspace: &str,
    name: &str,
    if_match: Option<&str>,
) -> Result<Response, ApiError> {
    let workspace = one_workspace(workspace)?;
    writes::commit(app, |cur| {
        let at = writable(cur, workspace, name)?.source().to_string();
        writes::decide_delete(cur, &at, if_match)
    })?;
    Ok(Response::empty(204))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_into_routes() {
        let r = |p: &str| Route::parse(p).map(|r| r.map_err(|e| e.message));
        assert_eq!(
            r("/apis/inference-gateway/v2/workspaces/w/virtual-models"),
            Some(Ok(Route::Collection {
                workspace: "w".into()
            }))
        );
        assert_eq!(
            r("/apis/inference-gateway/v2/workspaces/w/virtual-models/meta%2Fllama"),
            Some(Ok(Route::Item {
                workspace: "w".into(),
                name: "meta/llama".into()
            }))
        );
        assert_eq!(
            r("/apis/inference-gateway/v2/workspaces/w/virtual-models/a/b"),
            Some(Ok(Route::Item {
                workspace: "w".into(),
                name: "a/b".into()
            }))
        );
        assert!(matches!(
            r("/apis/inference-gateway/v2/workspaces/%20/virtual-models"),
            Some(Err(_))
        ));
        assert_eq!(
            r("/apis/inference-gateway/v2/workspaces/w/openai/-/v1/models"),
            None
        );
        assert_eq!(
            r("/apis/inference-gateway/v2/workspaces/w/virtual-modelsx"),
            None
        );
    }

    #[test]
    fn query_defaults_and_errors() {
        let q = Query::parse(None).unwrap();
        assert_eq!(
            (q.page, q.page_size, q.sort.as_str()),
            (1, 20, "-created_at")
        );
        let q = Query::parse(Some(
            "page=2&page_size=5&sort=name&exclude_autoprovisioned=true",
        ))
        .unwrap();
        assert_eq!((q.page, q.page_size, q.sort.as_str()), (2, 5, "name"));
        assert!(q.exclude_autoprovisioned);
        let e = Query::parse(Some("sort=-size")).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (422, Some("sort")));
        assert!(
            e.message
                .contains("created_at, updated_at, name, workspace"),
            "{}",
            e.message
        );
        assert_eq!(Query::parse(Some("page=0")).unwrap_err().status, 422);
        assert_eq!(Query::parse(Some("page_size=201")).unwrap_err().status, 422);
        assert_eq!(
            Query::parse(Some("exclude_autoprovisioned=maybe"))
                .unwrap_err()
                .status,
            422
        );
    }

    fn m(model: &str, f: Option<&str>) -> ModelRef {
        ModelRef {
            model: model.into(),
            backend_format: f.map(str::to_string),
        }
    }

    #[test]
    fn targets_put_the_default_first_and_keep_formats() {
        let t = targets(
            Some("a/m1".into()),
            vec![m("b/m3", None), m("a/m1", Some("anthropic_messages"))],
            &[],
        )
        .unwrap();
        let names: Vec<_> = t.iter().map(target_model).collect();
        assert_eq!(names, ["a/m1", "b/m3"]);
        assert_eq!(t[0].backend_format.as_deref(), Some("ANTHROPIC_MESSAGES"));
        assert_eq!(t[1].backend_format, None);
        let e = targets(None, vec![], &[]).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("default_model_entity"));
        let e = targets(None, vec![m("a/m1", Some("GRPC"))], &[]).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("models[0].backend_format"));
    }

    #[test]
    fn bodies_reject_unknown_fields_and_an_override_proxy() {
        let obj = |v: Value| v.as_object().unwrap().clone();
        let e = Fields::parse(obj(json!({"name": "x", "modles": []}))).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (422, Some("modles")));
        let e = Fields::parse(obj(json!({"override_proxy": "p.v1"}))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("override_proxy"));
        let f = Fields::parse(obj(
            json!({"override_proxy": null, "default_model_entity": null,
            "request_middleware": [], "id": "ignored"}),
        ))
        .unwrap();
        assert_eq!(f.default_model_entity, Some(None));
        assert!(f.models.is_none());
        let mut spec = VirtualModelSpec {
            request_middleware: Some(vec![MiddlewareCall {
                name: "log".into(),
                config_type: None,
                config: Some(json!({})),
                config_id: None,
            }]),
            project: Some("p".into()),
            ..VirtualModelSpec::default()
        };
        f.apply(&mut spec);
        assert_eq!(spec.request_middleware, Some(vec![]));
        assert_eq!(spec.project.as_deref(), Some("p"));
    }
}
