//! Turning a request into a plan: the ordered concrete attempts the proxy will make.
//!
//! Pure and synchronous: everything observed (catalogs, breakers, latencies, session pins) comes
//! in through the `Conditions` trait, so tests and benchmarks are exact. This module must never
//! do I/O, read a clock or take a lock.

use smallvec::SmallVec;
use smol_str::SmolStr;

use super::model::{Kind, Operation, Strategy, Target, VirtualModel};
use super::table::{Access, Table};
use super::user_path::{list_admits, UserPath};

/// What a request asks for, already parsed.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub model: &'a str,
    /// Body `provider` field: bypasses virtual models.
    pub provider: Option<&'a str>,
    pub user_path: Option<&'a UserPath>,
    pub operation: Operation,
    pub metadata: Option<&'a serde_json::Map<String, serde_json::Value>>,
    pub session_key: Option<&'a str>,
    /// Estimated input tokens (input characters / 4), when measured: a target whose known
    /// context window is smaller is left out.
    pub input_tokens: Option<u64>,
}

/// Can a provider serve a model right now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Available,
    /// The provider is declared but has no API key.
    NoKey,
    /// The provider's catalog does not list the model.
    NotListed,
    /// The provider's address could not be resolved.
    Unreachable,
}

/// Observed state of one target, as the health module sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetState {
    pub circuit_open: bool,
    pub sla_breached: bool,
    /// Moving-window latency score in ms and how many samples it rests on.
    pub latency_ms: Option<f64>,
    pub samples: u32,
    /// The provider answered 429 with a `Retry-After` that has not passed: skipped while
    /// another target is eligible.
    pub rate_limited: bool,
    /// The smallest share of a rate limit the provider last announced as left, while that
    /// limit has not reset (`None`: nothing known, or reset since).
    pub remaining_fraction: Option<f64>,
}

/// The world outside the routing core, as seen by one request.
pub trait Conditions {
    fn availability(&self, provider: usize, model: &str) -> Availability;
    /// A provider whose catalog lists a bare model id.
    fn locate(&self, model: &str) -> Option<usize>;
    fn target_state(&self, vm: usize, target: usize) -> TargetState;
    /// Whether the circuit of a concrete model called directly (no virtual model) is open.
    fn concrete_circuit_open(&self, _provider: usize, _model: &str) -> bool {
        false
    }
    /// The target a session is pinned to, if any.
    fn pinned(&self, _vm: usize, _session: &str) -> Option<usize> {
        None
    }
    /// A random number, for spreading load inside the latency band.
    fn random(&self) -> u64 {
        0
    }
}

/// One concrete attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub provider: usize,
    /// Index into the virtual model's targets, when one applied.
    pub target: Option<usize>,
    /// Upstream model id.
    pub model: SmolStr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub virtual_model: Option<usize>,
    /// The first attempt, then the fallbacks in order. Never empty.
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("unsupported model: {model}")]
    NotFound { model: String },
    #[error("model {model} is not available: {reason}")]
    Unavailable { model: String, reason: &'static str },
    #[error("access to model {model} is denied for this caller")]
    AccessDenied { model: String },
    #[error("model {model} is disabled")]
    Disabled { model: String },
    #[error("virtual model {virtual_model} does not serve {operation} requests (model_types: {allowed})")]
    OperationNotAllowed {
        virtual_model: String,
        operation: &'static str,
        allowed: String,
    },
    #[error("every target of {virtual_model} has an open circuit; retry later")]
    AllCircuitsOpen { virtual_model: String },
    #[error("model {model} has an open circuit; retry later")]
    CircuitOpen { model: String },
}

/// Why a target is left out of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligible {
    NoProvider,
    Unavailable(Availability),
    CircuitOpen,
    SlaBreached,
    MetadataMismatch,
    AccessDenied,
    /// The target's known context window is smaller than the estimated input.
    ContextTooSmall,
}

impl Ineligible {
    pub fn describe(self) -> &'static str {
        match self {
            Ineligible::NoProvider => "no provider serves this model",
            Ineligible::Unavailable(Availability::NoKey) => "provider has no API key",
            Ineligible::Unavailable(Availability::NotListed) => "not in the provider's catalog",
            Ineligible::Unavailable(Availability::Unreachable) => "provider address unresolved",
            Ineligible::Unavailable(Availability::Available) => "available",
            Ineligible::CircuitOpen => "circuit open",
            Ineligible::SlaBreached => "SLA breached",
            Ineligible::MetadataMismatch => "metadata_match does not hold",
            Ineligible::AccessDenied => "access denied for this caller",
            Ineligible::ContextTooSmall => "context window smaller than the estimated input",
        }
    }
}

/// Computes the plan for a request.
pub fn plan<C: Conditions>(table: &Table, req: &Request<'_>, cond: &C) -> Result<Plan, RouteError> {
    let model = req.model.trim();
    if let Some(provider) = req.provider {
        let p = table
            .provider(provider.trim())
            .ok_or_else(|| RouteError::NotFound {
                model: format!("{provider}/{model}"),
            })?;
        return concrete(table, p, model, req, cond).map(|p| with_fallbacks(table, p, req, cond));
    }
    let mut circuits_open_in: Option<usize> = None;
    if let Some(vi) = table.redirect(model) {
        let vm = &table.models[vi];
        let covered = vm
            .user_paths
            .as_ref()
            .is_none_or(|l| list_admits(l, req.user_path));
        if covered {
            if let Some(types) = &vm.model_types {
                if !types.contains(&req.operation.admitted_by()) && !types.contains(&req.operation)
                {
                    return Err(RouteError::OperationNotAllowed {
                        virtual_model: vm.source.to_string(),
                        operation: req.operation.name(),
                        allowed: types
                            .iter()
                            .map(|t| t.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
            match plan_redirect(table, vi, req, cond) {
                RedirectOutcome::Plan(p) => return Ok(p),
                RedirectOutcome::AllDenied => {
                    return Err(RouteError::AccessDenied {
                        model: model.to_string(),
                    })
                }
                RedirectOutcome::AllCircuitsOpen => circuits_open_in = Some(vi),
                RedirectOutcome::NoneEligible => {}
            }
        }
    }
    // Fall through to the literal name: a concrete model (shadowed or not).
    let result = literal(table, model, req, cond).map(|p| with_fallbacks(table, p, req, cond));
    match (result, circuits_open_in) {
        (Err(RouteError::NotFound { .. } | RouteError::Unavailable { .. }), Some(vi)) => {
            Err(RouteError::AllCircuitsOpen {
                virtual_model: table.models[vi].source.to_string(),
            })
        }
        (r, _) => r,
    }
}

fn literal<C: Conditions>(
    table: &Table,
    model: &str,
    req: &Request<'_>,
    cond: &C,
) -> Result<Plan, RouteError> {
    if let Some((prefix, rest)) = model.split_once('/') {
        if let Some(p) = table.provider(prefix) {
            if !rest.is_empty() {
                return concrete(table, p, rest, req, cond);
            }
        }
    }
    match cond.locate(model) {
        Some(p) => concrete(table, p, model, req, cond),
        None => Err(RouteError::NotFound {
            model: model.to_string(),
        }),
    }
}

fn concrete<C: Conditions>(
    table: &Table,
    provider: usize,
    model: &str,
    req: &Request<'_>,
    cond: &C,
) -> Result<Plan, RouteError> {
    let pname = &table.providers[provider];
    match cond.availability(provider, model) {
        Availability::Available => {}
        Availability::NotListed => {
            return Err(RouteError::NotFound {
                model: format!("{pname}/{model}"),
            })
        }
        a => {
            return Err(RouteError::Unavailable {
                model: format!("{pname}/{model}"),
                reason: Ineligible::Unavailable(a).describe(),
            })
        }
    }
    match table.access(pname, model, req.user_path) {
        Access::Allowed if cond.concrete_circuit_open(provider, model) => {
            Err(RouteError::CircuitOpen {
                model: format!("{pname}/{model}"),
            })
        }
        Access::Allowed => Ok(Plan {
            virtual_model: None,
            attempts: vec![Attempt {
                provider,
                target: None,
                model: model.into(),
            }],
        }),
        Access::Denied => Err(RouteError::AccessDenied {
            model: format!("{pname}/{model}"),
        }),
        Access::Disabled => Err(RouteError::Disabled {
            model: format!("{pname}/{model}"),
        }),
    }
}

/// Appends a concrete model's configured fallbacks to its plan: each one that resolves to an
/// available model the caller may use, once, and never the model itself. A fallback that
/// cannot serve now is left out, as an ineligible target of a virtual model is. Embeddings get
/// none (as in GoModel).
fn with_fallbacks<C: Conditions>(
    table: &Table,
    mut plan: Plan,
    req: &Request<'_>,
    cond: &C,
) -> Plan {
    // Another embedding model's vectors are not comparable with the requested one's.
    if table.fallbacks.is_empty() || req.operation == Operation::Embedding {
        return plan;
    }
    let first = &plan.attempts[0];
    let fallbacks = table
        .fallbacks
        .for_model(&table.providers[first.provider], &first.model);
    for name in fallbacks {
        let resolved = literal(table, name, req, cond).ok();
        let Some(attempt) = resolved.and_then(|p| p.attempts.into_iter().next()) else {
            continue;
        };
        let seen = plan
            .attempts
            .iter()
            .any(|a| a.provider == attempt.provider && a.model == attempt.model);
        if !seen {
            plan.attempts.push(attempt);
        }
    }
    plan
}

enum RedirectOutcome {
    Plan(Plan),
    NoneEligible,
    AllCircuitsOpen,
    AllDenied,
}

/// Eligibility of every target of a virtual model, in declared order.
pub fn eligibility<C: Conditions>(
    table: &Table,
    vi: usize,
    req: &Request<'_>,
    cond: &C,
) -> Vec<(Option<usize>, Result<TargetState, Ineligible>)> {
    checks(table, vi, req, cond).into_vec()
}

/// Per-request scratch lists live on the stack up to this many targets: planning allocates
/// nothing but the plan itself.
const INLINE_TARGETS: usize = 8;
type Checks = SmallVec<[(Option<usize>, Result<TargetState, Ineligible>); INLINE_TARGETS]>;
type Order = SmallVec<[usize; INLINE_TARGETS]>;

fn checks<C: Conditions>(table: &Table, vi: usize, req: &Request<'_>, cond: &C) -> Checks {
    let vm = &table.models[vi];
    vm.targets
        .iter()
        .enumerate()
        .map(|(ti, t)| {
            let provider = t.provider.or_else(|| cond.locate(&t.model));
            (
                provider,
                check_target(table, vi, ti, t, provider, req, cond),
            )
        })
        .collect()
}

fn check_target<C: Conditions>(
    table: &Table,
    vi: usize,
    ti: usize,
    t: &Target,
    provider: Option<usize>,
    req: &Request<'_>,
    cond: &C,
) -> Result<TargetState, Ineligible> {
    let p = provider.ok_or(Ineligible::NoProvider)?;
    match cond.availability(p, &t.model) {
        Availability::Available => {}
        a => return Err(Ineligible::Unavailable(a)),
    }
    let wanted = &t.extras().metadata_match;
    if !wanted.is_empty() {
        let ok = req.metadata.is_some_and(|m| {
            wanted.iter().all(|(k, v)| match m.get(k) {
                Some(serde_json::Value::String(s)) => s == v,
                Some(serde_json::Value::Bool(b)) => v == if *b { "true" } else { "false" },
                Some(serde_json::Value::Number(n)) => n.to_string() == *v,
                Some(_) => false,
                None => false,
            })
        });
        if !ok {
            return Err(Ineligible::MetadataMismatch);
        }
    }
    if table.target_access(vi, ti, p, &t.model, req.user_path) != Access::Allowed {
        return Err(Ineligible::AccessDenied);
    }
    if let (Some(window), Some(input)) = (t.context_window, req.input_tokens) {
        if window < input {
            return Err(Ineligible::ContextTooSmall);
        }
    }
    let state = cond.target_state(vi, ti);
    if state.circuit_open {
        return Err(Ineligible::CircuitOpen);
    }
    if state.sla_breached {
        return Err(Ineligible::SlaBreached);
    }
    Ok(state)
}

fn plan_redirect<C: Conditions>(
    table: &Table,
    vi: usize,
    req: &Request<'_>,
    cond: &C,
) -> RedirectOutcome {
    let vm = &table.models[vi];
    debug_assert_eq!(vm.kind, Kind::Redirect);
    let checks = checks(table, vi, req, cond);
    let eligible: Order = (0..checks.len()).filter(|i| checks[*i].1.is_ok()).collect();
    if eligible.is_empty() {
        let reasons = || checks.iter().filter_map(|(_, r)| r.err());
        if !checks.is_empty() && reasons().all(|r| r == Ineligible::AccessDenied) {
            return RedirectOutcome::AllDenied;
        }
        if reasons().any(|r| r == Ineligible::CircuitOpen)
            && reasons().all(|r| matches!(r, Ineligible::CircuitOpen | Ineligible::SlaBreached))
        {
            return RedirectOutcome::AllCircuitsOpen;
        }
        return RedirectOutcome::NoneEligible;
    }
    let state = |i: usize| checks[i].1.unwrap_or_default();
    let order = steer(
        vm,
        order_targets(vm, vi, &eligible, &state, req, cond),
        &state,
    );
    let attempts = order
        .into_iter()
        .enumerate()
        .filter(|(pos, ti)| *pos == 0 || vm.targets[*ti].fallback_candidate)
        .filter_map(|(_, ti)| {
            checks[ti].0.map(|provider| Attempt {
                provider,
                target: Some(ti),
                model: vm.targets[ti].model.clone(),
            })
        })
        .collect();
    RedirectOutcome::Plan(Plan {
        virtual_model: Some(vi),
        attempts,
    })
}

/// Orders the eligible targets: the strategy's pick first, then the fallbacks.
fn order_targets<C: Conditions>(
    vm: &VirtualModel,
    vi: usize,
    eligible: &[usize],
    state: &dyn Fn(usize) -> TargetState,
    req: &Request<'_>,
    cond: &C,
) -> Order {
    let pinned = match req.session_key {
        Some(key) if vm.uses_affinity() => cond.pinned(vi, key).filter(|t| eligible.contains(t)),
        _ => None,
    };
    let mut order: Order = match vm.strategy {
        // A token count is no traffic to balance: it leaves the rotation where it is and goes
        // where the session is pinned, else to the first eligible target.
        Strategy::RoundRobin if req.operation == Operation::CountTokens => {
            let mut v = Order::new();
            v.extend(pinned);
            v.extend(eligible.iter().copied().filter(|i| Some(*i) != pinned));
            v
        }
        Strategy::RoundRobin => round_robin(vm, eligible, pinned),
        Strategy::Cost => by_cost(vm, eligible),
        Strategy::Priority => {
            let mut v = Order::from_slice(eligible);
            v.sort_by_key(|i| (vm.targets[*i].priority, *i));
            v
        }
        Strategy::Latency => by_latency(vm, eligible, state, pinned, cond),
    };
    order.dedup();
    order
}

/// Rate-limit steering over the strategy's order: a target that announced less than
/// `steer.min_remaining_fraction` of its limit left goes after the others; one rate limited
/// (429 with `Retry-After`) is left out while any other target remains, else goes last.
fn steer(vm: &VirtualModel, order: Order, state: &dyn Fn(usize) -> TargetState) -> Order {
    let min = vm.steer.min_remaining_fraction;
    let low = |i: usize| {
        let s = state(i);
        !s.rate_limited && s.remaining_fraction.is_some_and(|f| f < min)
    };
    let limited = |i: usize| state(i).rate_limited;
    if !order.iter().any(|i| low(*i) || limited(*i)) {
        return order;
    }
    let mut out: Order = order
        .iter()
        .copied()
        .filter(|i| !low(*i) && !limited(*i))
        .collect();
    out.extend(order.iter().copied().filter(|i| low(*i)));
    if out.is_empty() {
        out.extend(order.iter().copied().filter(|i| limited(*i)));
    }
    out
}

fn round_robin(vm: &VirtualModel, eligible: &[usize], pinned: Option<usize>) -> Order {
    let weighted: Order = eligible
        .iter()
        .copied()
        .filter(|i| vm.targets[*i].weight > 0.0)
        .collect();
    // A session pinned to a fallback-only target (while every weighted one was out) returns to
    // the rotation once a weighted target is eligible again: weight 0 never serves first then.
    let pinned = pinned.filter(|p| vm.targets[*p].weight > 0.0 || weighted.is_empty());
    let first = if let Some(p) = pinned {
        p
    } else if weighted.len() == 1 {
        // One candidate: the rotation does not move.
        weighted[0]
    } else if weighted.is_empty() {
        eligible[0]
    } else {
        let start = vm.counter.advance();
        scheduled(vm, start, &weighted)
    };
    let mut out = Order::new();
    out.push(first);
    // Fallbacks: the other weighted targets in declared order after the pick, then weight 0.
    let pos = weighted.iter().position(|t| *t == first).unwrap_or(0);
    for k in 1..=weighted.len() {
        let t = weighted[(pos + k) % weighted.len()];
        if t != first {
            out.push(t);
        }
    }
    out.extend(
        eligible
            .iter()
            .copied()
            .filter(|i| vm.targets[*i].weight <= 0.0 && *i != first),
    );
    out
}

/// The rotation's pick at position `start` among the eligible weighted targets.
///
/// With every weighted target eligible this is the schedule entry itself. Otherwise it is the
/// schedule with the ineligible entries left out, which is still a smooth interleaving in which
/// every remaining target keeps its exact share: 5:1:1 without the first serves b c b c. (Taking
/// the next eligible entry instead hands each skipped slot to whoever follows it in the
/// schedule: a 5:2 split of what should be 1:1.) That costs two passes over the schedule, only
/// while a target is out.
fn scheduled(vm: &VirtualModel, start: u64, weighted: &[usize]) -> usize {
    let schedule = &vm.schedule;
    let all_in = vm.targets.iter().filter(|t| t.weight > 0.0).count() == weighted.len();
    if all_in && !schedule.is_empty() {
        return schedule[(start % schedule.len() as u64) as usize] as usize;
    }
    let kept = || {
        schedule
            .iter()
            .map(|t| *t as usize)
            .filter(|t| weighted.contains(t))
    };
    match kept().count() as u64 {
        0 => weighted[0],
        n => kept().nth((start % n) as usize).unwrap_or(weighted[0]),
    }
}

/// Cheapest first by input+output price; unpriced after every priced target, in declared order.
fn by_cost(vm: &VirtualModel, eligible: &[usize]) -> Order {
    let mut v = Order::from_slice(eligible);
    v.sort_by(|a, b| {
        let pa = vm.targets[*a].price;
        let pb = vm.targets[*b].price;
        match (pa, pb) {
            (Some(x), Some(y)) => x.total_cmp(&y).then(a.cmp(b)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.cmp(b),
        }
    });
    v
}

/// Minimum samples before a target's latency is trusted.
pub const LATENCY_MIN_SAMPLES: u32 = 3;
/// Targets within this factor of the fastest share traffic.
pub const LATENCY_BAND: f64 = 1.2;

fn by_latency<C: Conditions>(
    vm: &VirtualModel,
    eligible: &[usize],
    state: &dyn Fn(usize) -> TargetState,
    pinned: Option<usize>,
    cond: &C,
) -> Order {
    // Unexplored targets first (declared order), then the measured ones fastest first.
    let (mut unexplored, mut measured): (Order, Order) = eligible
        .iter()
        .copied()
        .partition(|i| state(*i).samples < LATENCY_MIN_SAMPLES || state(*i).latency_ms.is_none());
    measured.sort_by(|a, b| {
        let la = state(*a).latency_ms.unwrap_or(f64::MAX);
        let lb = state(*b).latency_ms.unwrap_or(f64::MAX);
        la.total_cmp(&lb).then(a.cmp(b))
    });
    if unexplored.is_empty() && measured.len() > 1 {
        let best = state(measured[0]).latency_ms.unwrap_or(0.0);
        let band = measured
            .iter()
            .take_while(|i| state(**i).latency_ms.unwrap_or(f64::MAX) <= best * LATENCY_BAND)
            .count();
        if band > 1 {
            let pick = (cond.random() % band as u64) as usize;
            measured.swap(0, pick);
        }
    }
    unexplored.extend(measured);
    if let Some(p) = pinned {
        unexplored.retain(|t| *t != p);
        unexplored.insert(0, p);
    }
    let _ = vm;
    unexplored
}
