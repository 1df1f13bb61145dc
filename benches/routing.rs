//! The routing core's cost per request: `routing::plan::plan` over tables of 10, 1,000, 10,000
//! and 100,000 virtual models (round_robin, cost, latency and priority in turn, 2 to 4 targets each,
//! plus access policies of every kind), each iteration planning the next model of a shuffled
//! list so that lookups do not stay in one cache line.
//!
//! The table is built by the gateway's allocator, with transparent huge pages off, as in the
//! gateway.
//!
//! The injected world is cheap on purpose (every model available, latency computed from the
//! indices): what is measured is the routing core, not the health lookups behind it.
//!
//! `cargo bench --bench routing`

use std::cell::Cell;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};

use modelgate::routing::model::{Operation, Strategy, Target, VirtualModel};
use modelgate::routing::plan::{plan, Availability, Conditions, Request, TargetState};
use modelgate::routing::table::Table;
use modelgate::routing::user_path::UserPath;

/// The gateway's own allocator, so that the table lies in memory as it does in the gateway.
#[global_allocator]
static ALLOC: modelgate::Allocator = modelgate::Allocator;

const PROVIDERS: [&str; 8] = [
    "openai",
    "anthropic",
    "groq",
    "mistral",
    "together",
    "fireworks",
    "deepseek",
    "openrouter",
];
const STRATEGIES: [Strategy; 4] = [
    Strategy::RoundRobin,
    Strategy::Cost,
    Strategy::Latency,
    Strategy::Priority,
];

fn target(provider: usize, model: String, j: usize) -> Target {
    Target {
        weight: (j + 1) as f64,
        priority: j as i64,
        // One target in five has no known price.
        price: (j % 5 != 4).then_some(1.5 + j as f64),
        ..Target::new(
            Some(provider),
            &model,
            &format!("{}/{model}", PROVIDERS[provider]),
        )
    }
}

fn virtual_model(source: String, strategy: Strategy, targets: Vec<Target>) -> VirtualModel {
    VirtualModel::new(&source, strategy, targets)
}

/// A table of `n` redirects and the names to request, shuffled.
fn table(n: usize) -> (Table, Vec<String>) {
    let mut models = Vec::with_capacity(n + n / 10 + 2);
    for i in 0..n {
        let k = 2 + i % 3;
        let targets = (0..k)
            .map(|j| {
                target(
                    (i + j) % PROVIDERS.len(),
                    format!("model-{}-{j}", i % 997),
                    j,
                )
            })
            .collect();
        let mut vm = virtual_model(format!("virtual-{i}"), STRATEGIES[i % 4], targets);
        if i % 7 == 0 {
            vm.user_paths = Some([UserPath::parse("/org").expect("path")].into());
        }
        models.push(vm);
    }
    // Access policies of every kind: exact, provider-wide, bare model id.
    for i in (0..n).step_by(10) {
        let p = PROVIDERS[i % PROVIDERS.len()];
        let mut exact = virtual_model(
            format!("{p}/model-{}-0", i % 997),
            Strategy::RoundRobin,
            vec![],
        );
        exact.user_paths = Some([UserPath::parse("/org/team").expect("path")].into());
        models.push(exact);
    }
    let mut provider_wide = virtual_model("openrouter/".into(), Strategy::RoundRobin, vec![]);
    provider_wide.user_paths = Some([UserPath::root()].into());
    models.push(provider_wide);
    models.push(virtual_model(
        "model-1-1".into(),
        Strategy::RoundRobin,
        vec![],
    ));
    let table = Table::new(
        models,
        PROVIDERS.iter().map(|s| s.to_string()).collect(),
        true,
    );
    let mut names: Vec<String> = (0..n).map(|i| format!("virtual-{i}")).collect();
    let mut rng = fastrand::Rng::with_seed(7);
    rng.shuffle(&mut names);
    (table, names)
}

/// Everything available; latency scores spread so that bands and ordering both happen.
struct World {
    dice: Cell<u64>,
}

impl Conditions for World {
    fn availability(&self, _provider: usize, _model: &str) -> Availability {
        Availability::Available
    }
    fn locate(&self, _model: &str) -> Option<usize> {
        None
    }
    fn target_state(&self, vm: usize, target: usize) -> TargetState {
        TargetState {
            circuit_open: false,
            sla_breached: false,
            latency_ms: Some(100.0 + ((vm * 7 + target * 13) % 50) as f64),
            samples: 10,
            ..TargetState::default()
        }
    }
    fn random(&self) -> u64 {
        let n = self.dice.get();
        self.dice.set(n.wrapping_add(1));
        n
    }
}

fn bench(c: &mut Criterion) {
    // As the gateway's `main` does: the table lies in 4 KiB pages.
    modelgate::allocator::without_huge_pages();
    let mut group = c.benchmark_group("plan");
    let caller = UserPath::parse("/org/team/alice").expect("path");
    for n in [10usize, 1_000, 10_000, 100_000] {
        let (table, names) = table(n);
        let world = World { dice: Cell::new(0) };
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                let model = &names[i % names.len()];
                i += 1;
                let req = Request {
                    model,
                    provider: None,
                    user_path: Some(&caller),
                    operation: Operation::Chat,
                    metadata: None,
                    session_key: None,
                    input_tokens: None,
                };
                black_box(plan(&table, &req, &world)).is_ok()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
