//! Fetching a provider's `/models` listing and resolving its address, off the request path.
//!
//! Runs on blocking threads (`spawn_blocking`) with bounded timeouts. A failure keeps the
//! previous list and marks it stale; it never empties a catalog that was good.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::{Discovered, ProviderState};
use crate::config::providers::{ProviderConfig, ProviderKind};

pub use crate::wall_clock::now_ms;

/// Resolves the provider's host to one socket address.
pub fn resolve_addr(p: &ProviderConfig) -> Result<Option<SocketAddr>, String> {
    let Some(base) = &p.base else {
        return Ok(None);
    };
    (base.host.as_str(), base.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", base.host))?
        .next()
        .map(Some)
        .ok_or_else(|| format!("{} resolves to no address", base.host))
}

/// GETs `{base_url}/models` and returns the ids it lists.
pub fn fetch_models(p: &ProviderConfig) -> Result<super::ModelSet, String> {
    let Some(base) = &p.base else {
        return Ok(super::ModelSet::default());
    };
    let url = format!("{}/models", base.display());
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_millis(p.timeouts.connect_ms))
        .timeout(Duration::from_secs(15))
        .build();
    let mut req = agent.get(&url);
    if let Some(key) = &p.api_key {
        let format = p.kind.wire_format();
        let (name, value) = crate::wire::key_header(format, key);
        req = req.set(name, &value);
        if let Some((name, value)) = crate::wire::version_header(format) {
            req = req.set(name, value);
        }
    }
    for (k, v) in &p.headers {
        req = req.set(k, v);
    }
    let body: serde_json::Value = req
        .call()
        .map_err(|e| match e {
            ureq::Error::Status(code, _) => format!("GET {url}: status {code}"),
            ureq::Error::Transport(t) => format!("GET {url}: {}", t.kind()),
        })?
        .into_json()
        .map_err(|e| format!("GET {url}: body is not JSON: {e}"))?;
    let data = body
        .get("data")
        .and_then(|d| d.as_array())
        .ok_or_else(|| format!("GET {url}: no data array in the listing"))?;
    Ok(data
        .iter()
        .filter_map(|m| m.get("id").and_then(|i| i.as_str()).map(str::to_string))
        .collect())
}

/// Refreshes one provider's address and listing; keeps the previous list on failure.
pub fn refresh_blocking(p: &ProviderConfig, state: &ProviderState) {
    if p.kind == ProviderKind::Mock || !p.usable() {
        return;
    }
    let prev = state.discovered.load_full();
    let mut next = Discovered {
        refreshed_at_ms: Some(now_ms()),
        ..(*prev).clone()
    };
    match resolve_addr(p) {
        Ok(a) => next.addr = a.or(prev.addr),
        Err(e) => {
            log::warn!("provider {}: {e}", p.name);
            next.error = Some(e);
            next.stale = prev.models.is_some();
            state.discovered.store(std::sync::Arc::new(next));
            return;
        }
    }
    match fetch_models(p) {
        Ok(models) => {
            log::info!("provider {}: {} models listed", p.name, models.len());
            next.models = Some(models);
            next.stale = false;
            next.error = None;
        }
        Err(e) => {
            log::warn!(
                "provider {}: model listing failed, keeping the previous one: {e}",
                p.name
            );
            next.stale = prev.models.is_some();
            next.error = Some(e);
        }
    }
    state.discovered.store(std::sync::Arc::new(next));
}

/// Async wrapper: runs the refresh on a blocking thread.
pub async fn refresh(p: ProviderConfig, state: std::sync::Arc<ProviderState>) {
    let _ = tokio::task::spawn_blocking(move || refresh_blocking(&p, &state)).await;
}
