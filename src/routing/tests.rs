//! The routing core as a specification: one small table, one injected world, one expectation per
//! test. The world (`World`) stands in for catalogs, health and session pins, and its random
//! numbers are a counter, so every plan here is exact.

use std::cell::Cell;
use std::collections::HashMap;

use smol_str::SmolStr;

use super::fallback::{FallbackMode, FallbackRules};
use super::model::{
    Operation, RetryPolicy, SessionConfig, Strategy, Target, TargetExtras, VirtualModel,
};
use super::plan::{
    eligibility, plan, Availability, Conditions, Ineligible, Plan, Request, RouteError, TargetState,
};
use super::schedule;
use super::table::Table;
use super::user_path::UserPath;

const PROVIDERS: [&str; 4] = ["a", "b", "c", "d"];

/// A target `provider/model` with every policy at its default.
fn t(name: &str) -> Target {
    let (p, m) = name.split_once('/').expect("provider/model");
    Target::new(PROVIDERS.iter().position(|x| *x == p), m, name)
}

fn weighted(name: &str, weight: f64) -> Target {
    Target { weight, ..t(name) }
}

fn priced(name: &str, price: f64) -> Target {
    Target {
        price: Some(price),
        ..t(name)
    }
}

fn prio(name: &str, priority: i64) -> Target {
    Target {
        priority,
        ..t(name)
    }
}

fn vm(source: &str, strategy: Strategy, targets: Vec<Target>) -> VirtualModel {
    VirtualModel::new(source, strategy, targets)
}

/// An access policy (no targets) for a concrete model.
fn policy(source: &str, paths: &[&str]) -> VirtualModel {
    VirtualModel {
        user_paths: Some(paths.iter().map(|p| up(p)).collect()),
        ..vm(source, Strategy::RoundRobin, vec![])
    }
}

fn table(models: Vec<VirtualModel>) -> Table {
    Table::new(
        models,
        PROVIDERS.iter().map(|s| s.to_string()).collect(),
        true,
    )
}

fn up(s: &str) -> UserPath {
    UserPath::parse(s).unwrap()
}

fn req(model: &str) -> Request<'_> {
    Request {
        model,
        provider: None,
        user_path: None,
        operation: Operation::Chat,
        metadata: None,
        session_key: None,
        input_tokens: None,
    }
}

/// The world outside the routing core, injected.
#[derive(Default)]
struct World {
    /// `provider/model` -> availability; absent = available.
    availability: HashMap<String, Availability>,
    /// (virtual model, target) -> observed state; absent = healthy and unmeasured.
    state: HashMap<(usize, usize), TargetState>,
    /// (virtual model, session) -> pinned target.
    pins: HashMap<(usize, String), usize>,
    /// Bare model id -> provider whose catalog lists it.
    located: HashMap<String, usize>,
    /// `provider/model` names of concrete models whose own circuit is open.
    concrete_open: Vec<String>,
    /// Successive "random" numbers: 0, 1, 2, ...
    dice: Cell<u64>,
}

impl World {
    fn down(mut self, name: &str, a: Availability) -> World {
        self.availability.insert(name.to_string(), a);
        self
    }
    fn circuit_open(mut self, vm: usize, t: usize) -> World {
        self.state.entry((vm, t)).or_default().circuit_open = true;
        self
    }
    fn sla_breached(mut self, vm: usize, t: usize) -> World {
        self.state.entry((vm, t)).or_default().sla_breached = true;
        self
    }
    fn latency(mut self, vm: usize, t: usize, ms: f64, samples: u32) -> World {
        let s = self.state.entry((vm, t)).or_default();
        s.latency_ms = Some(ms);
        s.samples = samples;
        self
    }
    fn concrete_open(mut self, name: &str) -> World {
        self.concrete_open.push(name.to_string());
        self
    }
    fn pin(mut self, vm: usize, session: &str, t: usize) -> World {
        self.pins.insert((vm, session.to_string()), t);
        self
    }
}

impl Conditions for World {
    fn availability(&self, provider: usize, model: &str) -> Availability {
        let name = format!("{}/{model}", PROVIDERS[provider]);
        self.availability
            .get(&name)
            .copied()
            .unwrap_or(Availability::Available)
    }
    fn locate(&self, model: &str) -> Option<usize> {
        self.located.get(model).copied()
    }
    fn target_state(&self, vm: usize, target: usize) -> TargetState {
        self.state.get(&(vm, target)).copied().unwrap_or_default()
    }
    fn concrete_circuit_open(&self, provider: usize, model: &str) -> bool {
        let name = format!("{}/{model}", PROVIDERS[provider]);
        self.concrete_open.contains(&name)
    }
    fn pinned(&self, vm: usize, session: &str) -> Option<usize> {
        self.pins.get(&(vm, session.to_string())).copied()
    }
    fn random(&self) -> u64 {
        let n = self.dice.get();
        self.dice.set(n + 1);
        n
    }
}

/// `provider/model` of every attempt, first to last.
fn names(table: &Table, p: &Plan) -> Vec<String> {
    p.attempts
        .iter()
        .map(|a| format!("{}/{}", table.providers[a.provider], a.model))
        .collect()
}

fn plan_names(table: &Table, r: &Request<'_>, w: &World) -> Vec<String> {
    names(table, &plan(table, r, w).expect("a plan"))
}

/// The first attempt of `n` consecutive plans.
fn firsts(table: &Table, r: &Request<'_>, w: &World, n: usize) -> Vec<String> {
    (0..n).map(|_| plan_names(table, r, w).remove(0)).collect()
}

fn counter(table: &Table, vi: usize) -> u64 {
    table.models[vi].counter.position()
}

// ---- round_robin ----

#[test]
fn round_robin_two_to_one_interleaves_a_b_a() {
    let tb = table(vec![vm(
        "lb",
        Strategy::RoundRobin,
        vec![weighted("a/m", 2.0), weighted("b/m", 1.0)],
    )]);
    let w = World::default();
    assert_eq!(
        firsts(&tb, &req("lb"), &w, 6),
        ["a/m", "b/m", "a/m", "a/m", "b/m", "a/m"]
    );
}

#[test]
fn round_robin_fallbacks_are_the_other_weighted_targets_then_weight_zero() {
    let tb = table(vec![vm(
        "lb",
        Strategy::RoundRobin,
        vec![t("a/m"), weighted("c/m", 0.0), t("b/m")],
    )]);
    let w = World::default();
    assert_eq!(plan_names(&tb, &req("lb"), &w), ["a/m", "b/m", "c/m"]);
    assert_eq!(plan_names(&tb, &req("lb"), &w), ["b/m", "a/m", "c/m"]);
}

#[test]
fn round_robin_weight_zero_is_never_picked_while_a_weighted_target_is_eligible() {
    let tb = table(vec![vm(
        "lb",
        Strategy::RoundRobin,
        vec![weighted("a/m", 0.0), t("b/m")],
    )]);
    let w = World::default();
    assert_eq!(firsts(&tb, &req("lb"), &w, 4), ["b/m"; 4]);
    assert_eq!(plan_names(&tb, &req("lb"), &w), ["b/m", "a/m"]);
}

#[test]
fn round_robin_weight_zero_target_serves_when_every_weighted_one_is_ineligible() {
    let tb = table(vec![vm(
        "lb",
        Strategy::RoundRobin,
        vec![t("a/m"), weighted("b/m", 0.0)],
    )]);
    let w = World::default().circuit_open(0, 0);
    assert_eq!(plan_names(&tb, &req("lb"), &w), ["b/m"]);
    assert_eq!(counter(&tb, 0), 0, "no rotation happened");
}

#[test]
fn round_robin_one_eligible_target_does_not_advance_the_counter() {
    let tb = table(vec![vm(
        "lb",
        Strategy::RoundRobin,
        vec![t("a/m"), t("b/m")],
    )]);
    let b_down = World::default().circuit_open(0, 1);
    assert_eq!(firsts(&tb, &req("lb"), &b_down, 3), ["a/m"; 3]);
    assert_eq!(counter(&tb, 0), 0);
    // Once b is back the rotation resumes where it stood: a first.
    let w = World::default();
    assert_eq!(firsts(&tb, &req("lb"), &w, 2), ["a/m", "b/m"]);
}

#[test]
fn a_token_count_moves_no_rotation_and_follows_the_session_pin() {
    let tb = table(vec![vm(
        "lb",
        Strategy::RoundRobin,
        vec![t("a/m"), t("b/m")],
    )]);
    let count = Request {
        operation: Operation::CountTokens,
        ..req("lb")
    };
    let w = World::default();
    assert_eq!(firsts(&tb, &count, &w, 3), ["a/m"; 3]);
    assert_eq!(counter(&tb, 0), 0);
    assert_eq!(plan_names(&tb, &count, &w), ["a/m", "b/m"]);
    let pinned = World::default().pin(0, "s1", 1);
    let in_session = Request {
        session_key: Some("s1"),
        ..count
    };
    assert_eq!(plan_names(&tb, &in_session, &pinned), ["b/m", "a/m"]);
    assert_eq!(counter(&tb, 0), 0);
    // Messages still rotate from where the rotation stood.
    assert_eq!(firsts(&tb, &req("lb"), &w, 2), ["a/m", "b/m"]);
}

#[test]
fn round_robin_shares_stay_proportional_among_the_eligible_targets() {
    // 5:1:1 with the heavy target out: the two others must split its slots evenly, in turn.
    let tb = table(vec![vm(
        "lb",
        Strategy::RoundRobin,
        vec![weighted("a/m", 5.0), t("b/m"), t("c/m")],
    )]);
    let w = World::default().circuit_open(0, 0);
    let picks = firsts(&tb, &req("lb"), &w, 70);
    assert_eq!(picks.iter().filter(|p| *p == "b/m").count(), 35);
    assert_eq!(picks.iter().filter(|p| *p == "c/m").count(), 35);
    assert!(
        picks.windows(2).all(|w| w[0] != w[1]),
        "equal weights alternate: {picks:?}"
    );
}

#[test]
fn round_robin_counter_is_shared_across_plans_of_the_same_source() {
    let tb = table(vec![vm(
        "lb",
        Strategy::RoundRobin,
        vec![t("a/m"), t("b/m"), t("c/m")],
    )]);
    let w = World::default();
    assert_eq!(firsts(&tb, &req("lb"), &w, 4), ["a/m", "b/m", "c/m", "a/m"]);
    assert_eq!(counter(&tb, 0), 4);
}

// ---- cost ----

#[test]
fn cost_orders_by_input_plus_output_price() {
    let tb = table(vec![vm(
        "c",
        Strategy::Cost,
        vec![priced("a/m", 10.0), priced("b/m", 3.0), priced("c/m", 5.0)],
    )]);
    assert_eq!(
        plan_names(&tb, &req("c"), &World::default()),
        ["b/m", "c/m", "a/m"]
    );
}

#[test]
fn cost_never_picks_an_unpriced_target_while_a_priced_one_is_eligible() {
    let tb = table(vec![vm(
        "c",
        Strategy::Cost,
        vec![t("a/m"), priced("b/m", 30.0), t("c/m")],
    )]);
    // Unpriced targets stay as the last fallbacks, in declared order.
    assert_eq!(
        plan_names(&tb, &req("c"), &World::default()),
        ["b/m", "a/m", "c/m"]
    );
    let b_down = World::default().circuit_open(0, 1);
    assert_eq!(plan_names(&tb, &req("c"), &b_down), ["a/m", "c/m"]);
}

#[test]
fn cost_ties_keep_declared_order() {
    let tb = table(vec![vm(
        "c",
        Strategy::Cost,
        vec![priced("c/m", 2.0), priced("a/m", 1.0), priced("b/m", 2.0)],
    )]);
    assert_eq!(
        plan_names(&tb, &req("c"), &World::default()),
        ["a/m", "c/m", "b/m"]
    );
}

#[test]
fn cost_with_nothing_priced_uses_the_first_declared() {
    let tb = table(vec![vm("c", Strategy::Cost, vec![t("b/m"), t("a/m")])]);
    let w = World::default();
    assert_eq!(firsts(&tb, &req("c"), &w, 3), ["b/m"; 3]);
    assert_eq!(plan_names(&tb, &req("c"), &w), ["b/m", "a/m"]);
}

#[test]
fn cost_skips_an_ineligible_cheapest_target() {
    let tb = table(vec![vm(
        "c",
        Strategy::Cost,
        vec![priced("a/m", 1.0), priced("b/m", 2.0)],
    )]);
    let w = World::default().down("a/m", Availability::NotListed);
    assert_eq!(plan_names(&tb, &req("c"), &w), ["b/m"]);
}

// ---- latency ----

#[test]
fn latency_picks_the_fastest_and_orders_the_rest_fastest_first() {
    let tb = table(vec![vm(
        "l",
        Strategy::Latency,
        vec![t("a/m"), t("b/m"), t("c/m")],
    )]);
    let w = World::default()
        .latency(0, 0, 300.0, 10)
        .latency(0, 1, 100.0, 10)
        .latency(0, 2, 200.0, 10);
    assert_eq!(plan_names(&tb, &req("l"), &w), ["b/m", "c/m", "a/m"]);
}

#[test]
fn latency_targets_within_the_band_share_traffic() {
    let tb = table(vec![vm(
        "l",
        Strategy::Latency,
        vec![t("a/m"), t("b/m"), t("c/m")],
    )]);
    // b is exactly 1.2x a: inside the band; c is outside and never first.
    let w = World::default()
        .latency(0, 0, 100.0, 10)
        .latency(0, 1, 120.0, 10)
        .latency(0, 2, 121.0, 10);
    assert_eq!(firsts(&tb, &req("l"), &w, 4), ["a/m", "b/m", "a/m", "b/m"]);
    assert_eq!(plan_names(&tb, &req("l"), &w).last().unwrap(), "c/m");
}

#[test]
fn latency_explores_targets_with_fewer_than_three_samples_first() {
    let tb = table(vec![vm(
        "l",
        Strategy::Latency,
        vec![t("a/m"), t("b/m"), t("c/m")],
    )]);
    let w = World::default()
        .latency(0, 0, 10.0, 50)
        .latency(0, 1, 900.0, 2)
        .latency(0, 2, 50.0, 3);
    assert_eq!(plan_names(&tb, &req("l"), &w), ["b/m", "a/m", "c/m"]);
    let none_measured = World::default();
    assert_eq!(
        plan_names(&tb, &req("l"), &none_measured),
        ["a/m", "b/m", "c/m"]
    );
}

// ---- priority ----

#[test]
fn priority_lower_first_then_list_order() {
    let tb = table(vec![vm(
        "p",
        Strategy::Priority,
        vec![prio("a/m", 2), prio("b/m", 1), prio("c/m", 2), t("d/m")],
    )]);
    // Unset priorities come after every set one, in list order.
    assert_eq!(
        plan_names(&tb, &req("p"), &World::default()),
        ["b/m", "a/m", "c/m", "d/m"]
    );
}

#[test]
fn priority_without_priorities_is_a_failover_chain_in_list_order() {
    let tb = table(vec![vm(
        "p",
        Strategy::Priority,
        vec![t("c/m"), t("a/m"), t("b/m")],
    )]);
    let w = World::default();
    assert_eq!(firsts(&tb, &req("p"), &w, 3), ["c/m"; 3]);
    let c_down = World::default().circuit_open(0, 0);
    assert_eq!(plan_names(&tb, &req("p"), &c_down), ["a/m", "b/m"]);
}

// ---- eligibility ----

#[test]
fn fallback_candidate_false_is_never_a_fallback_but_may_be_picked() {
    let tb = table(vec![vm(
        "p",
        Strategy::Priority,
        vec![
            t("a/m"),
            Target {
                fallback_candidate: false,
                ..t("b/m")
            },
            t("c/m"),
        ],
    )]);
    assert_eq!(
        plan_names(&tb, &req("p"), &World::default()),
        ["a/m", "c/m"]
    );
    let a_down = World::default().circuit_open(0, 0);
    assert_eq!(plan_names(&tb, &req("p"), &a_down), ["b/m", "c/m"]);
}

#[test]
fn metadata_match_needs_every_pair_in_the_request_metadata() {
    let tb = table(vec![vm(
        "p",
        Strategy::Priority,
        vec![
            Target {
                extras: TargetExtras {
                    metadata_match: vec![
                        ("tier".into(), "enterprise".into()),
                        ("eu".into(), "true".into()),
                    ],
                    ..TargetExtras::default()
                }
                .boxed(),
                ..t("a/m")
            },
            t("b/m"),
        ],
    )]);
    let w = World::default();
    let meta = |v: serde_json::Value| v.as_object().unwrap().clone();
    assert_eq!(plan_names(&tb, &req("p"), &w), ["b/m"]);
    let partial = meta(serde_json::json!({"tier": "enterprise"}));
    let r = Request {
        metadata: Some(&partial),
        ..req("p")
    };
    assert_eq!(plan_names(&tb, &r, &w), ["b/m"]);
    let full = meta(serde_json::json!({"tier": "enterprise", "eu": true, "x": 1}));
    let r = Request {
        metadata: Some(&full),
        ..req("p")
    };
    assert_eq!(plan_names(&tb, &r, &w), ["a/m", "b/m"]);
    let wrong = meta(serde_json::json!({"tier": "free", "eu": true}));
    let r = Request {
        metadata: Some(&wrong),
        ..req("p")
    };
    let why = eligibility(&tb, 0, &r, &w);
    assert_eq!(why[0].1.unwrap_err(), Ineligible::MetadataMismatch);
}

#[test]
fn access_denied_targets_are_left_out() {
    let tb = table(vec![
        vm("p", Strategy::Priority, vec![t("a/m"), t("b/m")]),
        policy("a/m", &["/team"]),
    ]);
    let w = World::default();
    let outsider = up("/other");
    let r = Request {
        user_path: Some(&outsider),
        ..req("p")
    };
    assert_eq!(plan_names(&tb, &r, &w), ["b/m"]);
    assert_eq!(
        eligibility(&tb, 0, &r, &w)[0].1.unwrap_err(),
        Ineligible::AccessDenied
    );
    let member = up("/team/x");
    let r = Request {
        user_path: Some(&member),
        ..req("p")
    };
    assert_eq!(plan_names(&tb, &r, &w), ["a/m", "b/m"]);
}

#[test]
fn every_target_denied_is_access_denied() {
    let tb = table(vec![
        vm("p", Strategy::Priority, vec![t("a/m"), t("b/m")]),
        policy("a/", &["/team"]),
        policy("b/", &["/team"]),
    ]);
    let outsider = up("/other");
    let r = Request {
        user_path: Some(&outsider),
        ..req("p")
    };
    assert_eq!(
        plan(&tb, &r, &World::default()),
        Err(RouteError::AccessDenied { model: "p".into() })
    );
}

#[test]
fn unavailable_targets_are_left_out_with_their_reason() {
    let tb = table(vec![vm(
        "p",
        Strategy::Priority,
        vec![t("a/m"), t("b/m"), t("c/m"), t("d/m")],
    )]);
    let w = World::default()
        .down("a/m", Availability::NoKey)
        .down("b/m", Availability::NotListed)
        .down("c/m", Availability::Unreachable);
    assert_eq!(plan_names(&tb, &req("p"), &w), ["d/m"]);
    let why: Vec<_> = eligibility(&tb, 0, &req("p"), &w)
        .into_iter()
        .map(|(_, r)| r.err())
        .collect();
    assert_eq!(
        why,
        [
            Some(Ineligible::Unavailable(Availability::NoKey)),
            Some(Ineligible::Unavailable(Availability::NotListed)),
            Some(Ineligible::Unavailable(Availability::Unreachable)),
            None
        ]
    );
}

#[test]
fn sla_breach_makes_a_target_ineligible() {
    let tb = table(vec![vm("p", Strategy::Priority, vec![t("a/m"), t("b/m")])]);
    let w = World::default().sla_breached(0, 0);
    assert_eq!(plan_names(&tb, &req("p"), &w), ["b/m"]);
}

#[test]
fn all_circuits_open_is_its_own_error() {
    let tb = table(vec![vm(
        "p",
        Strategy::RoundRobin,
        vec![t("a/m"), t("b/m")],
    )]);
    let w = World::default().circuit_open(0, 0).circuit_open(0, 1);
    assert_eq!(
        plan(&tb, &req("p"), &w),
        Err(RouteError::AllCircuitsOpen {
            virtual_model: "p".into()
        })
    );
    // Open circuits and breached SLAs together: still nothing healthy to try.
    let w = World::default().circuit_open(0, 0).sla_breached(0, 1);
    assert!(matches!(
        plan(&tb, &req("p"), &w),
        Err(RouteError::AllCircuitsOpen { .. })
    ));
}

#[test]
fn all_circuits_open_on_a_shadow_falls_through_to_the_shadowed_model() {
    let tb = table(vec![vm(
        "a/m",
        Strategy::Priority,
        vec![t("b/m"), t("c/m")],
    )]);
    let w = World::default().circuit_open(0, 0).circuit_open(0, 1);
    let p = plan(&tb, &req("a/m"), &w).unwrap();
    assert_eq!(p.virtual_model, None);
    assert_eq!(names(&tb, &p), ["a/m"]);
}

#[test]
fn a_concrete_model_with_an_open_circuit_is_its_own_error() {
    let tb = table(vec![]);
    let w = World::default().concrete_open("a/m");
    assert_eq!(
        plan(&tb, &req("a/m"), &w),
        Err(RouteError::CircuitOpen {
            model: "a/m".into()
        })
    );
    // The body's `provider` field reaches the same model, and the same circuit.
    let r = Request {
        provider: Some("a"),
        ..req("m")
    };
    assert!(matches!(
        plan(&tb, &r, &w),
        Err(RouteError::CircuitOpen { .. })
    ));
    // Another model of the provider is unaffected.
    assert!(plan(&tb, &req("a/other"), &w).is_ok());
}

#[test]
fn a_concrete_circuit_does_not_close_a_virtual_models_target() {
    // A redirect's targets keep their own health: the concrete model's circuit is the direct
    // callers' alone.
    let tb = table(vec![vm("smart", Strategy::Priority, vec![t("a/m")])]);
    let w = World::default().concrete_open("a/m");
    assert_eq!(plan_names(&tb, &req("smart"), &w), ["a/m"]);
}

// ---- resolution and fall-through ----

#[test]
fn redirect_outside_its_user_paths_falls_through_to_the_literal_name() {
    let tb = table(vec![VirtualModel {
        user_paths: Some([up("/team")].into()),
        ..vm("a/m", Strategy::RoundRobin, vec![t("b/m")])
    }]);
    let w = World::default();
    let outsider = up("/team-x");
    let p = plan(
        &tb,
        &Request {
            user_path: Some(&outsider),
            ..req("a/m")
        },
        &w,
    )
    .unwrap();
    assert_eq!(
        (p.virtual_model, names(&tb, &p)),
        (None, vec!["a/m".into()])
    );
    let member = up("/team/x");
    let p = plan(
        &tb,
        &Request {
            user_path: Some(&member),
            ..req("a/m")
        },
        &w,
    )
    .unwrap();
    assert_eq!(
        (p.virtual_model, names(&tb, &p)),
        (Some(0), vec!["b/m".into()])
    );
}

#[test]
fn redirect_with_no_eligible_target_falls_through_or_is_not_found() {
    let tb = table(vec![
        vm("a/m", Strategy::RoundRobin, vec![t("b/m")]),
        vm("smart", Strategy::RoundRobin, vec![t("b/m")]),
    ]);
    let w = World::default().down("b/m", Availability::NotListed);
    assert_eq!(plan_names(&tb, &req("a/m"), &w), ["a/m"]);
    assert!(matches!(
        plan(&tb, &req("smart"), &w),
        Err(RouteError::NotFound { .. })
    ));
}

#[test]
fn disabled_redirects_are_ignored_and_slugs_are_second_names() {
    let tb = table(vec![
        VirtualModel {
            enabled: false,
            ..vm("a/m", Strategy::RoundRobin, vec![t("b/m")])
        },
        VirtualModel {
            slug: Some("smart-v1".into()),
            ..vm("smart", Strategy::RoundRobin, vec![t("c/m")])
        },
    ]);
    let w = World::default();
    assert_eq!(plan_names(&tb, &req("a/m"), &w), ["a/m"]);
    assert_eq!(plan_names(&tb, &req(" smart-v1 "), &w), ["c/m"]);
}

#[test]
fn model_types_refuse_other_operations_naming_the_operation() {
    let tb = table(vec![VirtualModel {
        model_types: Some([Operation::Chat, Operation::Messages].into()),
        ..vm("smart", Strategy::RoundRobin, vec![t("a/m")])
    }]);
    let r = Request {
        operation: Operation::Embedding,
        ..req("smart")
    };
    let e = plan(&tb, &r, &World::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "virtual model smart does not serve embedding requests (model_types: chat, messages)"
    );
}

#[test]
fn body_provider_bypasses_virtual_models() {
    let tb = table(vec![vm("m", Strategy::RoundRobin, vec![t("a/x")])]);
    let r = Request {
        provider: Some("b"),
        ..req("m")
    };
    let p = plan(&tb, &r, &World::default()).unwrap();
    assert_eq!(
        (p.virtual_model, names(&tb, &p)),
        (None, vec!["b/m".into()])
    );
}

#[test]
fn bare_target_models_are_located_in_the_catalogs() {
    let tb = table(vec![vm(
        "smart",
        Strategy::Priority,
        vec![Target {
            provider: None,
            model: "llama".into(),
            name: "llama".into(),
            ..t("a/llama")
        }],
    )]);
    let mut w = World::default();
    assert_eq!(
        eligibility(&tb, 0, &req("smart"), &w)[0].1.unwrap_err(),
        Ineligible::NoProvider
    );
    w.located.insert("llama".into(), 2);
    assert_eq!(plan_names(&tb, &req("smart"), &w), ["c/llama"]);
}

#[test]
fn unknown_model_is_not_found_and_unusable_concrete_models_say_why() {
    let tb = table(vec![]);
    let w = World::default().down("a/m", Availability::NoKey);
    assert_eq!(
        plan(&tb, &req("nope"), &w),
        Err(RouteError::NotFound {
            model: "nope".into()
        })
    );
    assert_eq!(
        plan(&tb, &req("a/m"), &w).unwrap_err().to_string(),
        "model a/m is not available: provider has no API key"
    );
}

// ---- session affinity ----

#[test]
fn sessions_keep_their_pinned_target_under_round_robin_without_rotating() {
    let tb = table(vec![vm(
        "lb",
        Strategy::RoundRobin,
        vec![t("a/m"), t("b/m")],
    )]);
    let w = World::default().pin(0, "s1", 1);
    let r = Request {
        session_key: Some("s1"),
        ..req("lb")
    };
    assert_eq!(firsts(&tb, &r, &w, 3), ["b/m"; 3]);
    assert_eq!(plan_names(&tb, &r, &w), ["b/m", "a/m"]);
    assert_eq!(counter(&tb, 0), 0);
    // Another session is not affected.
    let other = Request {
        session_key: Some("s2"),
        ..req("lb")
    };
    assert_eq!(firsts(&tb, &other, &w, 2), ["a/m", "b/m"]);
}

#[test]
fn a_pin_to_an_ineligible_target_is_ignored() {
    let tb = table(vec![vm(
        "lb",
        Strategy::RoundRobin,
        vec![t("a/m"), t("b/m"), t("c/m")],
    )]);
    let w = World::default().pin(0, "s1", 1).circuit_open(0, 1);
    let r = Request {
        session_key: Some("s1"),
        ..req("lb")
    };
    assert_eq!(plan_names(&tb, &r, &w), ["a/m", "c/m"]);
}

#[test]
fn a_round_robin_pin_to_a_fallback_only_target_is_ignored() {
    // A session pinned while every weighted target was down must return to them.
    let tb = table(vec![vm(
        "lb",
        Strategy::RoundRobin,
        vec![t("a/m"), weighted("b/m", 0.0)],
    )]);
    let w = World::default().pin(0, "s1", 1);
    let r = Request {
        session_key: Some("s1"),
        ..req("lb")
    };
    assert_eq!(plan_names(&tb, &r, &w), ["a/m", "b/m"]);
}

#[test]
fn sessions_are_honoured_by_latency() {
    let tb = table(vec![vm("l", Strategy::Latency, vec![t("a/m"), t("b/m")])]);
    let w = World::default()
        .latency(0, 0, 10.0, 10)
        .latency(0, 1, 500.0, 10)
        .pin(0, "s1", 1);
    let r = Request {
        session_key: Some("s1"),
        ..req("l")
    };
    assert_eq!(plan_names(&tb, &r, &w), ["b/m", "a/m"]);
}

#[test]
fn sessions_are_ignored_by_cost_and_priority() {
    for strategy in [Strategy::Cost, Strategy::Priority] {
        let tb = table(vec![vm(
            "x",
            strategy,
            vec![priced("a/m", 1.0), priced("b/m", 2.0)],
        )]);
        let w = World::default().pin(0, "s1", 1);
        let r = Request {
            session_key: Some("s1"),
            ..req("x")
        };
        assert_eq!(plan_names(&tb, &r, &w), ["a/m", "b/m"], "{strategy:?}");
    }
}

#[test]
fn sessions_are_ignored_when_affinity_is_off() {
    let tb = table(vec![VirtualModel {
        session: SessionConfig {
            enabled: false,
            ..SessionConfig::default()
        },
        ..vm("lb", Strategy::RoundRobin, vec![t("a/m"), t("b/m")])
    }]);
    let w = World::default().pin(0, "s1", 1);
    let r = Request {
        session_key: Some("s1"),
        ..req("lb")
    };
    assert_eq!(firsts(&tb, &r, &w, 2), ["a/m", "b/m"]);
}

// ---- fallbacks of concrete models (GoModel's `fallback` rules) ----

fn with_rules(mut tb: Table, mode: FallbackMode, rules: &[(&str, &[&str])]) -> Table {
    tb.fallbacks = FallbackRules {
        default_mode: mode,
        manual: rules
            .iter()
            .map(|(k, v)| {
                (
                    SmolStr::from(*k),
                    v.iter().map(|s| SmolStr::from(*s)).collect(),
                )
            })
            .collect(),
        ..FallbackRules::default()
    };
    tb
}

#[test]
fn a_concrete_model_requested_directly_gets_its_manual_fallbacks_in_order() {
    let tb = with_rules(
        table(vec![]),
        FallbackMode::Manual,
        &[("a/m", &["b/m", "c/m"])],
    );
    assert_eq!(
        plan_names(&tb, &req("a/m"), &World::default()),
        ["a/m", "b/m", "c/m"]
    );
}

#[test]
fn a_bare_rule_key_covers_the_model_at_any_provider() {
    let tb = with_rules(table(vec![]), FallbackMode::Manual, &[("m", &["c/x"])]);
    assert_eq!(
        plan_names(&tb, &req("b/m"), &World::default()),
        ["b/m", "c/x"]
    );
}

#[test]
fn unavailable_duplicate_and_self_fallbacks_are_left_out() {
    let tb = with_rules(
        table(vec![]),
        FallbackMode::Manual,
        &[("a/m", &["a/m", "b/m", "b/m", "c/m", "nowhere/x"])],
    );
    let w = World::default().down("c/m", Availability::NoKey);
    assert_eq!(plan_names(&tb, &req("a/m"), &w), ["a/m", "b/m"]);
}

#[test]
fn mode_off_by_default_or_per_model_gives_no_fallbacks() {
    let rules: &[(&str, &[&str])] = &[("a/m", &["b/m"]), ("a/n", &["b/n"])];
    let tb = with_rules(table(vec![]), FallbackMode::Off, rules);
    assert_eq!(plan_names(&tb, &req("a/m"), &World::default()), ["a/m"]);

    let mut tb = with_rules(table(vec![]), FallbackMode::Manual, rules);
    tb.fallbacks
        .overrides
        .insert(SmolStr::from("a/m"), FallbackMode::Off);
    assert_eq!(plan_names(&tb, &req("a/m"), &World::default()), ["a/m"]);
    assert_eq!(
        plan_names(&tb, &req("a/n"), &World::default()),
        ["a/n", "b/n"]
    );
}

#[test]
fn embeddings_get_no_fallbacks() {
    let tb = with_rules(table(vec![]), FallbackMode::Manual, &[("a/m", &["b/m"])]);
    let r = Request {
        operation: Operation::Embedding,
        ..req("a/m")
    };
    assert_eq!(plan_names(&tb, &r, &World::default()), ["a/m"]);
}

#[test]
fn fallback_rules_do_not_touch_virtual_models() {
    let tb = with_rules(
        table(vec![vm("lb", Strategy::Priority, vec![t("a/m")])]),
        FallbackMode::Manual,
        &[("a/m", &["b/m"]), ("lb", &["c/m"])],
    );
    assert_eq!(plan_names(&tb, &req("lb"), &World::default()), ["a/m"]);
}

// ---- retry backoff ----

fn backoff(initial: u64, factor: f64, max: u64, jitter: f64) -> RetryPolicy {
    RetryPolicy {
        attempts: 5,
        initial_delay_ms: initial,
        backoff_factor: factor,
        max_delay_ms: max,
        jitter_factor: jitter,
        on_status: vec![500],
    }
}

#[test]
fn backoff_grows_by_the_factor_and_stops_at_the_maximum() {
    let p = backoff(1000, 2.0, 5000, 0.0);
    let waits: Vec<u64> = (1..=5).map(|n| p.delay_ms(n, 0.5)).collect();
    assert_eq!(waits, [1000, 2000, 4000, 5000, 5000]);
}

#[test]
fn jitter_spreads_the_wait_either_way_by_its_share() {
    let p = backoff(1000, 2.0, 30_000, 0.1);
    assert_eq!(p.delay_ms(1, 0.0), 900);
    assert_eq!(p.delay_ms(1, 0.5), 1000);
    assert_eq!(p.delay_ms(1, 1.0), 1100);
    assert_eq!(p.delay_ms(2, 0.0), 1800);
}

#[test]
fn jitter_never_passes_the_maximum_and_odd_inputs_stay_in_bounds() {
    let p = backoff(1000, 2.0, 1000, 0.5);
    assert_eq!(p.delay_ms(1, 1.0), 1000);
    assert_eq!(p.delay_ms(1, f64::NAN), 1000);
    assert_eq!(p.delay_ms(u32::MAX, 0.5), 1000);
    let constant = backoff(100, 0.0, 30_000, 0.0);
    assert_eq!(constant.delay_ms(4, 0.5), 100);
}

#[test]
fn the_default_policy_keeps_one_retry_after_100_ms() {
    let p = RetryPolicy::default();
    assert_eq!((p.attempts, p.delay_ms(1, 0.5)), (2, 100));
}

// ---- properties ----

mod properties {
    use super::*;
    use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, prop_assume, prop_oneof};
    use proptest::prelude::{proptest, Just};
    use proptest::strategy::Strategy as Gen;

    /// The integer share `schedule::build` gives a weight: three decimals, at least 1.
    fn milli(w: f64) -> u64 {
        if w > 0.0 {
            ((w * 1000.0).round() as u64).max(1)
        } else {
            0
        }
    }

    fn weight() -> impl Gen<Value = f64> {
        prop_oneof![
            1 => Just(0.0),
            4 => 0.001f64..1000.0,
            2 => (1u32..20).prop_map(f64::from),
        ]
    }

    fn rr_table(weights: &[f64]) -> Table {
        let targets = weights
            .iter()
            .enumerate()
            .map(|(i, w)| weighted(&format!("{}/m{i}", PROVIDERS[i % 4]), *w))
            .collect();
        table(vec![vm("lb", Strategy::RoundRobin, targets)])
    }

    proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(128))]

        /// Over one period of the schedule every weighted target is picked in proportion to
        /// its weight: exactly (at three decimals) when the period fits `MAX_PERIOD`, within
        /// the documented down-scaling otherwise; weight 0 is never picked first.
        #[test]
        fn round_robin_long_run_shares_match_weights(
            weights in prop::collection::vec(weight(), 1..7)
                .prop_filter("one weight above 0", |w| w.iter().any(|x| *x > 0.0))
        ) {
            let tb = rr_table(&weights);
            let period = tb.models[0].schedule.len();
            prop_assert!(period as u64 <= schedule::MAX_PERIOD + weights.len() as u64);
            let w = World::default();
            let mut counts = vec![0usize; weights.len()];
            // Two whole periods: the second must repeat the first exactly.
            for _ in 0..2 * period {
                let p = plan(&tb, &req("lb"), &w).unwrap();
                counts[p.attempts[0].target.unwrap()] += 1;
            }
            let ints: Vec<u64> = weights.iter().map(|w| milli(*w)).collect();
            let total: u64 = ints.iter().sum();
            let n = weights.len() as f64;
            for (i, c) in counts.iter().enumerate() {
                prop_assert_eq!(c % 2, 0, "each period repeats");
                if ints[i] == 0 {
                    prop_assert_eq!(*c, 0);
                    continue;
                }
                prop_assert!(*c > 0, "every weighted target serves");
                let got = *c as f64 / (2 * period) as f64;
                let want = ints[i] as f64 / total as f64;
                let slack = if total / gcd_all(&ints) <= schedule::MAX_PERIOD {
                    1e-9
                } else {
                    (n + 1.0) / period as f64
                };
                prop_assert!(
                    (got - want).abs() <= slack,
                    "target {} got {} want {} (period {})", i, got, want, period
                );
            }
        }

        /// With some weighted targets out, the others split the traffic in proportion to
        /// their own weights, exactly, over one period of what is left.
        #[test]
        fn round_robin_shares_stay_exact_among_the_eligible(
            weights in prop::collection::vec(1u32..6, 2..6),
            out in prop::collection::vec(any::<bool>(), 6),
        ) {
            let weights: Vec<f64> = weights.into_iter().map(f64::from).collect();
            let tb = rr_table(&weights);
            let mut w = World::default();
            for (i, o) in out.iter().take(weights.len()).enumerate() {
                if *o {
                    w = w.circuit_open(0, i);
                }
            }
            let eligible: Vec<usize> = (0..weights.len()).filter(|i| !out[*i]).collect();
            prop_assume!(eligible.len() >= 2);
            let total: f64 = eligible.iter().map(|i| weights[*i]).sum();
            let rounds = total as usize * 3;
            let mut counts = vec![0usize; weights.len()];
            for _ in 0..rounds {
                let p = plan(&tb, &req("lb"), &w).unwrap();
                counts[p.attempts[0].target.unwrap()] += 1;
            }
            for i in 0..weights.len() {
                let want = if out[i] { 0 } else { weights[i] as usize * 3 };
                prop_assert_eq!(counts[i], want, "target {}: {:?}", i, counts);
            }
        }

        /// Whatever the world, a plan holds only eligible targets, each once, the first being
        /// the strategy's pick and every other one a fallback candidate; and no eligible
        /// fallback candidate is left out.
        #[test]
        fn a_plan_never_contains_an_ineligible_target(
            spec in prop::collection::vec(
                (0usize..4, 0usize..3, weight(), any::<bool>(), prop::option::of(0.0f64..50.0),
                 0i64..3, any::<bool>()),
                1..7,
            ),
            strategy in 0usize..4,
            world in prop::collection::vec((0usize..8, 0usize..4, 0.0f64..300.0, 0u32..6), 7),
            pin in prop::option::of(0usize..7),
            deny_b in any::<bool>(),
            gold in any::<bool>(),
        ) {
            let strategies = [
                Strategy::RoundRobin,
                Strategy::Cost,
                Strategy::Latency,
                Strategy::Priority,
            ];
            let mut targets: Vec<Target> = Vec::new();
            for (p, m, weight, fc, price, priority, meta) in &spec {
                let name = format!("{}/m{m}", PROVIDERS[*p]);
                if targets.iter().any(|t| t.name == name) {
                    continue;
                }
                targets.push(Target {
                    weight: *weight,
                    fallback_candidate: *fc,
                    price: *price,
                    priority: *priority,
                    extras: TargetExtras {
                        metadata_match: if *meta {
                            vec![("tier".into(), "gold".into())]
                        } else {
                            vec![]
                        },
                        ..TargetExtras::default()
                    }
                    .boxed(),
                    ..t(&name)
                });
            }
            let n = targets.len();
            let mut models = vec![vm("x", strategies[strategy], targets)];
            if deny_b {
                models.push(policy("b/", &["/team"]));
            }
            let tb = table(models);
            let mut w = World::default();
            for (ti, (avail, health, ms, samples)) in world.iter().take(n).enumerate() {
                let name = tb.models[0].targets[ti].name.clone();
                match avail {
                    0 => { w = w.down(&name, Availability::NoKey); }
                    1 => { w = w.down(&name, Availability::NotListed); }
                    2 => { w = w.down(&name, Availability::Unreachable); }
                    _ => {}
                }
                match health {
                    0 => { w = w.circuit_open(0, ti); }
                    1 => { w = w.sla_breached(0, ti); }
                    _ => {}
                }
                w = w.latency(0, ti, *ms, *samples);
            }
            if let Some(p) = pin {
                w = w.pin(0, "s", p % n);
            }
            let caller = up("/other");
            let meta = serde_json::json!({"tier": if gold { "gold" } else { "silver" }});
            let r = Request {
                user_path: Some(&caller),
                session_key: Some("s"),
                metadata: meta.as_object(),
                ..req("x")
            };
            let checks = eligibility(&tb, 0, &r, &w);
            let eligible: Vec<usize> = (0..n).filter(|i| checks[*i].1.is_ok()).collect();
            match plan(&tb, &r, &w) {
                Ok(p) if p.virtual_model == Some(0) => {
                    let picked: Vec<usize> =
                        p.attempts.iter().map(|a| a.target.unwrap()).collect();
                    for ti in &picked {
                        prop_assert!(checks[*ti].1.is_ok(), "ineligible {} in {:?}", ti, picked);
                    }
                    let mut sorted = picked.clone();
                    sorted.sort_unstable();
                    sorted.dedup();
                    prop_assert_eq!(sorted.len(), picked.len(), "duplicates in {:?}", picked);
                    for ti in &picked[1..] {
                        prop_assert!(tb.models[0].targets[*ti].fallback_candidate);
                    }
                    for ti in &eligible {
                        if *ti != picked[0] && tb.models[0].targets[*ti].fallback_candidate {
                            prop_assert!(picked.contains(ti), "{} left out of {:?}", ti, picked);
                        }
                    }
                }
                _ => prop_assert!(eligible.is_empty(), "a plan was due: {:?}", eligible),
            }
        }
    }

    fn gcd_all(v: &[u64]) -> u64 {
        fn gcd(a: u64, b: u64) -> u64 {
            if b == 0 {
                a
            } else {
                gcd(b, a % b)
            }
        }
        v.iter().copied().filter(|x| *x > 0).fold(0, gcd)
    }
}

impl World {
    fn state_of(mut self, vm: usize, t: usize, f: impl FnOnce(&mut TargetState)) -> World {
        f(self.state.entry((vm, t)).or_default());
        self
    }
}

#[test]
fn a_target_low_on_its_rate_limit_is_tried_after_the_others() {
    let tb = table(vec![vm(
        "p",
        Strategy::Priority,
        vec![t("a/m"), t("b/m"), t("c/m")],
    )]);
    let w = World::default().state_of(0, 0, |s| s.remaining_fraction = Some(0.0));
    assert_eq!(plan_names(&tb, &req("p"), &w), ["b/m", "c/m", "a/m"]);
    // At the threshold or above, nothing moves.
    let w = World::default().state_of(0, 0, |s| s.remaining_fraction = Some(0.05));
    assert_eq!(plan_names(&tb, &req("p"), &w), ["a/m", "b/m", "c/m"]);
}

#[test]
fn the_steering_threshold_is_the_virtual_models() {
    let mut v = vm("p", Strategy::Priority, vec![t("a/m"), t("b/m")]);
    v.steer.min_remaining_fraction = 0.5;
    let tb = table(vec![v]);
    let w = World::default().state_of(0, 0, |s| s.remaining_fraction = Some(0.3));
    assert_eq!(plan_names(&tb, &req("p"), &w), ["b/m", "a/m"]);
    let mut off = vm("p", Strategy::Priority, vec![t("a/m"), t("b/m")]);
    off.steer.min_remaining_fraction = 0.0;
    let tb = table(vec![off]);
    let w = World::default().state_of(0, 0, |s| s.remaining_fraction = Some(0.0));
    assert_eq!(plan_names(&tb, &req("p"), &w), ["a/m", "b/m"]);
}

#[test]
fn a_rate_limited_target_is_left_out_while_another_is_eligible() {
    let tb = table(vec![vm("p", Strategy::Priority, vec![t("a/m"), t("b/m")])]);
    let w = World::default().state_of(0, 0, |s| s.rate_limited = true);
    assert_eq!(plan_names(&tb, &req("p"), &w), ["b/m"]);
    // Alone, it is still tried (the client gets its answer, not a routing error).
    let w = World::default()
        .state_of(0, 0, |s| s.rate_limited = true)
        .state_of(0, 1, |s| s.rate_limited = true);
    assert_eq!(plan_names(&tb, &req("p"), &w), ["a/m", "b/m"]);
    // A low target still goes before a rate-limited one's exclusion is lifted.
    let w = World::default()
        .state_of(0, 0, |s| s.rate_limited = true)
        .state_of(0, 1, |s| s.remaining_fraction = Some(0.0));
    assert_eq!(plan_names(&tb, &req("p"), &w), ["b/m"]);
}

#[test]
fn a_target_whose_context_window_is_too_small_is_skipped() {
    let small = Target {
        context_window: Some(8_000),
        ..t("a/m")
    };
    let large = Target {
        context_window: Some(128_000),
        ..t("b/m")
    };
    let tb = table(vec![vm(
        "p",
        Strategy::Priority,
        vec![small, large, t("c/m")],
    )]);
    let w = World::default();
    let long = Request {
        input_tokens: Some(20_000),
        ..req("p")
    };
    // An unknown window is never a reason to skip.
    assert_eq!(plan_names(&tb, &long, &w), ["b/m", "c/m"]);
    assert_eq!(
        eligibility(&tb, 0, &long, &w)[0].1.unwrap_err(),
        Ineligible::ContextTooSmall
    );
    let short = Request {
        input_tokens: Some(100),
        ..req("p")
    };
    assert_eq!(plan_names(&tb, &short, &w), ["a/m", "b/m", "c/m"]);
}

#[test]
fn strategy_spellings_are_read_in_any_case() {
    for (raw, want) in [
        ("round_robin", Some(Strategy::RoundRobin)),
        (" Weight-Based-Routing ", Some(Strategy::RoundRobin)),
        ("WEIGHTED_ROUND_ROBIN", Some(Strategy::RoundRobin)),
        ("Lowest_Cost", Some(Strategy::Cost)),
        ("latency-based-routing", Some(Strategy::Latency)),
        ("FALLBACK", Some(Strategy::Priority)),
        ("priority-based-routing", Some(Strategy::Priority)),
        ("random", None),
        ("round robin", None),
        ("", None),
        ("cost\u{0130}", None),
    ] {
        assert_eq!(Strategy::parse(raw), want, "{raw:?}");
    }
}

#[test]
fn a_policy_reference_round_trips_and_falls_back_to_a_lookup_past_u32() {
    use super::model::PolicyRef;
    assert_eq!(PolicyRef::resolved(None).get(), Some(None));
    assert_eq!(PolicyRef::resolved(Some(7)).get(), Some(Some(7)));
    let past = u32::MAX as usize + 1;
    assert_eq!(PolicyRef::resolved(Some(past)), PolicyRef::Unresolved);
    assert_eq!(PolicyRef::Unresolved.get(), None);
    assert_eq!(std::mem::size_of::<PolicyRef>(), 8);
}

#[test]
fn a_target_that_sets_no_extras_holds_no_box() {
    assert!(TargetExtras::default().boxed().is_none());
    let set = TargetExtras {
        headers_remove: vec!["x-a".into()],
        ..TargetExtras::default()
    }
    .boxed()
    .expect("a header rule is an extra");
    let target = Target {
        extras: Some(set),
        ..t("a/m")
    };
    assert_eq!(target.extras().headers_remove, ["x-a"]);
    assert!(t("a/m").extras().headers_remove.is_empty());
}

/// The sizes that hold 100,000 virtual models under 200 MB (BENCHMARKS.md, "Compact targets
/// and declarations"): a field added inline to one of these shows here first.
#[test]
fn routing_and_declaration_types_stay_compact() {
    use crate::config::schema::{TargetSpec, VirtualModelSpec};
    assert!(std::mem::size_of::<Target>() <= 160);
    assert!(std::mem::size_of::<VirtualModel>() <= 256);
    assert!(std::mem::size_of::<VirtualModelSpec>() <= 368);
    assert!(std::mem::size_of::<TargetSpec>() <= 176);
}

/// `Table::redirect` finds every source among many (names short and long, so inline and heap
/// `SmolStr`s), misses what is not declared, and lets a later model of one source replace an
/// earlier, as the map it replaced did.
#[test]
fn redirects_are_found_by_source_among_many() {
    let mut models: Vec<VirtualModel> = (0..2000)
        .map(|i| {
            let source = if i % 2 == 0 {
                format!("m{i}")
            } else {
                format!("a-rather-long-virtual-model-name-{i}")
            };
            vm(&source, Strategy::RoundRobin, vec![t("a/m")])
        })
        .collect();
    models.push(vm("m10", Strategy::Priority, vec![t("b/m")]));
    let tb = table(models);
    for i in 0..2000 {
        let source = tb.models[i].source.clone();
        let expected = if source == "m10" { 2000 } else { i };
        assert_eq!(tb.redirect(&source), Some(expected), "{source}");
    }
    assert_eq!(tb.models[2000].strategy, Strategy::Priority);
    for missing in ["m1", "m2001", "", "a-rather-long-virtual-model-name-0"] {
        assert_eq!(tb.redirect(missing), None, "{missing}");
    }
}

/// What a plan reads of a virtual model lies in its first two cache lines (BENCHMARKS.md,
/// "Routing 100,000 virtual models, and huge pages off"): a field moved or grown out of them
/// shows here first.
#[test]
fn a_plan_reads_two_cache_lines_of_a_virtual_model() {
    use std::mem::{align_of, offset_of, size_of};
    assert_eq!(align_of::<VirtualModel>(), 64);
    let end = |offset: usize, size: usize| offset + size;
    for (field, last_byte) in [
        (
            "source",
            end(offset_of!(VirtualModel, source), size_of::<SmolStr>()),
        ),
        (
            "targets",
            end(offset_of!(VirtualModel, targets), size_of::<Vec<Target>>()),
        ),
        ("counter", end(offset_of!(VirtualModel, counter), 8)),
        (
            "schedule",
            end(
                offset_of!(VirtualModel, schedule),
                size_of::<crate::routing::schedule::Schedule>(),
            ),
        ),
        ("user_paths", end(offset_of!(VirtualModel, user_paths), 16)),
        (
            "model_types",
            end(offset_of!(VirtualModel, model_types), 16),
        ),
        ("steer", end(offset_of!(VirtualModel, steer), 8)),
    ] {
        assert!(last_byte <= 128, "{field} ends at byte {last_byte}");
    }
}
