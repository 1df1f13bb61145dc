//! Concrete models per provider and their prices.
//!
//! A provider's catalog is its configured `models` united with what its `/models` listing
//! returned (`allowlist` mode: configured only). Discovered lists live in `ProviderState`, which
//! survives reloads; `discovery` fills them off the request path. Reads are one atomic load.

pub mod discovery;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use once_cell::sync::Lazy;

use crate::config::providers::ProviderConfig;
use crate::config::schema::{ModelSpec, PricingSpec};

/// Looked up for every answered request (its cost); foldhash, as the keys are compiled in.
static BUNDLED_PRICES: Lazy<foldhash::HashMap<String, (f64, f64)>> = Lazy::new(|| {
    bundled()
        .filter_map(|(k, a)| Some((k, (a.first()?.as_f64()?, a.get(1)?.as_f64()?))))
        .collect()
});

/// Context windows of the bundled table's models, in tokens.
static BUNDLED_WINDOWS: Lazy<foldhash::HashMap<String, u64>> = Lazy::new(|| {
    bundled()
        .filter_map(|(k, a)| Some((k, a.get(2)?.as_u64()?)))
        .collect()
});

/// The bundled table's rows: `model -> [input price, output price, context window]`.
fn bundled() -> impl Iterator<Item = (String, Vec<serde_json::Value>)> {
    let raw: HashMap<String, serde_json::Value> =
        serde_json::from_str(include_str!("prices.json")).unwrap_or_default();
    raw.into_iter().filter_map(|(k, v)| match v {
        serde_json::Value::Array(a) => Some((k, a)),
        _ => None,
    })
}

/// A model's context window in tokens: the configured `context_window`, else the bundled
/// table's; `None` when neither knows it.
pub fn context_window(provider: &ProviderConfig, model: &str) -> Option<u64> {
    provider
        .models
        .iter()
        .find(|m| m.id == model)
        .and_then(|m| m.context_window)
        .or_else(|| BUNDLED_WINDOWS.get(model).copied())
}

/// Input + output USD per million tokens for a model: config pricing, else the bundled table.
pub fn price(provider: &ProviderConfig, model: &str) -> Option<PricingSpec> {
    if let Some(p) = provider
        .models
        .iter()
        .find(|m| m.id == model)
        .and_then(|m| m.pricing)
    {
        return Some(p);
    }
    bundled_price(model)
}

/// Every provider's configured models by id, for pricing many targets at once (a snapshot of
/// 100,000 virtual models prices 200,000 targets; `price` and `context_window` scan the
/// provider's list each). The first entry of an id wins, as in those scans.
pub struct ModelIndex<'a> {
    by_provider: Vec<foldhash::HashMap<&'a str, &'a ModelSpec>>,
}

impl<'a> ModelIndex<'a> {
    pub fn new(providers: &'a [ProviderConfig]) -> ModelIndex<'a> {
        let by_provider = providers
            .iter()
            .map(|p| {
                let mut m =
                    foldhash::HashMap::with_capacity_and_hasher(p.models.len(), Default::default());
                for spec in &p.models {
                    m.entry(spec.id.as_str()).or_insert(spec);
                }
                m
            })
            .collect();
        ModelIndex { by_provider }
    }

    /// `price(&providers[provider], model)`.
    pub fn price(&self, provider: usize, model: &str) -> Option<PricingSpec> {
        let configured = self.configured(provider, model).and_then(|m| m.pricing);
        configured.or_else(|| bundled_price(model))
    }

    /// `context_window(&providers[provider], model)`.
    pub fn context_window(&self, provider: usize, model: &str) -> Option<u64> {
        self.configured(provider, model)
            .and_then(|m| m.context_window)
            .or_else(|| BUNDLED_WINDOWS.get(model).copied())
    }

    fn configured(&self, provider: usize, model: &str) -> Option<&'a ModelSpec> {
        self.by_provider.get(provider)?.get(model).copied()
    }
}

fn bundled_price(model: &str) -> Option<PricingSpec> {
    BUNDLED_PRICES.get(model).map(|(i, o)| PricingSpec {
        input_per_mtok: *i,
        output_per_mtok: *o,
    })
}

/// A set of model ids. Hashed with foldhash: a membership test runs for every target of every
/// request, and the ids come from the configuration and the provider's own model list.
pub type ModelSet = std::collections::HashSet<String, foldhash::fast::RandomState>;

/// What discovery last learned about a provider.
#[derive(Debug, Default, Clone)]
pub struct Discovered {
    pub models: Option<ModelSet>,
    pub addr: Option<SocketAddr>,
    /// The last refresh failed; `models` is the previous list.
    pub stale: bool,
    pub error: Option<String>,
    pub refreshed_at_ms: Option<u64>,
}

/// Per-provider state that survives reloads (keyed by provider name).
#[derive(Debug, Default)]
pub struct ProviderState {
    pub discovered: ArcSwap<Discovered>,
    /// An on-demand refresh is running: at most one at a time per provider.
    on_demand_running: AtomicBool,
    /// The names on-demand refreshes were run for, and when: a name is looked up once a
    /// minute, however often it is asked for. Locked only on a request whose model no
    /// provider lists.
    asked: std::sync::Mutex<HashMap<String, u64>>,
}

/// How long a name that started an on-demand refresh starts no other.
pub const ON_DEMAND_NAME_MS: u64 = 60_000;
/// The names remembered per provider; past it the oldest half is forgotten.
const ON_DEMAND_NAMES: usize = 1024;

impl ProviderState {
    pub fn addr(&self) -> Option<SocketAddr> {
        self.discovered.load().addr
    }

    /// Whether a request naming `name` may start an on-demand refresh now: none is running
    /// for this provider, and `name` started none in the last minute. A `true` must be
    /// followed by `on_demand_done` when the refresh ends.
    pub fn claim_on_demand(&self, name: &str, now_ms: u64) -> bool {
        let mut asked = match self.asked.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if asked
            .get(name)
            .is_some_and(|at| now_ms.saturating_sub(*at) < ON_DEMAND_NAME_MS)
        {
            return false;
        }
        if self
            .on_demand_running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        if asked.len() >= ON_DEMAND_NAMES {
            asked.retain(|_, at| now_ms.saturating_sub(*at) < ON_DEMAND_NAME_MS);
            if asked.len() >= ON_DEMAND_NAMES {
                let mut times: Vec<u64> = asked.values().copied().collect();
                times.sort_unstable();
                let cut = times[times.len() / 2];
                asked.retain(|_, at| *at > cut);
            }
        }
        asked.insert(name.to_string(), now_ms);
        true
    }

    /// The on-demand refresh a `claim_on_demand` started has ended.
    pub fn on_demand_done(&self) {
        self.on_demand_running.store(false, Ordering::Release);
    }
}

/// Registry of provider states by name, consulted when a snapshot is built.
#[derive(Debug, Default)]
pub struct StateRegistry {
    states: std::sync::Mutex<HashMap<String, Arc<ProviderState>>>,
}

impl StateRegistry {
    /// The state for `name`, created on first use. Build-time only, never on the request path.
    pub fn get(&self, name: &str) -> Arc<ProviderState> {
        let mut m = match self.states.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        m.entry(name.to_string()).or_default().clone()
    }
}

/// The configured model ids of a provider, as a set.
pub fn configured_set(p: &ProviderConfig) -> ModelSet {
    p.models.iter().map(|m| m.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_on_demand_refresh_runs_once_at_a_time_and_once_a_minute_per_name() {
        let s = ProviderState::default();
        assert!(s.claim_on_demand("typo", 1_000));
        // One at a time.
        assert!(!s.claim_on_demand("other", 1_001));
        s.on_demand_done();
        // Another name may start one at once; the same name only after a minute.
        assert!(s.claim_on_demand("other", 1_002));
        s.on_demand_done();
        assert!(!s.claim_on_demand("typo", 2_000));
        assert!(s.claim_on_demand("typo", 1_000 + ON_DEMAND_NAME_MS));
        s.on_demand_done();
        // A flood of names stays bounded.
        for i in 0..3 * ON_DEMAND_NAMES {
            assert!(s.claim_on_demand(&format!("n{i}"), 100_000 + i as u64));
            s.on_demand_done();
        }
        assert!(s.asked.lock().unwrap().len() <= ON_DEMAND_NAMES);
    }

    #[test]
    fn the_index_prices_like_the_scans() {
        let yaml = "p:\n  type: openai_compatible\n  base_url: http://127.0.0.1:9/v1\n  api_key: k\n  models:\n    - {id: a, pricing: {input_per_mtok: 1, output_per_mtok: 2}, context_window: 10}\n    - {id: a, pricing: {input_per_mtok: 7, output_per_mtok: 7}}\n    - gpt-4o-mini\n    - b\n";
        let specs: std::collections::BTreeMap<String, crate::config::schema::ProviderSpec> =
            serde_yaml::from_str(yaml).unwrap();
        let mut warnings = Vec::new();
        let providers = crate::config::providers::resolve(
            &specs,
            "c.yaml",
            &crate::config::env::Env::default(),
            &Default::default(),
            &mut warnings,
        )
        .unwrap();
        let index = ModelIndex::new(&providers);
        for model in ["a", "gpt-4o-mini", "b", "not-listed", "gpt-4o"] {
            assert_eq!(
                index.price(0, model),
                price(&providers[0], model),
                "{model}"
            );
            assert_eq!(
                index.context_window(0, model),
                context_window(&providers[0], model),
                "{model}"
            );
        }
        assert_eq!(index.price(0, "a").map(|p| p.input_per_mtok), Some(1.0));
        assert_eq!(index.context_window(0, "a"), Some(10));
        assert_eq!(index.price(1, "a"), None);
    }

    #[test]
    fn bundled_table_loads() {
        assert!(BUNDLED_PRICES.len() > 10);
        assert_eq!(BUNDLED_PRICES.get("gpt-4o-mini"), Some(&(0.15, 0.6)));
        assert_eq!(BUNDLED_WINDOWS.get("gpt-4o-mini"), Some(&128_000));
        assert_eq!(BUNDLED_WINDOWS.len(), BUNDLED_PRICES.len());
    }
}
