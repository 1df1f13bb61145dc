//! Reload cost: generates a config with `--models` virtual models (each a weighted round-robin
//! over two targets), then times, over `--runs` runs, the steps of a reload: reading and checking
//! the file (`config::load`; of which the YAML parser alone is timed apart), building the
//! snapshot (`Snapshot::build`, handing over the previous snapshot's counters as a reload does),
//! and the whole `App::reload` (both, plus the health sync and the swap). Prints a table and one
//! JSON line.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use clap::Parser;
use modelgate::app::{App, ConfigSource};
use modelgate::catalog::StateRegistry;
use modelgate::config::{self, env::Env};
use modelgate::snapshot::Snapshot;

/// The gateway binary's allocator, so that the timings are the gateway's.
#[global_allocator]
static ALLOCATOR: modelgate::Allocator = modelgate::Allocator;

#[derive(Parser)]
#[command(about = "Time a config reload with many virtual models")]
struct Args {
    /// Virtual models in the generated config.
    #[arg(long, default_value_t = 10_000)]
    models: usize,
    /// Timed runs of each step.
    #[arg(long, default_value_t = 10)]
    runs: usize,
}

/// A config with `n` virtual models over one provider's 100 models.
fn generate(n: usize) -> String {
    let mut s = String::with_capacity(n * 160);
    s.push_str("providers:\n  bench:\n    type: openai_compatible\n    base_url: http://127.0.0.1:9/v1\n    api_key: unused\n    models: [");
    for m in 0..100 {
        let _ = write!(s, "{}model-{m}", if m > 0 { ", " } else { "" });
    }
    s.push_str("]\nvirtual_models:\n");
    for i in 0..n {
        let _ = write!(
            s,
            "  - source: vm-{i}\n    strategy: round_robin\n    targets:\n      - {{model: bench/model-{}, weight: 2}}\n      - {{model: bench/model-{}, weight: 1}}\n",
            i % 100,
            (i + 1) % 100
        );
    }
    s
}

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[0]), ms(v[v.len() / 2]), ms(v[v.len() - 1]))
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    if args.runs == 0 || args.models == 0 {
        return Err("--runs and --models must be above 0".into());
    }
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let path = dir.path().join("config.yaml");
    let text = generate(args.models);
    std::fs::write(&path, &text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let env = Env::default();

    let mut yaml = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        let v: serde_yaml::Value =
            serde_yaml::from_str(&text).map_err(|e| format!("generated YAML: {e}"))?;
        yaml.push(t.elapsed());
        drop(v);
    }
    let mut load = Vec::new();
    let mut build = Vec::new();
    let registry = StateRegistry::default();
    let mut previous: Option<Snapshot> = None;
    for _ in 0..args.runs {
        let t = Instant::now();
        let loaded = config::load(Some(&path), &env)?;
        load.push(t.elapsed());
        let t = Instant::now();
        let snap = Snapshot::build(&loaded, &[], previous.as_ref(), &registry)
            .map_err(|e| e.join("\n"))?;
        build.push(t.elapsed());
        if snap.table.models.len() != args.models {
            return Err(format!(
                "built {} virtual models, expected {}",
                snap.table.models.len(),
                args.models
            ));
        }
        previous = Some(snap);
    }

    let app = App::start(
        ConfigSource {
            path: Some(path.clone()),
            env_file: None,
            overrides: Vec::new(),
        },
        None,
    )?;
    let mut reload = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        app.reload()?;
        reload.push(t.elapsed());
    }

    let (y, l, b, r) = (stats(yaml), stats(load), stats(build), stats(reload));
    println!(
        "{} virtual models, {} KiB of YAML, {} runs (ms: min / median / max)",
        args.models,
        text.len() / 1024,
        args.runs
    );
    println!("  YAML parse only  {:8.1} {:8.1} {:8.1}", y.0, y.1, y.2);
    println!("  config::load     {:8.1} {:8.1} {:8.1}", l.0, l.1, l.2);
    println!("  Snapshot::build  {:8.1} {:8.1} {:8.1}", b.0, b.1, b.2);
    println!("  App::reload      {:8.1} {:8.1} {:8.1}", r.0, r.1, r.2);
    println!(
        r#"{{"models":{},"yaml_ms_median":{:.1},"load_ms_median":{:.1},"build_ms_median":{:.1},"reload_ms_median":{:.1},"reload_ms_max":{:.1}}}"#,
        args.models, y.1, l.1, b.1, r.1, r.2
    );
    Ok(())
}
