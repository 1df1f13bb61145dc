//! NeMo's writes: create, PATCH (absent keeps, `null` clears, a list replaces) and delete,
//! translated to entries and run through `writes::commit`. Config and env entries and
//! autoprovisioned passthroughs are read-only (409).

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::one_workspace;
use super::view::{current_items, find, format_name, target_format, target_model};
use crate::admin::scope;
use crate::admin::writes::{self, Current, Mode};
use crate::admin::{conflict, entry, internal, not_found, unprocessable, Response};
use crate::app::App;
use crate::config::schema::{TargetSpec, VirtualModelSpec};
use crate::middleware::call::MiddlewareCall;
use crate::proxy::respond::ApiError;
use crate::routing::model::{Strategy, WireFormat};
use crate::snapshot::Snapshot;
use crate::store::columns::spec_targets;
use crate::store::now_s;

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
    request_middleware: Option<Option<Box<[MiddlewareCall]>>>,
    #[serde(default, deserialize_with = "present")]
    response_middleware: Option<Option<Box<[MiddlewareCall]>>>,
    #[serde(default, deserialize_with = "present")]
    post_response_middleware: Option<Option<Box<[MiddlewareCall]>>>,
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
        let f: Fields = entry::deserialize(m)?;
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
                backend_format: backend_format.map(String::into_boxed_str),
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
pub(super) fn create(
    app: &App,
    workspace: &str,
    body: &[u8],
    by: Option<&str>,
) -> Result<Response, ApiError> {
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
    scope::check_addressed(&source)?;
    let mut spec = VirtualModelSpec {
        source: Some(source.clone()),
        ..VirtualModelSpec::default()
    };
    let default = f.default_model_entity.clone().flatten();
    let models = f.models.clone().flatten().unwrap_or_default();
    spec.no_default_model = default.is_none().then_some(true);
    set_targets(&mut spec, targets(default, models, &[])?);
    f.apply(&mut spec);
    writes::stamp(&mut spec, by);
    let d = writes::commit(app, |cur| {
        writes::decide_write(cur, None, spec, None, Mode::Create, now_s())
    })?;
    written(app, &source, d.status)
}

/// `PATCH .../virtual-models/{name}`: absent fields keep their value, `null` clears
/// `default_model_entity` (the other models then serve in their order) and `override_proxy`,
/// `[]` empties a list. 200, 404, 409 (read-only entry, stale `If-Match`), 422.
pub(super) fn patch(
    app: &App,
    workspace: &str,
    name: &str,
    body: &[u8],
    if_match: Option<&str>,
    by: Option<&str>,
) -> Result<Response, ApiError> {
    let workspace = one_workspace(workspace)?;
    scope::check_addressed(&format!("{workspace}/{name}"))?;
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
            let old_default = old
                .first()
                .map(target_model)
                .filter(|_| spec.no_default_model != Some(true));
            let default = match &f.default_model_entity {
                Some(v) => v.clone(),
                None => old_default.clone(),
            };
            spec.no_default_model = default.is_none().then_some(true);
            let models = match &f.models {
                Some(v) => v.clone().unwrap_or_default(),
                None => old
                    .iter()
                    .map(|t| ModelRef {
                        model: target_model(t),
                        backend_format: target_format(t),
                    })
                    // A cleared default leaves the other models, which serve in their order.
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
pub(super) fn delete(
    app: &App,
    workspace: &str,
    name: &str,
    if_match: Option<&str>,
) -> Result<Response, ApiError> {
    let workspace = one_workspace(workspace)?;
    scope::check_addressed(&format!("{workspace}/{name}"))?;
    writes::commit(app, |cur| {
        let at = writable(cur, workspace, name)?.source().to_string();
        writes::decide_delete(cur, &at, if_match)
    })?;
    Ok(Response::empty(204))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
            request_middleware: Some(
                [MiddlewareCall {
                    name: "log".into(),
                    config_type: None,
                    config: Some(json!({})),
                    config_id: None,
                }]
                .into(),
            ),
            project: Some("p".into()),
            ..VirtualModelSpec::default()
        };
        f.apply(&mut spec);
        assert_eq!(spec.request_middleware.as_deref(), Some(&[][..]));
        assert_eq!(spec.project.as_deref(), Some("p"));
    }
}
