//! The caller's model list (`GET /v1/models`) and one entry of it (`GET /v1/models/{id}`):
//! concrete models and the virtual models the caller may use, filtered by access.

use super::Session;
use pingora::Result;
use serde_json::{json, Value};

use super::ctx::Ctx;
use super::respond::{self, ApiError, Tags};
use super::route::Route;
use super::Gateway;
use crate::app::App;
use crate::routing::model::{Kind, Operation};
use crate::routing::plan::{self};
use crate::routing::table::Access;
use crate::routing::user_path::{list_admits, UserPath};
use crate::snapshot::{Snapshot, View};

/// The caller's model list (`GET /v1/models`) or one entry of it (`GET /v1/models/{id}`).
pub async fn models_route(gw: &Gateway, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
    let snap = ctx.snapshot(&gw.app);
    let tags = Tags {
        request_id: &ctx.request_id,
        ..Tags::default()
    };
    let entry = match &ctx.route {
        Route::Model(id) => {
            find_model(&snap, &gw.app, ctx.user_path.as_ref(), id).ok_or_else(|| {
                ApiError::new(
                    404,
                    "invalid_request_error",
                    "model_not_found",
                    format!("unsupported model: {id}"),
                )
            })
        }
        Route::Models
        | Route::Health
        | Route::Ready
        | Route::Metrics
        | Route::Admin
        | Route::Api(_)
        | Route::ApiWrongMethod(_)
        | Route::Unknown { .. } => Ok(list_models(&snap, &gw.app, ctx.user_path.as_ref())),
    };
    match entry {
        Ok(body) => {
            ctx.status = Some(200);
            respond::write_json(session, 200, &body, &tags).await?;
        }
        Err(e) => {
            ctx.status = Some(e.status);
            respond::write_error(session, &e, false, &tags).await?;
        }
    }
    Ok(())
}

/// One entry of the caller's model list (`GET /v1/models/{id}`), under the same rules.
fn find_model(snap: &Snapshot, app: &App, caller: Option<&UserPath>, id: &str) -> Option<Value> {
    let mut list = list_models(snap, app, caller);
    let data = list.get_mut("data")?.as_array_mut()?;
    // A virtual model's slug names its entry as its source does.
    let by_slug = snap
        .table
        .redirect(id.trim())
        .map(|vi| snap.table.models[vi].source.as_str());
    let at = data
        .iter()
        .position(|m| m["id"] == id)
        .or_else(|| data.iter().position(|m| m["id"].as_str() == by_slug))?;
    Some(data.swap_remove(at))
}

/// The OpenAI model list a caller may use: concrete models and enabled redirects.
pub fn list_models(snap: &Snapshot, app: &App, caller: Option<&UserPath>) -> Value {
    let mut data = Vec::new();
    let created = snap.loaded_at_ms / 1000;
    if !snap.settings.keep_only_aliases {
        for (pi, p) in snap.providers.iter().enumerate() {
            if !p.config.usable() {
                continue;
            }
            for m in snap.models_of(pi) {
                if snap.table.access(&p.config.name, &m, caller) != Access::Allowed {
                    continue;
                }
                data.push(
                    json!({"id": format!("{}/{m}", p.config.name), "object": "model",
                                 "created": created, "owned_by": p.config.name}),
                );
            }
        }
    }
    // Where each concrete id is listed, for the redirects that shadow one.
    let concrete: std::collections::HashMap<String, usize> = data
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some((e["id"].as_str()?.to_string(), i)))
        .collect();
    let view = View {
        snap,
        health: Some(&app.health),
        now_ms: crate::mono_clock::now_ms(),
        claims_probes: false,
        probes: Default::default(),
    };
    for (vi, vm) in snap.table.models.iter().enumerate() {
        if vm.kind != Kind::Redirect || !vm.enabled {
            continue;
        }
        if !vm
            .user_paths
            .as_ref()
            .is_none_or(|l| list_admits(l, caller))
        {
            continue;
        }
        let req = plan::Request {
            model: &vm.source,
            provider: None,
            user_path: caller,
            operation: vm
                .model_types
                .as_ref()
                .and_then(|t| t.first().copied())
                .unwrap_or(Operation::Chat),
            metadata: None,
            session_key: None,
            input_tokens: None,
        };
        let first = plan::eligibility(&snap.table, vi, &req, &view)
            .into_iter()
            .enumerate()
            .find(|(_, (_, r))| r.is_ok())
            .map(|(ti, (p, _))| (ti, p));
        let Some((ti, provider)) = first else {
            continue;
        };
        let owner = provider.map_or("", |p| snap.providers[p].config.name.as_str());
        let mut entry = json!({"id": vm.source, "object": "model", "created": created,
                               "owned_by": owner, "target": vm.targets[ti].name.as_str()});
        if let Some(d) = &vm.spec.description {
            entry["description"] = json!(d);
        }
        // A redirect that shadows a concrete model takes that model's entry: one id, listed
        // with what a request for it is served by.
        match concrete.get(vm.source.as_str()) {
            Some(&at) => data[at] = entry,
            None => data.push(entry),
        }
    }
    json!({"object": "list", "data": data})
}
