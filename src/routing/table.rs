//! The routing table: virtual models with pre-built lookup maps.
//!
//! Built once per snapshot (precedence already applied), read by every request. Lookups are
//! hash-map gets on pre-trimmed keys; the table is never mutated after `Table::new`.
//!
//! The maps hash with foldhash rather than SipHash: their keys come from the configuration, not
//! from clients, so flooding them is not possible, and a lookup is the largest single cost of
//! planning a request. Redirects are found by source through `Sources`, which holds only each
//! one's index (see there). Other keys are `SmolStr`s, so a name up to 23 bytes is compared
//! inside the map's own bucket rather than behind one more pointer. For the same reason the
//! access policy of every target whose provider is declared is resolved here, once, into
//! `Target::policy`, instead of per request.

use std::hash::BuildHasher;

use foldhash::HashMap;
use hashbrown::HashTable;
use smol_str::SmolStr;

use super::fallback::FallbackRules;
use super::model::{Kind, PolicyRef, VirtualModel};
use super::user_path::{list_admits, UserPath};

#[derive(Debug, Default)]
pub struct Table {
    pub models: Vec<VirtualModel>,
    /// Provider instance names; a `Target.provider` indexes this.
    pub providers: Vec<String>,
    provider_index: HashMap<SmolStr, usize>,
    by_source: Sources,
    by_slug: HashMap<SmolStr, usize>,
    /// Exact `provider/model` policies, keyed by declared provider, then model id.
    policy_exact: HashMap<SmolStr, HashMap<SmolStr, usize>>,
    policy_provider: HashMap<SmolStr, usize>,
    policy_bare: HashMap<SmolStr, usize>,
    policy_root: Option<usize>,
    pub models_enabled_by_default: bool,
    /// Fallbacks of concrete models requested directly (GoModel's `fallback` rules).
    pub fallbacks: FallbackRules,
}

/// Redirects by source, as indices into the table's models.
///
/// A slot is the model's index alone (4 bytes, where a `SmolStr` key and its value take 32), and
/// a lookup compares the requested name with the model's own `source`, which lies in the cache
/// lines the plan reads next anyway. The slots of 100,000 names take 512 KiB rather than 4 MiB,
/// so they stay in cache, and a plan waits on one memory read fewer (BENCHMARKS.md, "Routing
/// 100,000 virtual models, and huge pages off").
#[derive(Debug, Default)]
struct Sources {
    slots: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

impl Sources {
    /// Indexes `models[i]` by its source; a later model of the same source replaces an earlier.
    /// A table larger than a `u32` indexes is not indexed (no configuration comes near).
    fn insert(&mut self, models: &[VirtualModel], i: usize) {
        let Ok(index) = u32::try_from(i) else {
            return;
        };
        let source = models[i].source.as_str();
        let hash = self.hasher.hash_one(source);
        let hasher = &self.hasher;
        match self.slots.entry(
            hash,
            |&j| models[j as usize].source == source,
            |&j| hasher.hash_one(models[j as usize].source.as_str()),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut slot) => *slot.get_mut() = index,
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(index);
            }
        }
    }

    fn get(&self, models: &[VirtualModel], name: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(name);
        self.slots
            .find(hash, |&j| models[j as usize].source == name)
            .map(|&j| j as usize)
    }
}

/// Why a concrete model is refused to a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// A policy covers the model but not this caller.
    Denied,
    /// A disabled policy, or no policy while models are off by default.
    Disabled,
}

impl Table {
    pub fn new(
        mut models: Vec<VirtualModel>,
        providers: Vec<String>,
        models_enabled_by_default: bool,
    ) -> Table {
        let provider_index = providers
            .iter()
            .enumerate()
            .map(|(i, p)| (SmolStr::from(p), i))
            .collect();
        let mut t = Table {
            providers,
            provider_index,
            models_enabled_by_default,
            ..Table::default()
        };
        for (i, vm) in models.iter().enumerate() {
            match vm.kind {
                Kind::Redirect => {
                    t.by_source.insert(&models, i);
                    if let Some(slug) = &vm.slug {
                        t.by_slug.insert(SmolStr::from(slug), i);
                    }
                }
                Kind::Policy => {
                    let s = vm.source.as_str();
                    if s == "/" || s == "*" {
                        t.policy_root = Some(i);
                    } else if let Some(p) = s.strip_suffix('/') {
                        t.policy_provider.insert(SmolStr::from(p), i);
                    } else if s.contains('/') {
                        // Split after every declared provider the source starts with, so that
                        // a lookup by (provider, model) needs no joined key.
                        for p in &t.providers {
                            if let Some(m) =
                                s.strip_prefix(p.as_str()).and_then(|r| r.strip_prefix('/'))
                            {
                                t.policy_exact
                                    .entry(SmolStr::from(p))
                                    .or_default()
                                    .insert(SmolStr::from(m), i);
                            }
                        }
                    } else {
                        t.policy_bare.insert(SmolStr::from(s), i);
                    }
                }
            }
        }
        for vm in models.iter_mut() {
            for x in vm.targets.iter_mut() {
                if let Some(p) = x.provider {
                    x.policy = PolicyRef::resolved(t.policy_for(&t.providers[p], &x.model));
                }
            }
        }
        t.models = models;
        t
    }

    pub fn provider(&self, name: &str) -> Option<usize> {
        self.provider_index.get(name).copied()
    }

    /// An enabled redirect by source, then by slug.
    pub fn redirect(&self, model: &str) -> Option<usize> {
        let i = self.redirect_any(model)?;
        self.models[i].enabled.then_some(i)
    }

    /// A redirect by source or slug, enabled or not (for explanations and listings).
    pub fn redirect_any(&self, model: &str) -> Option<usize> {
        self.by_source
            .get(&self.models, model)
            .or_else(|| self.by_slug.get(model).copied())
    }

    /// Where the rotation of the redirect declared as `source` stands, for a reload to carry
    /// it on from there.
    pub fn rotation(&self, source: &str) -> Option<u64> {
        let i = self.by_source.get(&self.models, source)?;
        Some(self.models[i].counter.position())
    }

    /// The most specific access policy for a concrete model:
    /// exact `provider/model` > `provider/` > bare model id > `/`.
    pub fn policy_for(&self, provider: &str, model: &str) -> Option<usize> {
        if self.policy_root.is_none()
            && self.policy_exact.is_empty()
            && self.policy_provider.is_empty()
            && self.policy_bare.is_empty()
        {
            // No policies at all (most configs): three hash lookups saved per target at build
            // time and per concrete request.
            return None;
        }
        self.policy_exact
            .get(provider)
            .and_then(|m| m.get(model))
            .or_else(|| self.policy_provider.get(provider))
            .or_else(|| self.policy_bare.get(model))
            .copied()
            .or(self.policy_root)
    }

    /// Whether the caller may use a concrete model.
    pub fn access(&self, provider: &str, model: &str, caller: Option<&UserPath>) -> Access {
        self.access_by(self.policy_for(provider, model), caller)
    }

    /// `access` for target `ti` of redirect `vi`, served by `provider` (an index into
    /// `providers`), with the policy resolved at build time when there is one.
    pub fn target_access(
        &self,
        vi: usize,
        ti: usize,
        provider: usize,
        model: &str,
        caller: Option<&UserPath>,
    ) -> Access {
        let t = &self.models[vi].targets[ti];
        let policy = match t.policy.get() {
            Some(resolved) if t.provider == Some(provider) => resolved,
            _ => self.policy_for(&self.providers[provider], model),
        };
        self.access_by(policy, caller)
    }

    fn access_by(&self, policy: Option<usize>, caller: Option<&UserPath>) -> Access {
        match policy {
            None if self.models_enabled_by_default => Access::Allowed,
            None => Access::Disabled,
            Some(i) => {
                let p = &self.models[i];
                if !p.enabled {
                    Access::Disabled
                } else {
                    match &p.user_paths {
                        None => Access::Allowed,
                        Some(list) if list_admits(list, caller) => Access::Allowed,
                        Some(_) => Access::Denied,
                    }
                }
            }
        }
    }
}
