//! The routing table: virtual models with pre-built lookup maps.
//!
//! Built once per snapshot (precedence already applied), read by every request. Lookups are
//! hash-map gets on pre-trimmed keys; the table is never mutated after `Table::new`.

use std::collections::HashMap;

use super::model::{Kind, VirtualModel};
use super::user_path::{list_admits, UserPath};

#[derive(Debug, Default)]
pub struct Table {
    pub models: Vec<VirtualModel>,
    /// Provider instance names; a `Target.provider` indexes this.
    pub providers: Vec<String>,
    provider_index: HashMap<String, usize>,
    by_source: HashMap<String, usize>,
    by_slug: HashMap<String, usize>,
    policy_exact: HashMap<String, usize>,
    policy_provider: HashMap<String, usize>,
    policy_bare: HashMap<String, usize>,
    policy_root: Option<usize>,
    pub models_enabled_by_default: bool,
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
        models: Vec<VirtualModel>,
        providers: Vec<String>,
        models_enabled_by_default: bool,
    ) -> Table {
        let provider_index = providers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), i))
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
                    t.by_source.insert(vm.source.clone(), i);
                    if let Some(slug) = &vm.slug {
                        t.by_slug.insert(slug.clone(), i);
                    }
                }
                Kind::Policy => {
                    let s = vm.source.as_str();
                    if s == "/" || s == "*" {
                        t.policy_root = Some(i);
                    } else if let Some(p) = s.strip_suffix('/') {
                        t.policy_provider.insert(p.to_string(), i);
                    } else if s.contains('/') {
                        t.policy_exact.insert(s.to_string(), i);
                    } else {
                        t.policy_bare.insert(s.to_string(), i);
                    }
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
        let i = self
            .by_source
            .get(model)
            .or_else(|| self.by_slug.get(model))
            .copied()?;
        self.models[i].enabled.then_some(i)
    }

    /// A redirect by source or slug, enabled or not (for explanations and listings).
    pub fn redirect_any(&self, model: &str) -> Option<usize> {
        self.by_source
            .get(model)
            .or_else(|| self.by_slug.get(model))
            .copied()
    }

    /// The most specific access policy for a concrete model:
    /// exact `provider/model` > `provider/` > bare model id > `/`.
    pub fn policy_for(&self, provider: &str, model: &str) -> Option<usize> {
        if !self.policy_exact.is_empty() {
            // Avoids building the joined key when there is nothing to find.
            let key = format!("{provider}/{model}");
            if let Some(i) = self.policy_exact.get(&key) {
                return Some(*i);
            }
        }
        self.policy_provider
            .get(provider)
            .or_else(|| self.policy_bare.get(model))
            .copied()
            .or(self.policy_root)
    }

    /// Whether the caller may use a concrete model.
    pub fn access(&self, provider: &str, model: &str, caller: Option<&UserPath>) -> Access {
        match self.policy_for(provider, model) {
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
