//! The `check` and `resolve` commands: explain the configuration and routing decisions without
//! sending anything upstream.

use std::fmt::Write as _;

use crate::config::providers::ProviderKind;
use crate::routing::model::{Kind, Operation};
use crate::routing::plan::{self, Availability, Conditions, TargetState};
use crate::routing::user_path::UserPath;
use crate::snapshot::Snapshot;

/// Conditions for offline explanations: no catalog was fetched, so a model of a provider with a
/// key counts as available; health is fresh.
pub struct Offline<'a> {
    pub snap: &'a Snapshot,
}

impl Conditions for Offline<'_> {
    fn availability(&self, provider: usize, _model: &str) -> Availability {
        if self.snap.providers[provider].config.usable() {
            Availability::Available
        } else {
            Availability::NoKey
        }
    }

    fn locate(&self, model: &str) -> Option<usize> {
        self.snap.locate(model)
    }

    fn target_state(&self, _vm: usize, _t: usize) -> TargetState {
        TargetState::default()
    }
}

fn availability_note(snap: &Snapshot, provider: Option<usize>, model: &str) -> String {
    let Some(p) = provider else {
        return "provider found at request time from the catalogs".to_string();
    };
    let p = &snap.providers[p];
    if !p.config.usable() {
        return "unavailable: provider has no API key".to_string();
    }
    if p.config.kind == ProviderKind::Mock || p.configured.contains(model) {
        return "available".to_string();
    }
    "available once the provider's /models lists it".to_string()
}

/// The table `modelgate check` prints.
pub fn check_table(snap: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config: {}", snap.label);
    let _ = writeln!(out, "providers:");
    if snap.providers.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for p in &snap.providers {
        let base = p
            .config
            .base
            .as_ref()
            .map_or("local".to_string(), |b| b.display());
        let key = if p.config.kind == ProviderKind::Mock || !p.config.kind.needs_key() {
            "no key needed"
        } else if p.config.api_key.is_some() {
            "key set"
        } else {
            "NO KEY: models unavailable"
        };
        let _ = writeln!(
            out,
            "  {:<16} type={:<10} {} ({}, from {}, {} configured models)",
            p.config.name,
            p.config.kind.name(),
            base,
            key,
            p.config.origin,
            p.configured.len()
        );
    }
    let _ = writeln!(out, "virtual models:");
    if snap.table.models.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for vm in &snap.table.models {
        let mut flags = Vec::new();
        if !vm.enabled {
            flags.push("disabled".to_string());
        }
        if let Some(s) = &vm.slug {
            flags.push(format!("slug={s}"));
        }
        if let Some(up) = &vm.user_paths {
            flags.push(format!(
                "user_paths={}",
                up.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")
            ));
        }
        let kind = match vm.kind {
            Kind::Redirect => format!("redirect strategy={}", vm.strategy.name()),
            Kind::Policy => "access policy".to_string(),
        };
        let _ = writeln!(
            out,
            "  {:<24} origin={:<6} {}{}",
            vm.source,
            vm.origin.label(),
            kind,
            if flags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", flags.join(" "))
            }
        );
        for t in &vm.targets {
            let _ = writeln!(
                out,
                "      -> {:<36} weight={} {}",
                t.name,
                t.weight,
                availability_note(snap, t.provider, &t.model)
            );
        }
    }
    if !snap.warnings.is_empty() {
        let _ = writeln!(out, "warnings:");
        for w in &snap.warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    out
}

/// The explanation `modelgate resolve` prints for `n` consecutive requests.
pub fn explain(snap: &Snapshot, model: &str, user_path: Option<&UserPath>, n: usize) -> String {
    let mut out = String::new();
    let cond = Offline { snap };
    let req = plan::Request {
        model,
        provider: None,
        user_path,
        operation: Operation::Chat,
        metadata: None,
        session_key: None,
    };
    if let Some(vi) = snap.table.redirect_any(model.trim()) {
        let vm = &snap.table.models[vi];
        let _ = writeln!(
            out,
            "{model}: virtual model from {} ({}), strategy {}{}",
            vm.origin.location(),
            vm.origin.label(),
            vm.strategy.name(),
            if vm.enabled {
                ""
            } else {
                ", DISABLED: the literal name is used"
            }
        );
        for (ti, (provider, r)) in plan::eligibility(&snap.table, vi, &req, &cond)
            .iter()
            .enumerate()
        {
            let t = &vm.targets[ti];
            let why = match r {
                Ok(_) => format!(
                    "eligible ({})",
                    availability_note(snap, *provider, &t.model)
                ),
                Err(e) => format!("not eligible: {}", e.describe()),
            };
            let price = t
                .price
                .map_or("unpriced".to_string(), |p| format!("${p}/Mtok in+out"));
            let _ = writeln!(
                out,
                "  target {:<36} weight={} priority={} {} {}",
                t.name,
                t.weight,
                if t.priority == i64::MAX {
                    "-".to_string()
                } else {
                    t.priority.to_string()
                },
                price,
                why
            );
        }
    } else {
        let _ = writeln!(
            out,
            "{model}: no virtual model by that name; resolved as a concrete model"
        );
    }
    for i in 1..=n {
        match plan::plan(&snap.table, &req, &cond) {
            Ok(p) => {
                let names: Vec<String> = p
                    .attempts
                    .iter()
                    .map(|a| format!("{}/{}", snap.providers[a.provider].config.name, a.model))
                    .collect();
                let _ = writeln!(
                    out,
                    "request {i}: {}{}",
                    names[0],
                    if names.len() > 1 {
                        format!("   fallbacks: {}", names[1..].join(" -> "))
                    } else {
                        String::new()
                    }
                );
            }
            Err(e) => {
                let _ = writeln!(out, "request {i}: error: {e}");
            }
        }
    }
    out
}
