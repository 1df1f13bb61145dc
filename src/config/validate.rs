//! Virtual model declarations from every origin, merged by precedence and validated into
//! routing types. Every message names the origin (file and index, `VIRTUAL_MODELS[i]` or store),
//! the source and the field.
//!
//! Precedence: store < config file < `VIRTUAL_MODELS`. Env replaces a file entry whole when their
//! sources match trimmed and case-insensitively; a file entry replaces a store row with the exact
//! same source. This module never reads files or the environment itself.

use std::borrow::Cow;
// Keyed by sources from the configuration (not from clients): foldhash, as in the routing
// table; a snapshot of 100,000 virtual models fills each of these maps once per reload.
use foldhash::{HashMap, HashSet};
use smallvec::SmallVec;
use smol_str::SmolStr;
use std::sync::Arc;

use super::providers::RESERVED_HEADERS;
use super::schema::{
    AffinityKeySpec, HedgeSpec, RetrySpec, SessionAffinitySpec, TargetSpec, VirtualModelSpec,
};
use crate::routing::error_class::ErrorClass;
use crate::routing::model::{
    default_fallback_on, HedgePolicy, Kind, Operation, Origin, PolicyRef, RetryPolicy, Rotation,
    SessionConfig, Sla, SteerPolicy, Strategy, Target, TargetExtras, VirtualModel, WireFormat,
};
use crate::routing::schedule;
use crate::routing::table::Table;
use crate::routing::user_path::UserPath;

/// The retry policy a target starts from before its own `retry`: its provider's (GoModel's
/// `resilience.retry`, per provider), else the global one when the provider is found only per
/// request.
#[derive(Debug, Clone, Default)]
/// Shared: a target without a `retry` block of its own holds its provider's policy, not a copy.
pub struct RetryDefaults {
    pub global: Arc<RetryPolicy>,
    /// One per declared provider, in the order of the provider names.
    pub per_provider: Vec<Arc<RetryPolicy>>,
}

impl RetryDefaults {
    pub fn for_provider(&self, provider: Option<usize>) -> &Arc<RetryPolicy> {
        provider
            .and_then(|p| self.per_provider.get(p))
            .unwrap_or(&self.global)
    }
}

/// Declarations from the three origins.
#[derive(Debug, Default, Clone, Copy)]
pub struct Declarations<'a> {
    pub store: &'a [VirtualModelSpec],
    pub config: &'a [Arc<VirtualModelSpec>],
    pub config_path: &'a str,
    pub env: &'a [Arc<VirtualModelSpec>],
}

/// One merged entry before validation; borrows its declaration (only the built virtual model
/// keeps a copy of it).
#[derive(Debug, Clone)]
pub struct Merged<'a> {
    pub origin: Origin,
    pub spec: &'a VirtualModelSpec,
    /// The declaration's shared copy (file and `VIRTUAL_MODELS` entries), which the built
    /// virtual model keeps instead of a copy of its own; None for store rows.
    pub shared: Option<&'a Arc<VirtualModelSpec>>,
    /// Whether a store row with the same source is hidden by this entry.
    pub overrides_store: bool,
}

/// The key sources are compared by; borrowed when lowering would not change it (the common
/// case, which then allocates nothing).
fn key(source: &str) -> Cow<'_, str> {
    let s = source.trim();
    if s.is_ascii() && !s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

/// An entry's label for messages (`label`), formatted only when a message is written.
pub struct At<'a> {
    origin: &'a Origin,
    spec: &'a VirtualModelSpec,
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&label(self.origin, self.spec))
    }
}

/// A target's field name for messages (`target` or `targets[i]`), formatted only when a
/// message is written.
enum Field {
    Target,
    Targets(usize),
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Target => f.write_str("target"),
            Field::Targets(i) => write!(f, "targets[{i}]"),
        }
    }
}

fn label(origin: &Origin, spec: &VirtualModelSpec) -> String {
    match spec
        .source
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(s) => format!("{} (source {s:?})", origin.location()),
        None => origin.location(),
    }
}

/// Applies precedence. Errors: missing source, duplicate source within one origin.
pub fn merge<'a>(decl: &Declarations<'a>) -> Result<Vec<Merged<'a>>, Vec<String>> {
    let mut errors = Vec::new();
    // One path shared by every entry of the file, not a copy each.
    let config_path: Arc<str> = Arc::from(decl.config_path);
    type Entry<'a> = (
        Origin,
        &'a VirtualModelSpec,
        Option<&'a Arc<VirtualModelSpec>>,
    );
    let store: Vec<Entry<'a>> = decl
        .store
        .iter()
        .map(|s| (Origin::Store, s, None))
        .collect();
    let config: Vec<Entry<'a>> = decl
        .config
        .iter()
        .enumerate()
        .map(|(index, s)| {
            (
                Origin::Config {
                    path: config_path.clone(),
                    index,
                },
                &**s,
                Some(s),
            )
        })
        .collect();
    let env: Vec<Entry<'a>> = decl
        .env
        .iter()
        .enumerate()
        .map(|(index, s)| (Origin::Env { index }, &**s, Some(s)))
        .collect();
    for group in [&store, &config, &env] {
        let mut seen: HashMap<Cow<'_, str>, &Origin> =
            HashMap::with_capacity_and_hasher(group.len(), Default::default());
        for (origin, spec, _) in group.iter() {
            match spec.source.as_deref().map(str::trim) {
                None | Some("") => {
                    errors.push(format!("{}: source is required", origin.location()))
                }
                Some(s) => {
                    if let Some(first) = seen.insert(key(s), origin) {
                        errors.push(format!(
                            "{}: source {s:?} is declared twice (first at {})",
                            origin.location(),
                            first.location()
                        ));
                    }
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let src = |s: &'a VirtualModelSpec| s.source.as_deref().unwrap_or("").trim();
    let env_keys: HashMap<Cow<'a, str>, usize> = env
        .iter()
        .enumerate()
        .map(|(i, (_, s, _))| (key(src(s)), i))
        .collect();
    let mut used_env = vec![false; env.len()];
    let mut out: Vec<Merged<'a>> = Vec::with_capacity(config.len() + env.len() + store.len());
    for (origin, spec, shared) in config {
        // Sources are compared case-insensitively; an env-free config skips the lowering.
        let from_env = if env_keys.is_empty() {
            None
        } else {
            env_keys.get(&key(src(spec)))
        };
        match from_env {
            Some(&i) => {
                used_env[i] = true;
                out.push(Merged {
                    origin: env[i].0.clone(),
                    spec: env[i].1,
                    shared: env[i].2,
                    overrides_store: false,
                });
            }
            None => out.push(Merged {
                origin,
                spec,
                shared,
                overrides_store: false,
            }),
        }
    }
    for ((origin, spec, shared), used) in env.into_iter().zip(used_env) {
        if !used {
            out.push(Merged {
                origin,
                spec,
                shared,
                overrides_store: false,
            });
        }
    }
    if !store.is_empty() {
        // Sets, so that a large store does not make this quadratic.
        let managed: HashSet<&str> = out.iter().map(|m| src(m.spec)).collect();
        let store_sources: HashSet<&str> = decl.store.iter().map(src).collect();
        for m in out.iter_mut() {
            m.overrides_store = store_sources.contains(src(m.spec));
        }
        for (origin, spec, shared) in store {
            if !managed.contains(src(spec)) {
                out.push(Merged {
                    origin,
                    spec,
                    shared,
                    overrides_store: false,
                });
            }
        }
    }
    Ok(out)
}

/// Validates merged entries into virtual models. Each redirect's rotation starts where the
/// previous table's entry of the same source stands.
pub fn build(
    merged: &[Merged<'_>],
    providers: &[String],
    retry: &RetryDefaults,
    previous: Option<&Table>,
    warnings: &mut Vec<String>,
) -> Result<Vec<VirtualModel>, Vec<String>> {
    let redirect_sources: HashSet<&str> = merged
        .iter()
        .filter(|m| has_targets(m.spec))
        .map(|m| m.spec.source.as_deref().unwrap_or("").trim())
        .collect();
    let mut errors = Vec::new();
    let mut out = Vec::with_capacity(merged.len());
    let mut slugs: HashMap<String, String> = HashMap::default();
    for m in merged {
        match build_one(m, providers, retry, &redirect_sources, previous, warnings) {
            Ok(vm) => {
                if let Some(slug) = &vm.slug {
                    if let Some(other) = slugs.insert(slug.clone(), vm.source.to_string()) {
                        errors.push(format!(
                            "{}: slug {slug:?} is already used by {other:?}",
                            label(&m.origin, m.spec)
                        ));
                    } else if redirect_sources.contains(slug.as_str()) && *slug != vm.source {
                        errors.push(format!(
                            "{}: slug {slug:?} equals the source of another virtual model",
                            label(&m.origin, m.spec)
                        ));
                    }
                }
                out.push(vm);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn has_targets(spec: &VirtualModelSpec) -> bool {
    spec.target.is_some()
        || spec.targets.as_ref().is_some_and(|t| !t.is_empty())
        || spec
            .routing_config
            .as_ref()
            .and_then(|r| r.load_balance_targets.as_ref())
            .is_some_and(|t| !t.is_empty())
}

fn is_concrete(source: &str, providers: &[String]) -> bool {
    source
        .split_once('/')
        .is_some_and(|(p, m)| !m.is_empty() && providers.iter().any(|d| d == p))
}

/// Validates one entry. The error names origin, source and field.
pub fn build_one(
    m: &Merged<'_>,
    providers: &[String],
    retry: &RetryDefaults,
    redirect_sources: &HashSet<&str>,
    previous: Option<&Table>,
    warnings: &mut Vec<String>,
) -> Result<VirtualModel, String> {
    let spec = m.spec;
    let at = At {
        origin: &m.origin,
        spec,
    };
    let source = spec.source.as_deref().unwrap_or("").trim();
    if source.is_empty() {
        return Err(format!("{at}: source is required"));
    }
    if source.chars().any(char::is_control) || source.contains(char::is_whitespace) {
        return Err(format!(
            "{at}: source must not contain spaces or control characters"
        ));
    }
    let from_rc = spec
        .routing_config
        .as_ref()
        .and_then(|r| r.load_balance_targets.as_deref());
    let target_specs: &[TargetSpec] = match (&spec.target, &spec.targets, from_rc) {
        (Some(_), Some(t), _) if !t.is_empty() => {
            return Err(format!(
                "{at}: target and targets are both set; use one of them"
            ))
        }
        (Some(t), _, _) => std::slice::from_ref(&**t),
        (None, Some(t), _) if !t.is_empty() => t,
        (None, _, Some(t)) => t,
        _ => &[],
    };
    let strategy_raw = spec
        .strategy
        .as_deref()
        .or(spec.routing_config.as_ref().and_then(|r| r.kind.as_deref()));
    let strategy = match strategy_raw {
        None => Strategy::RoundRobin,
        Some(s) => Strategy::parse(s)
            .ok_or_else(|| format!("{at}: strategy {s:?} is unknown; use {}", Strategy::NAMES))?,
    };
    let kind = if target_specs.is_empty() {
        Kind::Policy
    } else {
        Kind::Redirect
    };
    let concrete_source = is_concrete(source, providers);
    let mut targets: Vec<Target> = Vec::with_capacity(target_specs.len());
    for (i, t) in target_specs.iter().enumerate() {
        let field = if spec.target.is_some() {
            Field::Target
        } else {
            Field::Targets(i)
        };
        let target = build_target(
            t,
            &field,
            &at,
            source,
            concrete_source,
            providers,
            retry,
            redirect_sources,
            strategy,
            warnings,
        )?;
        if targets.iter().any(|o| o.name == target.name) {
            return Err(format!(
                "{at}: {field}: target {:?} is listed twice",
                target.name
            ));
        }
        targets.push(target);
    }
    // An empty list is no restriction, exactly like an absent one (SPEC section 4), whichever
    // origin or admin route wrote it: decided here, once, for every origin.
    let user_paths = match &spec.user_paths {
        None => None,
        Some(list) if list.is_empty() => None,
        Some(list) => {
            let mut v = Vec::with_capacity(list.len());
            for (i, p) in list.iter().enumerate() {
                v.push(UserPath::parse(p).map_err(|e| format!("{at}: user_paths[{i}]: {e}"))?);
            }
            Some(v)
        }
    };
    let model_types = match &spec.model_types {
        None => None,
        Some(list) if list.is_empty() => None,
        Some(list) => {
            let mut v = Vec::with_capacity(list.len());
            for (i, t) in list.iter().enumerate() {
                v.push(Operation::parse(t).ok_or_else(|| {
                    format!(
                        "{at}: model_types[{i}]: {t:?} is unknown; use {}",
                        Operation::NAMES
                    )
                })?);
            }
            Some(v)
        }
    };
    let mut session = SessionConfig::default();
    if let Some(a) = &spec.session_affinity {
        session.enabled = a.enabled();
        if let SessionAffinitySpec::Keyed(k) = &**a {
            affinity_key(k, &at, &mut session)?;
        }
    }
    if let Some(st) = &spec.sticky_routing {
        session.enabled = spec.session_affinity.as_ref().is_none_or(|a| a.enabled());
        if let Some(ttl) = st.ttl_seconds {
            if ttl == 0 {
                return Err(format!("{at}: sticky_routing.ttl_seconds must be above 0"));
            }
            session.ttl_seconds = ttl;
        }
        if let Some(ids) = &st.session_identifiers {
            let mut hs = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                if !id.source.is_empty()
                    && !id.source.eq_ignore_ascii_case("headers")
                    && !id.source.eq_ignore_ascii_case("header")
                {
                    return Err(format!(
                        "{at}: sticky_routing.session_identifiers[{i}].source {:?} is unsupported; use headers",
                        id.source
                    ));
                }
                if id.key.trim().is_empty() {
                    return Err(format!(
                        "{at}: sticky_routing.session_identifiers[{i}].key is required"
                    ));
                }
                hs.push(id.key.trim().to_ascii_lowercase());
            }
            if !hs.is_empty() {
                session.headers = hs.into();
            }
        }
    }
    let slug = match spec.slug.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) if s.contains(char::is_whitespace) => {
            return Err(format!("{at}: slug {s:?} must not contain spaces"))
        }
        Some(s) => Some(s.to_string()),
    };
    if kind == Kind::Policy && spec.strategy.is_some() {
        warnings.push(format!(
            "{at}: strategy is ignored on an access policy (no targets)"
        ));
    }
    let hedge = match &spec.hedge {
        None => None,
        Some(h) => Some(hedge_policy(h, &at)?),
    };
    let mut steer = SteerPolicy::default();
    if let Some(f) = spec.steer.as_ref().and_then(|s| s.min_remaining_fraction) {
        if !f.is_finite() || !(0.0..=1.0).contains(&f) {
            return Err(format!(
                "{at}: steer.min_remaining_fraction {f} must be between 0 and 1 (0 turns the steering off)"
            ));
        }
        steer.min_remaining_fraction = f;
    }
    if hedge.is_some() && targets.len() < 2 {
        warnings.push(format!(
            "{at}: hedge has no effect with fewer than two targets"
        ));
    }
    let weights: SmallVec<[f64; 8]> = targets.iter().map(|t| t.weight).collect();
    let counter = Rotation::starting_at(
        previous
            .and_then(|table| table.rotation(source))
            .unwrap_or(0),
    );
    Ok(VirtualModel {
        schedule: schedule::build(&weights),
        source: source.into(),
        origin: m.origin.clone(),
        kind,
        strategy,
        targets,
        session,
        steer,
        hedge: hedge.map(Box::new),
        slug,
        model_types: model_types.map(Vec::into_boxed_slice),
        user_paths: user_paths.map(Vec::into_boxed_slice),
        enabled: spec.enabled.unwrap_or(true),
        counter,
        spec: match m.shared {
            Some(shared) => shared.clone(),
            None => Arc::new(spec.clone()),
        },
    })
}

/// A target's own `retry` block over the policy it starts from.
fn own_retry(
    base: &RetryPolicy,
    r: &RetrySpec,
    at: &At<'_>,
    field: &Field,
) -> Result<RetryPolicy, String> {
    let mut retry = base.clone();
    if let Some(a) = r.attempts {
        if a == 0 {
            return Err(format!(
                "{at}: {field}.retry.attempts must be at least 1 (1 = no retry)"
            ));
        }
        retry.attempts = a;
    }
    if let Some(d) = r.delay_ms {
        retry.initial_delay_ms = d;
        retry.max_delay_ms = retry.max_delay_ms.max(d);
    }
    if let Some(s) = &r.on_status {
        retry.on_status = s.iter().map(|c| c.0).collect();
    }
    Ok(retry)
}

#[allow(clippy::too_many_arguments)]
fn build_target(
    t: &TargetSpec,
    field: &Field,
    at: &At<'_>,
    source: &str,
    concrete_source: bool,
    providers: &[String],
    retry_defaults: &RetryDefaults,
    redirect_sources: &HashSet<&str>,
    strategy: Strategy,
    warnings: &mut Vec<String>,
) -> Result<Target, String> {
    let model_raw = t.model.as_deref().map(str::trim).unwrap_or("");
    if model_raw.is_empty() {
        return Err(format!("{at}: {field}.model is blank"));
    }
    let declared = || providers.join(", ");
    let (provider, model) = match t.provider.as_deref().map(str::trim) {
        Some(p) if !p.is_empty() => {
            let idx = providers.iter().position(|d| d == p).ok_or_else(|| {
                format!(
                    "{at}: {field}.provider {p:?} is not declared; declared providers: {}",
                    if providers.is_empty() {
                        "(none)".to_string()
                    } else {
                        declared()
                    }
                )
            })?;
            let m = model_raw
                .strip_prefix(p)
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or(model_raw);
            (Some(idx), SmolStr::from(m))
        }
        _ => match model_raw.split_once('/') {
            Some((p, m)) if !m.is_empty() => match providers.iter().position(|d| d == p) {
                Some(idx) => (Some(idx), SmolStr::from(m)),
                None => {
                    warnings.push(format!(
                        "{at}: {field}.model {model_raw:?}: {p:?} is not a declared provider (declared: {}); treated as a model id served by whichever provider lists it",
                        declared()
                    ));
                    (None, SmolStr::from(model_raw))
                }
            },
            _ => (None, SmolStr::from(model_raw)),
        },
    };
    // Both inline up to 23 bytes: most model ids and names need no allocation of their own.
    let name = match provider {
        Some(i) => smol_str::format_smolstr!("{}/{model}", providers[i]),
        None => model.clone(),
    };
    if name == source || model_raw == source {
        if !concrete_source {
            return Err(format!(
                "{at}: {field}.model {model_raw:?} equals the source; a redirect may target itself only when its source is a concrete provider/model"
            ));
        }
    } else if provider.is_none()
        && (redirect_sources.contains(model_raw) || redirect_sources.contains(name.as_str()))
    {
        // A `provider/model` target names the concrete model even when a virtual model
        // shadows that name (the shadow's own targets do the same), so only bare names can
        // chain.
        return Err(format!(
            "{at}: {field}.model {model_raw:?} is another virtual model; targets must be concrete models (chains are not allowed)"
        ));
    }
    let weight = t.weight.unwrap_or(1.0);
    if !weight.is_finite() || weight < 0.0 {
        return Err(format!(
            "{at}: {field}.weight {weight} must be a finite number >= 0"
        ));
    }
    let base = retry_defaults.for_provider(provider);
    let retry = match &t.retry {
        None => base.clone(),
        Some(r) => Arc::new(own_retry(base, r, at, field)?),
    };
    let mut headers_set = Vec::new();
    let mut headers_remove = Vec::new();
    if let Some(h) = &t.headers {
        for (k, v) in &h.set {
            let lower = k.trim().to_ascii_lowercase();
            check_header(&lower, at, field, "set", k)?;
            http::HeaderValue::from_str(v)
                .map_err(|_| format!("{at}: {field}.headers.set.{k}: not a valid header value"))?;
            headers_set.push((lower, v.clone()));
        }
        for k in &h.remove {
            let lower = k.trim().to_ascii_lowercase();
            check_header(&lower, at, field, "remove", k)?;
            headers_remove.push(lower);
        }
    }
    if let Some(p) = &t.override_params {
        if p.contains_key("model") || p.contains_key("stream") {
            return Err(format!(
                "{at}: {field}.override_params cannot set \"model\" or \"stream\"; they belong to the request"
            ));
        }
    }
    let backend_format = match t.backend_format.as_deref() {
        None => None,
        Some(f) => Some(WireFormat::parse(f).ok_or_else(|| {
            format!("{at}: {field}.backend_format {f:?} is unknown; use OPENAI_CHAT or ANTHROPIC_MESSAGES")
        })?),
    };
    if t.priority.is_some() && strategy != Strategy::Priority {
        warnings.push(format!(
            "{at}: {field}.priority is ignored by strategy {}",
            strategy.name()
        ));
    }
    let mut fallback_on_errors = Vec::new();
    for (i, c) in t.fallback_on_errors.iter().flatten().enumerate() {
        let class = ErrorClass::parse(c).ok_or_else(|| {
            format!(
                "{at}: {field}.fallback_on_errors[{i}]: {c:?} is not an error class; use {}",
                ErrorClass::names()
            )
        })?;
        if !fallback_on_errors.contains(&class) {
            fallback_on_errors.push(class);
        }
    }
    let sla = t.sla.as_deref().map(|s| Sla {
        time_to_first_token_ms: s.time_to_first_token_ms,
        time_per_output_token_ms: s.time_per_output_token_ms,
    });
    let extras = TargetExtras {
        metadata_match: t
            .metadata_match
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        fallback_on_errors,
        override_params: t.override_params.clone(),
        headers_set,
        headers_remove,
        sla,
    };
    Ok(Target {
        provider,
        policy: PolicyRef::Unresolved,
        model,
        weight,
        priority: t.priority.unwrap_or(i64::MAX),
        price: None,
        context_window: None,
        fallback_candidate: t.fallback_candidate.unwrap_or(true),
        backend_format,
        extras: extras.boxed(),
        name,
        retry,
        fallback_on: match &t.fallback_on {
            Some(v) => v.iter().map(|c| c.0).collect(),
            None => default_fallback_on(),
        },
    })
}

/// `session_affinity: {key, prefix_messages, ttl_seconds}` into the session settings.
fn affinity_key(
    k: &AffinityKeySpec,
    at: &At<'_>,
    session: &mut SessionConfig,
) -> Result<(), String> {
    match k.key.as_deref().map(str::trim) {
        None | Some("header") | Some("headers") => {
            if k.prefix_messages.is_some() {
                return Err(format!(
                    "{at}: session_affinity.prefix_messages applies only with key: prefix"
                ));
            }
        }
        Some("prefix") => session.prefix_messages = Some(k.prefix_messages.unwrap_or(1)),
        Some(other) => {
            return Err(format!(
                "{at}: session_affinity.key {other:?} is unknown; use header or prefix"
            ))
        }
    }
    if let Some(ttl) = k.ttl_seconds {
        if ttl == 0 {
            return Err(format!(
                "{at}: session_affinity.ttl_seconds must be above 0"
            ));
        }
        session.ttl_seconds = ttl;
    }
    Ok(())
}

/// `hedge: {after_ms, max_extra, budget_percent}` into a policy.
fn hedge_policy(h: &HedgeSpec, at: &At<'_>) -> Result<HedgePolicy, String> {
    let after_ms = h.after_ms.ok_or_else(|| {
        format!("{at}: hedge.after_ms is required (the wait before the extra request)")
    })?;
    if after_ms == 0 {
        return Err(format!("{at}: hedge.after_ms must be above 0"));
    }
    let max_extra = h.max_extra.unwrap_or(HedgePolicy::DEFAULT_MAX_EXTRA);
    if max_extra != 1 {
        return Err(format!(
            "{at}: hedge.max_extra {max_extra} is unsupported; one extra request (max_extra: 1) races the first"
        ));
    }
    let budget_percent = h
        .budget_percent
        .unwrap_or(HedgePolicy::DEFAULT_BUDGET_PERCENT);
    if !budget_percent.is_finite()
        || !(0.0..=100.0).contains(&budget_percent)
        || budget_percent == 0.0
    {
        return Err(format!(
            "{at}: hedge.budget_percent {budget_percent} must be above 0 and at most 100"
        ));
    }
    Ok(HedgePolicy {
        after_ms,
        max_extra,
        budget_percent,
    })
}

fn check_header(
    lower: &str,
    at: &At<'_>,
    field: &Field,
    op: &str,
    raw: &str,
) -> Result<(), String> {
    if RESERVED_HEADERS.contains(&lower) {
        return Err(format!(
            "{at}: {field}.headers.{op}: {raw:?} is a hop-by-hop or authentication header and cannot be changed"
        ));
    }
    http::HeaderName::from_bytes(lower.as_bytes())
        .map_err(|_| format!("{at}: {field}.headers.{op}: {raw:?} is not a valid header name"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::catalog::StateRegistry;
    use crate::config::env::Env;
    use crate::snapshot::Snapshot;

    fn snapshot(vms: &str) -> Snapshot {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        let text =
            format!("providers:\n  p:\n    type: mock\n    models: [a, b]\nvirtual_models:\n{vms}");
        std::fs::write(&path, text).unwrap();
        let loaded = crate::config::load(Some(&path), &Env::default()).unwrap();
        Snapshot::build(&loaded, &[], None, &StateRegistry::default()).unwrap()
    }

    #[test]
    fn an_empty_user_paths_list_is_no_restriction() {
        let snap = snapshot(
            "  - {source: smart, target: p/a, user_paths: []}\n  - {source: p/b, user_paths: []}\n",
        );
        assert!(snap.table.models.iter().all(|vm| vm.user_paths.is_none()));
        let snap = snapshot("  - {source: smart, target: p/a, user_paths: [/team]}\n");
        assert_eq!(
            snap.table.models[0].user_paths.as_ref().map(|p| p.len()),
            Some(1)
        );
    }
}
