//! The `check` and `resolve` commands: explain the configuration and routing decisions without
//! sending anything upstream.

use std::fmt::Write as _;

use crate::config::providers::ProviderKind;
use crate::config::settings::Settings;
use crate::routing::error_class::ErrorClass;
use crate::routing::model::{Kind, Operation, Strategy, Target};
use crate::routing::plan::{self, Availability, Conditions, TargetState};
use crate::routing::user_path::{list_admits, UserPath};
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
/// The admin store line of `check`: which store, where, and the revision it is at (`store` is
/// None for a SQLite file not created yet).
pub fn store_line(store: Option<&dyn crate::store::Store>, settings: &Settings) -> String {
    match store {
        None => format!(
            "store: sqlite at {} (no file yet; `serve` creates it)\n",
            settings.sqlite_path
        ),
        Some(s) => format!(
            "store: {} at {} (revision {})\n",
            s.kind(),
            s.location(),
            s.health().revision()
        ),
    }
}

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
    for (vi, vm) in snap.table.models.iter().enumerate() {
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
        pipelines_lines(&mut out, snap, vi, "      ");
    }
    // A GoModel file: what was honoured, then what was ignored (those warnings only here).
    let gomodel = &snap.settings;
    if !gomodel.gomodel_honoured.is_empty() {
        let _ = writeln!(out, "GoModel settings honoured:");
        for key in &gomodel.gomodel_honoured {
            let _ = writeln!(out, "  {key}");
        }
    }
    if !gomodel.gomodel_ignored.is_empty() {
        let _ = writeln!(out, "GoModel settings ignored:");
        for line in &gomodel.gomodel_ignored {
            let _ = writeln!(out, "  {line}");
        }
    }
    let others: Vec<&String> = snap
        .warnings
        .iter()
        .filter(|w| !gomodel.gomodel_ignored.contains(w))
        .collect();
    if !others.is_empty() {
        let _ = writeln!(out, "warnings:");
        for w in others {
            let _ = writeln!(out, "  {w}");
        }
    }
    out
}

/// A virtual model's middleware pipelines, one line per non-empty phase.
fn pipelines_lines(out: &mut String, snap: &Snapshot, vi: usize, indent: &str) {
    let Some(p) = snap.pipelines.get(vi).and_then(Option::as_ref) else {
        return;
    };
    for (phase, names) in p.describe() {
        if !names.is_empty() {
            let _ = writeln!(out, "{indent}{}: {}", phase.list_name(), names.join(", "));
        }
    }
}

/// What the virtual model's request middleware would do with the sample body (or an empty
/// chat request): the model its `router` rules pick, or the `guard` that blocks it.
fn request_phase_line(out: &mut String, snap: &Snapshot, vi: usize, q: &Question<'_>) {
    let Some(p) = snap
        .pipelines
        .get(vi)
        .and_then(Option::as_ref)
        .filter(|p| p.has_request())
    else {
        return;
    };
    let mut body = crate::middleware::Body::from(
        q.body
            .cloned()
            .unwrap_or_else(|| serde_json::json!({"messages": [{"role": "user", "content": ""}]})),
    );
    body.insert("model", serde_json::Value::String(q.model.to_string()));
    let metadata = q.metadata.and_then(|m| serde_json::to_vec(m).ok());
    let facts = crate::middleware::RequestFacts {
        operation: Operation::Chat,
        metadata: metadata.as_deref(),
    };
    let sample = if q.body.is_some() {
        "this body"
    } else {
        "an empty chat request"
    };
    match p.run_request(&mut body, &facts) {
        Ok(()) => {
            let model = body.get("model").and_then(|m| m.as_str());
            let model = model.as_deref().unwrap_or("");
            let _ = writeln!(out, "  request middleware on {sample}: model {model}");
        }
        Err(b) => {
            let _ = writeln!(
                out,
                "  request middleware on {sample}: blocked by request_middleware[{}]: {}",
                b.index, b.message
            );
        }
    }
}

/// What `modelgate resolve` is asked about.
pub struct Question<'a> {
    pub model: &'a str,
    pub user_path: Option<&'a UserPath>,
    /// Request metadata, for `metadata_match` (`X-Modelgate-Metadata` on a real request).
    pub metadata: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// How many consecutive requests to plan.
    pub n: usize,
    /// A sample request body for the request middleware (`--body`).
    pub body: Option<&'a serde_json::Value>,
    /// The operation planned (`--operation`, default chat).
    pub operation: Operation,
    /// Where gateways share steering state (Redis URL without its password and key prefix),
    /// when `REDIS_URL` is set.
    pub steering_shared_at: Option<&'a str>,
}

/// The explanation `modelgate resolve` prints: the virtual model and its settings, every
/// target's eligibility and why, then for each of `n` consecutive requests the target it would
/// go to, why that one, and the fallback order.
pub fn explain(snap: &Snapshot, q: &Question<'_>) -> String {
    let mut out = String::new();
    let cond = Offline { snap };
    let req = plan::Request {
        model: q.model,
        provider: None,
        user_path: q.user_path,
        operation: q.operation,
        metadata: q.metadata,
        session_key: None,
        input_tokens: None,
    };
    let vi = snap.table.redirect_any(q.model.trim());
    let mut checks = Vec::new();
    // Why the virtual model would not apply to this caller, if it would not.
    let mut skipped: Option<String> = None;
    if let Some(vi) = vi {
        let vm = &snap.table.models[vi];
        let _ = writeln!(
            out,
            "{}: virtual model from {} ({}), strategy {}",
            q.model,
            vm.origin.location(),
            vm.origin.label(),
            vm.strategy.name(),
        );
        let affinity = match (vm.uses_affinity(), vm.session.prefix_messages) {
            (true, Some(n)) => format!(
                "on (key: prefix, the system prompt and first {n} message(s); ttl {} s)",
                vm.session.ttl_seconds
            ),
            (true, None) => format!(
                "on (headers {}, ttl {} s)",
                vm.session.headers.join(", "),
                vm.session.ttl_seconds
            ),
            (false, _) if vm.session.enabled => {
                format!("not used by strategy {}", vm.strategy.name())
            }
            (false, _) => "off".to_string(),
        };
        let _ = writeln!(out, "  session affinity: {affinity}");
        if let (true, Some(n), Some(body)) =
            (vm.uses_affinity(), vm.session.prefix_messages, q.body)
        {
            let bytes = serde_json::to_vec(body).unwrap_or_default();
            let key = crate::proxy::prompt::prefix_key(&bytes, n)
                .map_or("none (no system prompt or messages)".to_string(), |k| {
                    format!("prefix:{k:016x}")
                });
            let _ = writeln!(out, "  affinity key of the sample body: {key}");
        }
        let _ = writeln!(out, "  hedge: {}", hedge_line(vm.hedge.as_deref().copied()));
        let _ = writeln!(
            out,
            "  rate-limit steering: {}",
            steer_line(vm.steer.min_remaining_fraction, q.steering_shared_at)
        );
        pipelines_lines(&mut out, snap, vi, "  ");
        request_phase_line(&mut out, snap, vi, q);
        if let Some(types) = &vm.model_types {
            let names: Vec<&str> = types.iter().map(|t| t.name()).collect();
            let _ = writeln!(out, "  model_types: {}", names.join(", "));
        }
        if let Some(paths) = &vm.user_paths {
            let names: Vec<&str> = paths.iter().map(|p| p.as_str()).collect();
            let caller = q.user_path.map_or("(none)", |p| p.as_str());
            let covered = list_admits(paths, q.user_path);
            let _ = writeln!(
                out,
                "  user_paths: {} (caller {caller}: {})",
                names.join(", "),
                if covered { "covered" } else { "not covered" }
            );
            if !covered {
                skipped = Some(format!("caller {caller} is outside its user_paths"));
            }
        }
        if !vm.enabled {
            skipped = Some("it is disabled".to_string());
        }
        checks = plan::eligibility(&snap.table, vi, &req, &cond);
        for (ti, (provider, r)) in checks.iter().enumerate() {
            let t = &vm.targets[ti];
            let unsupported = provider.and_then(|p| serves(snap, Some(t), p, q.operation).err());
            let why = match (r, unsupported) {
                (Ok(_), Some(u)) => format!("not eligible for {}: {u}", q.operation.name()),
                (Ok(_), None) => format!(
                    "eligible ({})",
                    availability_note(snap, *provider, &t.model)
                ),
                (Err(e), _) => format!("not eligible: {}", e.describe()),
            };
            let price = t
                .price
                .map_or("unpriced".to_string(), |p| format!("${p}/Mtok in+out"));
            let _ = writeln!(
                out,
                "  target {:<36} weight={} priority={} {} {}{}",
                t.name,
                t.weight,
                if t.priority == i64::MAX {
                    "-".to_string()
                } else {
                    t.priority.to_string()
                },
                price,
                why,
                if t.fallback_candidate {
                    ""
                } else {
                    " [never a fallback]"
                }
            );
            let _ = writeln!(out, "    on failure: {}", class_rules(t));
        }
        let capable = |ti: usize, p: &Option<usize>| {
            p.is_some_and(|p| serves(snap, Some(&vm.targets[ti]), p, q.operation).is_ok())
        };
        if skipped.is_none()
            && checks
                .iter()
                .enumerate()
                .all(|(ti, (p, r))| r.is_err() || !capable(ti, p))
        {
            skipped = Some("no target is eligible".to_string());
        }
        if let Some(why) = &skipped {
            let _ = writeln!(
                out,
                "  not applied: {why}; the literal name {:?} is resolved instead",
                q.model.trim()
            );
        }
    } else {
        let _ = writeln!(
            out,
            "{}: no virtual model by that name; resolved as a concrete model",
            q.model
        );
    }
    for i in 1..=q.n {
        // As the gateway does: attempts whose provider cannot serve the operation are dropped.
        let planned = plan::plan(&snap.table, &req, &cond).map(|mut p| {
            let vm = p.virtual_model;
            p.attempts.retain(|a| {
                let t = vm
                    .zip(a.target)
                    .map(|(vi, ti)| &snap.table.models[vi].targets[ti]);
                serves(snap, t, a.provider, q.operation).is_ok()
            });
            p
        });
        match planned {
            Ok(p) if p.attempts.is_empty() => {
                let _ = writeln!(
                    out,
                    "request {i}: error: no target of {} can serve {} requests",
                    q.model.trim(),
                    q.operation.name()
                );
            }
            Ok(p) => {
                let names: Vec<String> = p
                    .attempts
                    .iter()
                    .map(|a| format!("{}/{}", snap.providers[a.provider].config.name, a.model))
                    .collect();
                let why = match (p.virtual_model, p.attempts[0].target) {
                    (Some(vi), Some(ti)) => pick_reason(snap, vi, ti, &checks),
                    _ => match &skipped {
                        Some(s) => format!("virtual model not applied: {s}"),
                        None => "concrete model".to_string(),
                    },
                };
                let _ = writeln!(
                    out,
                    "request {i}: {}  ({why}){}",
                    names[0],
                    if names.len() > 1 {
                        format!("   fallbacks: {}", names[1..].join(" -> "))
                    } else {
                        "   fallbacks: none".to_string()
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

/// A target's failure rules: its fallback statuses and error classes, and its context window.
fn class_rules(t: &Target) -> String {
    let statuses: Vec<String> = t.fallback_on.iter().map(u16::to_string).collect();
    let classes: Vec<&str> = t
        .extras()
        .fallback_on_errors
        .iter()
        .map(|c| c.name())
        .collect();
    let mut line = format!("fall back on status {}", statuses.join(", "));
    if !classes.is_empty() {
        line.push_str(&format!(" or error class {}", classes.join(", ")));
    }
    if t.extras()
        .fallback_on_errors
        .contains(&ErrorClass::ContextLengthExceeded)
    {
        line.push_str(" (context_length_exceeded: only to a larger known window)");
    }
    match t.context_window {
        Some(w) => line.push_str(&format!("; context window {w} tokens")),
        None => line.push_str("; context window unknown"),
    }
    line
}

/// The hedge settings, as `resolve` prints them.
fn hedge_line(h: Option<crate::routing::model::HedgePolicy>) -> String {
    match h {
        None => "off".to_string(),
        Some(h) => format!(
            "after {} ms without an answer header, {} extra request(s) to the next target; budget {}% of requests per minute",
            h.after_ms, h.max_extra, h.budget_percent
        ),
    }
}

/// The steering rule, as `resolve` prints it, and where the observed state lives (in the
/// running gateways: `resolve` sends nothing and has none); `shared_at` names the Redis that
/// shares it.
fn steer_line(min: f64, shared_at: Option<&str>) -> String {
    let low = if min > 0.0 {
        format!(
            "a target under {}% of its announced rate limit is tried last until the limit resets; ",
            min * 100.0
        )
    } else {
        "low remaining limits are ignored (min_remaining_fraction 0); ".to_string()
    };
    let state = match shared_at {
        Some(at) => format!("shared by every gateway through Redis at {at}"),
        None => "each gateway's own (REDIS_URL would share it)".to_string(),
    };
    format!(
        "{low}a 429 with Retry-After skips it until then (observed state: {state}; none offline)"
    )
}

/// Whether provider `p` (through target `t`'s wire format, if it sets one) can serve `op`.
fn serves(
    snap: &Snapshot,
    t: Option<&Target>,
    p: usize,
    op: Operation,
) -> Result<(), crate::wire::capability::Unsupported> {
    let kind = snap.providers[p].config.kind;
    let format = t
        .and_then(|t| t.backend_format)
        .unwrap_or(kind.wire_format());
    crate::wire::capability::serves(kind, format, op)
}

/// Why the strategy picked target `ti` first (offline: no latency samples, no sessions).
fn pick_reason(
    snap: &Snapshot,
    vi: usize,
    ti: usize,
    checks: &[(Option<usize>, Result<TargetState, plan::Ineligible>)],
) -> String {
    let vm = &snap.table.models[vi];
    let t = &vm.targets[ti];
    let eligible = || {
        checks
            .iter()
            .enumerate()
            .filter(|(_, (_, r))| r.is_ok())
            .map(|(i, _)| &vm.targets[i])
    };
    match vm.strategy {
        Strategy::RoundRobin => {
            let weighted: Vec<&Target> = eligible().filter(|x| x.weight > 0.0).collect();
            if t.weight <= 0.0 {
                "round_robin: no weighted target is eligible, so a fallback-only one".to_string()
            } else if weighted.len() == 1 {
                "round_robin: the only eligible weighted target".to_string()
            } else {
                let total: f64 = weighted.iter().map(|x| x.weight).sum();
                format!("round_robin: weight {} of {total}, in turn", t.weight)
            }
        }
        Strategy::Cost => match t.price {
            Some(p) => format!("cost: cheapest eligible, ${p}/Mtok in+out"),
            None => "cost: no eligible target is priced, so the first declared".to_string(),
        },
        Strategy::Priority if t.priority == i64::MAX => {
            "priority: first eligible in list order (no priority set)".to_string()
        }
        Strategy::Priority => format!("priority: {} is the lowest eligible", t.priority),
        Strategy::Latency => {
            "latency: no samples offline, so targets are explored in declared order".to_string()
        }
    }
}
