//! The immutable routing snapshot: settings, providers and the virtual model table, built and
//! validated off the request path and swapped atomically.
//!
//! A snapshot is valid by construction: `build` either returns a complete snapshot or every
//! error it found. Precedence (store < config < env) is applied here, never per request.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::catalog::{self, ProviderState, StateRegistry};
use crate::config::providers::{KeyStyle, ProviderConfig, ProviderKind};
use crate::config::schema::VirtualModelSpec;
use crate::config::settings::{CatalogMode, Settings};
use crate::config::validate::{self, Declarations};
use crate::config::LoadedConfig;
use crate::routing::model::{Operation, Origin, WireFormat};
use crate::routing::plan::{Availability, Conditions, TargetState};
use crate::routing::table::Table;

/// A provider as the request path needs it.
#[derive(Debug)]
pub struct ProviderRuntime {
    pub config: ProviderConfig,
    pub state: Arc<ProviderState>,
    pub configured: catalog::ModelSet,
    /// The address known when the snapshot was built (discovery may learn a newer one).
    pub addr_at_build: Option<SocketAddr>,
    /// The `Host` header upstream requests carry (the port only when it is not the scheme's);
    /// `None` for a provider without a base URL.
    pub host: Option<HeaderValue>,
    /// The provider's key as the header values upstream requests carry.
    pub key: KeyHeaders,
    /// The provider's configured `headers` (validated at load).
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
    /// The upstream request URI of each (operation, dialect), built once.
    pub upstream_uris: Vec<(Operation, WireFormat, http::Uri)>,
}

/// A provider key as header values, built once per snapshot.
#[derive(Debug, Clone)]
pub enum KeyHeaders {
    None,
    /// The key has bytes a header cannot carry (say, a newline pasted into the variable):
    /// requests to the provider fail with that message instead of going out without it.
    Invalid,
    Valid {
        /// `Bearer <key>`, for `authorization` (OpenAI dialect).
        bearer: HeaderValue,
        /// The key itself, for `x-api-key` (Anthropic dialect).
        api_key: HeaderValue,
    },
}

impl KeyHeaders {
    fn new(key: Option<&str>) -> KeyHeaders {
        let Some(key) = key else {
            return KeyHeaders::None;
        };
        match (
            HeaderValue::from_str(&format!("Bearer {key}")),
            HeaderValue::from_str(key),
        ) {
            (Ok(mut bearer), Ok(mut api_key)) => {
                bearer.set_sensitive(true);
                api_key.set_sensitive(true);
                KeyHeaders::Valid { bearer, api_key }
            }
            _ => KeyHeaders::Invalid,
        }
    }
}

/// `host[:port]` for a provider's base URL; `None` for a provider without one.
fn host_header(p: &ProviderConfig) -> Option<HeaderValue> {
    let b = p.base.as_ref()?;
    let text = if (b.tls && b.port == 443) || (!b.tls && b.port == 80) {
        b.host.clone()
    } else {
        format!("{}:{}", b.host, b.port)
    };
    HeaderValue::from_str(&text).ok()
}

/// The provider's configured headers; load-time validation admitted every name and value.
/// Azure's key travels here, as `api-key`.
fn extra_headers(p: &ProviderConfig) -> Vec<(HeaderName, HeaderValue)> {
    let mut out: Vec<(HeaderName, HeaderValue)> = p
        .headers
        .iter()
        .filter_map(|(k, v)| {
            Some((
                HeaderName::from_bytes(k.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        })
        .collect();
    if let (KeyStyle::AzureApiKey, Some(key)) = (p.key_style, p.api_key.as_deref()) {
        if let Ok(mut v) = HeaderValue::from_str(key) {
            v.set_sensitive(true);
            out.push((HeaderName::from_static("api-key"), v));
        }
    }
    out
}

/// The upstream URI of every (operation, dialect) pair, for providers with a base URL.
fn upstream_uris(p: &ProviderConfig) -> Vec<(Operation, WireFormat, http::Uri)> {
    let Some(base) = &p.base else {
        return Vec::new();
    };
    Operation::ALL
        .iter()
        .flat_map(|op| WireFormat::ALL.iter().map(move |f| (*op, *f)))
        .filter_map(|(op, f)| {
            let mut path = format!("{}{}", base.path, crate::wire::path(op, f));
            if let Some(q) = &p.query {
                path.push('?');
                path.push_str(q);
            }
            path.parse().ok().map(|uri| (op, f, uri))
        })
        .collect()
}

impl ProviderRuntime {
    /// The prebuilt upstream URI for `op` in `format`'s dialect, without a query string.
    pub fn upstream_uri(&self, op: Operation, format: WireFormat) -> Option<&http::Uri> {
        self.upstream_uris
            .iter()
            .find(|(o, f, _)| *o == op && *f == format)
            .map(|(_, _, uri)| uri)
    }

    pub fn addr(&self) -> Option<SocketAddr> {
        self.state.addr().or(self.addr_at_build)
    }
}

#[derive(Debug)]
pub struct Snapshot {
    pub settings: Settings,
    pub providers: Vec<ProviderRuntime>,
    pub table: Table,
    pub label: String,
    pub loaded_at_ms: u64,
    pub warnings: Vec<String>,
    /// Sources of store rows hidden by a config or env entry.
    pub overridden_store_rows: HashSet<String>,
    /// The store rows this snapshot was built from.
    pub store_rows: Vec<VirtualModelSpec>,
    /// Response tag values per virtual model, built once (see `TagValues`).
    pub tag_values: Vec<TagValues>,
    /// Middleware pipelines per virtual model (as `table.models`), compiled once; `None` for a
    /// virtual model without middleware, which then pays nothing for the feature.
    pub pipelines: Vec<Option<Arc<crate::middleware::Pipelines>>>,
    /// Whether any virtual model has middleware: decided once here, so a request to a
    /// gateway without any pays one branch.
    pub any_pipelines: bool,
    /// GoModel's guardrails, a request pipeline run on every chat-shaped request.
    pub guardrails: Option<Arc<crate::middleware::Pipelines>>,
}

/// A virtual model's response tag values as header values: its source (for
/// `X-Modelgate-Virtual-Model`) and, per target whose provider is declared, the
/// `provider/model` it is served as (for `X-Modelgate-Model`).
#[derive(Debug, Clone)]
pub struct TagValues {
    pub source: Option<HeaderValue>,
    pub served: Vec<Option<(usize, HeaderValue)>>,
}

/// Targets served as the same `provider/model` share one header value (a clone shares its
/// bytes): a large config names far fewer concrete models than it has targets.
fn tag_values(table: &Table, providers: &[ProviderRuntime]) -> Vec<TagValues> {
    let mut served_as: foldhash::HashMap<(usize, &str), Option<HeaderValue>> =
        foldhash::HashMap::default();
    let mut out = Vec::with_capacity(table.models.len());
    for vm in &table.models {
        let mut served = Vec::with_capacity(vm.targets.len());
        for t in &vm.targets {
            let value = t.provider.and_then(|p| {
                let v = served_as.entry((p, t.model.as_str())).or_insert_with(|| {
                    let runtime = providers.get(p)?;
                    HeaderValue::from_str(&format!("{}/{}", runtime.config.name, t.model)).ok()
                });
                Some((p, v.clone()?))
            });
            served.push(value);
        }
        out.push(TagValues {
            source: HeaderValue::from_str(&vm.source).ok(),
            served,
        });
    }
    out
}

/// Counts of virtual models by origin.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct OriginCounts {
    pub config: usize,
    pub env: usize,
    pub store: usize,
}

impl Snapshot {
    /// Builds a snapshot; each surviving source's rotation starts where `previous` left it.
    pub fn build(
        loaded: &LoadedConfig,
        store_rows: &[VirtualModelSpec],
        previous: Option<&Snapshot>,
        registry: &StateRegistry,
    ) -> Result<Snapshot, Vec<String>> {
        let mut warnings = loaded.warnings.clone();
        let names: Vec<String> = loaded.providers.iter().map(|p| p.name.clone()).collect();
        // GoModel's `models.overrides_enabled: false`: the store's access policies (rows
        // without targets) are left out; its redirects stay.
        let kept_rows: Vec<VirtualModelSpec>;
        let store_rows_in_use = if loaded.settings.model_overrides_enabled {
            store_rows
        } else {
            kept_rows = store_rows
                .iter()
                .filter(|r| !crate::store::columns::spec_targets(r).is_empty())
                .cloned()
                .collect();
            &kept_rows
        };
        let decl = Declarations {
            store: store_rows_in_use,
            config: &loaded.file_virtual_models,
            config_path: &loaded.label,
            env: &loaded.env_virtual_models,
        };
        let merged = validate::merge(&decl)?;
        let mut pipelines =
            crate::config::pipelines::compile(&merged, &loaded.middleware_configs, &loaded.label)?;
        let retry = validate::RetryDefaults {
            global: Arc::new(loaded.settings.retry.clone()),
            per_provider: loaded
                .providers
                .iter()
                .map(|p| Arc::new(p.retry.clone()))
                .collect(),
        };
        let mut models = validate::build(
            &merged,
            &names,
            &retry,
            previous.map(|p| &p.table),
            &mut warnings,
        )?;
        let index = catalog::ModelIndex::new(&loaded.providers);
        for vm in models.iter_mut() {
            for t in vm.targets.iter_mut() {
                if let Some(pi) = t.provider {
                    t.price = index
                        .price(pi, &t.model)
                        .map(|p| p.input_per_mtok + p.output_per_mtok);
                    t.context_window = index.context_window(pi, &t.model);
                }
            }
        }
        let overridden_store_rows = merged
            .iter()
            .filter(|m| m.overrides_store)
            .filter_map(|m| m.spec.source.as_deref().map(|s| s.trim().to_string()))
            .collect();
        let providers: Vec<ProviderRuntime> = loaded
            .providers
            .iter()
            .map(|p| {
                let state = registry.get(&p.name);
                let addr_at_build = if p.usable() {
                    literal_addr(p).or_else(|| state.addr())
                } else {
                    None
                };
                ProviderRuntime {
                    host: host_header(p),
                    key: match p.key_style {
                        KeyStyle::Standard => KeyHeaders::new(p.api_key.as_deref()),
                        KeyStyle::AzureApiKey => KeyHeaders::None,
                    },
                    extra_headers: extra_headers(p),
                    upstream_uris: upstream_uris(p),
                    configured: catalog::configured_set(p),
                    config: p.clone(),
                    state,
                    addr_at_build,
                }
            })
            .collect();
        let mut table = Table::new(models, names, loaded.settings.models_enabled_by_default);
        table.fallbacks = loaded.fallbacks.clone();
        let tag_values = tag_values(&table, &providers);
        let pipelines: Vec<_> = table
            .models
            .iter()
            .map(|vm| pipelines.remove(vm.source.trim()))
            .collect();
        let guardrails = if loaded.guardrails.is_empty() {
            None
        } else {
            let p = crate::middleware::Pipelines::build(
                &loaded.guardrails,
                &[],
                &[],
                &loaded.middleware_configs,
            )
            .map_err(|es| {
                es.into_iter()
                    .map(|e| format!("{}: guardrails: {e}", loaded.label))
                    .collect::<Vec<_>>()
            })?;
            Some(Arc::new(p))
        };
        Ok(Snapshot {
            any_pipelines: guardrails.is_some() || pipelines.iter().any(Option::is_some),
            guardrails,
            pipelines,
            settings: loaded.settings.clone(),
            providers,
            table,
            tag_values,
            label: loaded.label.clone(),
            loaded_at_ms: catalog::discovery::now_ms(),
            warnings,
            overridden_store_rows,
            store_rows: store_rows.to_vec(),
        })
    }

    pub fn origin_counts(&self) -> OriginCounts {
        let mut c = OriginCounts::default();
        for vm in &self.table.models {
            match vm.origin {
                Origin::Config { .. } => c.config += 1,
                Origin::Env { .. } => c.env += 1,
                Origin::Store => c.store += 1,
            }
        }
        c
    }

    /// Availability of a model at a provider, from what is known right now.
    pub fn availability(&self, provider: usize, model: &str) -> Availability {
        let p = &self.providers[provider];
        if !p.config.usable() {
            return Availability::NoKey;
        }
        if p.config.kind == ProviderKind::Mock {
            return if p.configured.is_empty() || p.configured.contains(model) {
                Availability::Available
            } else {
                Availability::NotListed
            };
        }
        let listed = match self.settings.catalog_mode {
            CatalogMode::Merge => {
                p.configured.contains(model)
                    || p.state
                        .discovered
                        .load()
                        .models
                        .as_ref()
                        .is_some_and(|m| m.contains(model))
            }
            CatalogMode::Allowlist => p.configured.contains(model),
            CatalogMode::Fallback => match &p.state.discovered.load().models {
                Some(m) => m.contains(model),
                None => p.configured.contains(model),
            },
        };
        if !listed {
            return Availability::NotListed;
        }
        if p.addr().is_none() {
            return Availability::Unreachable;
        }
        Availability::Available
    }

    /// The first provider (declaration order) whose catalog lists a bare model id.
    pub fn locate(&self, model: &str) -> Option<usize> {
        (0..self.providers.len()).find(|i| {
            let p = &self.providers[*i];
            p.config.kind != ProviderKind::Mock
                && (p.configured.contains(model)
                    || p.state
                        .discovered
                        .load()
                        .models
                        .as_ref()
                        .is_some_and(|m| m.contains(model)))
        })
    }

    /// Every concrete model id a provider serves now, sorted.
    pub fn models_of(&self, provider: usize) -> Vec<String> {
        let p = &self.providers[provider];
        let discovered = p.state.discovered.load();
        let set: catalog::ModelSet = match (self.settings.catalog_mode, &discovered.models) {
            (CatalogMode::Allowlist, _) | (CatalogMode::Fallback, None) => p.configured.clone(),
            (CatalogMode::Fallback, Some(m)) => m.iter().cloned().collect(),
            (CatalogMode::Merge, found) => {
                let mut set = p.configured.clone();
                set.extend(found.iter().flat_map(|m| m.iter().cloned()));
                set
            }
        };
        let mut v: Vec<String> = set.into_iter().collect();
        v.sort();
        v
    }
}

fn literal_addr(p: &ProviderConfig) -> Option<SocketAddr> {
    let b = p.base.as_ref()?;
    let ip: std::net::IpAddr =
        b.host.parse().ok().or_else(|| {
            (b.host == "localhost").then_some(std::net::IpAddr::from([127, 0, 0, 1]))
        })?;
    Some(SocketAddr::new(ip, b.port))
}

/// The snapshot as routing conditions, plus observed health.
pub struct View<'a> {
    pub snap: &'a Snapshot,
    pub health: Option<&'a crate::health::Health>,
    pub now_ms: u64,
    /// The view plans a request that will be sent: a half-open breaker hands it the probe slot
    /// (or counts as open while another probe is out). Views that only list or explain leave
    /// the slot alone.
    pub claims_probes: bool,
    /// The probe slots this view took while planning: (virtual model, target, hold's end).
    pub probes: std::cell::RefCell<Vec<(usize, usize, u64)>>,
}

impl Conditions for View<'_> {
    fn availability(&self, provider: usize, model: &str) -> Availability {
        self.snap.availability(provider, model)
    }

    fn locate(&self, model: &str) -> Option<usize> {
        self.snap.locate(model)
    }

    fn target_state(&self, vm: usize, target: usize) -> TargetState {
        match self.health {
            Some(h) => {
                let (state, probe) =
                    h.target_state_claiming(self.snap, vm, target, self.now_ms, self.claims_probes);
                if let Some(until) = probe {
                    self.probes.borrow_mut().push((vm, target, until));
                }
                state
            }
            None => TargetState::default(),
        }
    }

    fn concrete_circuit_open(&self, provider: usize, model: &str) -> bool {
        self.health.is_some_and(|h| {
            let p = &self.snap.providers[provider].config;
            let name = crate::health::concrete::concrete_name(&p.name, model);
            h.concrete
                .is_open(&name, &p.breaker, self.now_ms, self.claims_probes)
        })
    }

    fn pinned(&self, vm: usize, session: &str) -> Option<usize> {
        self.health
            .and_then(|h| h.pinned(self.snap, vm, session, self.now_ms))
    }

    fn random(&self) -> u64 {
        fastrand::u64(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::env::Env;

    fn loaded(sources: &[&str]) -> LoadedConfig {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("c.yaml");
        let mut text =
            String::from("providers:\n  p:\n    type: mock\n    models: [a, b]\nvirtual_models:\n");
        for s in sources {
            text.push_str(&format!("  - source: {s}\n    targets: [p/a, p/b]\n"));
        }
        std::fs::write(&path, text).expect("the config is written");
        crate::config::load(Some(&path), &Env::default()).expect("the config loads")
    }

    fn position(snap: &Snapshot, source: &str) -> Option<u64> {
        snap.table.rotation(source)
    }

    #[test]
    fn a_reload_carries_each_rotation_on_where_it_stood() {
        let registry = StateRegistry::default();
        let first = Snapshot::build(&loaded(&["one", "two"]), &[], None, &registry).unwrap();
        for _ in 0..3 {
            first.table.models[0].counter.advance();
        }
        first.table.models[1].counter.advance();
        let second = Snapshot::build(
            &loaded(&["two", "one", "new"]),
            &[],
            Some(&first),
            &registry,
        )
        .unwrap();
        assert_eq!(position(&second, "one"), Some(3));
        assert_eq!(position(&second, "two"), Some(1));
        assert_eq!(position(&second, "new"), Some(0));
        // The two snapshots' rotations are separate from here on.
        second.table.models[1].counter.advance();
        assert_eq!(position(&second, "one"), Some(4));
        assert_eq!(position(&first, "one"), Some(3));
        let fresh = Snapshot::build(&loaded(&["one"]), &[], None, &registry).unwrap();
        assert_eq!(position(&fresh, "one"), Some(0));
        assert_eq!(position(&fresh, "missing"), None);
    }
}
