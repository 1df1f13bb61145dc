//! The admin routes of managed keys: `POST /admin/api/v1/keys` (the secret answered once),
//! `GET /admin/api/v1/keys` (no secrets), `DELETE /admin/api/v1/keys/{name}` (revoked on the
//! next request). Master key only (the admin surface checks who calls before this runs).
//!
//! A write goes to the store first and then re-reads its keys, so the table the request path
//! sees is always the store's; with the fleet store the other gateways re-read on the write's
//! notification. Nothing here keeps or logs a secret.

use serde_json::{json, Value};

use super::spec::{check_name, KeySpec};
use super::{generate, hash_hex, ManagedKey, StoredKey};
use crate::admin::{entry, internal, not_found, unprocessable, Response};
use crate::api_error::ApiError;
use crate::app::App;
use crate::store::{now_s, KeyChange};

fn store(app: &App) -> Result<&dyn crate::store::Store, ApiError> {
    app.store.as_deref().ok_or_else(|| {
        ApiError::new(
            503,
            "service_unavailable",
            "store_unavailable",
            "no admin store is open",
        )
    })
}

/// A key's view: everything but its secret (which is not kept) and its hash.
pub fn view(k: &ManagedKey) -> Value {
    json!({
        "name": k.name,
        "user_path": k.user_path.as_str(),
        "scopes": k.scopes.iter().map(super::Scope::name).collect::<Vec<_>>(),
        "expires_at": k.expires_at.map(crate::admin::rfc3339),
        "limits": k.limits,
        "created_at": crate::admin::rfc3339(k.created_at),
    })
}

/// `POST /admin/api/v1/keys`.
pub fn create(app: &App, body: &[u8]) -> Result<Response, ApiError> {
    let mut m = entry::object(body)?;
    // The name is the row's key, not part of its spec.
    let name = match m.remove("name") {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(_) => {
            return Err(unprocessable(
                "invalid_field",
                "name: must be a string",
                Some("name".into()),
            ))
        }
        None => {
            return Err(unprocessable(
                "invalid_field",
                "name: missing; every key needs a name",
                Some("name".into()),
            ))
        }
    };
    check_name(&name).map_err(|e| unprocessable("invalid_field", e.to_string(), Some(e.field)))?;
    let spec: KeySpec = entry::deserialize(m)?;
    let now = now_s();
    let key = spec
        .into_key(&name, now)
        .map_err(|e| unprocessable("invalid_field", e.to_string(), Some(e.field)))?;
    if key.expired(now) {
        return Err(unprocessable(
            "invalid_field",
            "expires_at: the time is already past",
            Some("expires_at".into()),
        ));
    }
    let secret = generate().map_err(|e| internal(format!("no random bytes for a key: {e}")))?;
    let stored = StoredKey {
        name: name.clone(),
        hash: hash_hex(&secret),
        spec: serde_json::to_string(&KeySpec::stored(&key)).map_err(|e| internal(e.to_string()))?,
        created_at: now,
    };
    let written = store(app)?
        .write_key(&KeyChange::Create(stored))
        .map_err(|e| crate::admin::writes::store_failed(&e, "writing the key"))?;
    if written.is_none() {
        return Err(crate::admin::conflict(
            "already_exists",
            format!("a key named {name:?} already exists; delete it first or pick another name"),
        ));
    }
    app.refresh_keys().map_err(internal)?;
    log::info!("admin: created API key {name:?}");
    let mut v = view(&key);
    v["key"] = json!(secret);
    Ok(Response::json(201, &v))
}

/// `GET /admin/api/v1/keys`.
pub fn list(app: &App) -> Result<Response, ApiError> {
    let keys = app.keys.load();
    let data: Vec<Value> = keys.keys.iter().map(|k| view(k)).collect();
    Ok(Response::json(
        200,
        &json!({"object": "list", "data": data}),
    ))
}

/// `DELETE /admin/api/v1/keys/{name}`.
pub fn delete(app: &App, name: &str) -> Result<Response, ApiError> {
    let done = store(app)?
        .write_key(&KeyChange::Delete(name.to_string()))
        .map_err(|e| crate::admin::writes::store_failed(&e, "revoking the key"))?;
    if done.is_none() {
        return Err(not_found(format!("no key named {name:?}")));
    }
    app.refresh_keys().map_err(internal)?;
    log::info!("admin: revoked API key {name:?}");
    Ok(Response::empty(204))
}
