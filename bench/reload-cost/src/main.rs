//! Reload cost: generates a config with `--models` virtual models (each a weighted round-robin
//! over two targets; `--json` writes it as JSON), then times, over `--runs` runs, the steps of a
//! reload: reading and checking the file (`config::load`; of which the parser alone,
//! `config::document::parse`, is timed apart), building the snapshot (`Snapshot::build`, handing
//! over the previous snapshot's counters as a reload does), and the whole `App::reload` (both,
//! plus the health sync and the swap); then what `modelgate check` does, timed in process
//! (`App::start` without an admin store, and the table `check` prints), and with `--binary` the
//! `check` command itself. Reports the process's resident memory before the config is generated
//! and after the reloads. Prints a table and one JSON line.
use std::alloc::{GlobalAlloc, Layout};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use modelgate::app::{App, ConfigSource};
use modelgate::catalog::StateRegistry;
use modelgate::config::{self, env::Env};
use modelgate::snapshot::Snapshot;

/// The gateway binary's allocator, so that the timings are the gateway's, counting the bytes
/// in use.
#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated and not yet freed.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// `modelgate::Allocator` with a count of the bytes in use (one relaxed add per call).
struct Counting;

// SAFETY: every call goes to `modelgate::Allocator` unchanged; the counter only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        modelgate::Allocator.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        modelgate::Allocator.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        modelgate::Allocator.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        modelgate::Allocator.realloc(ptr, layout, new_size)
    }
}

fn live_mib() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
}

#[derive(Parser)]
#[command(about = "Time a config reload with many virtual models")]
struct Args {
    /// Virtual models in the generated config.
    #[arg(long, default_value_t = 10_000)]
    models: usize,
    /// Timed runs of each step.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Write the generated config as JSON (which is YAML too) instead of YAML block style.
    #[arg(long)]
    json: bool,
    /// A `modelgate` binary whose `check` command is also timed on the generated file.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Milliseconds between two timed reloads (untimed): 0 reloads back to back; a pause longer
    /// than the retire thread's wait times reloads that follow the memory's return to the
    /// operating system, as a reload after a quiet spell does.
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
}

/// The process's resident set (`VmRSS`) or its peak (`VmHWM`) in MiB, from /proc/self/status.
fn memory_mib(field: &str) -> Result<f64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .ok_or_else(|| format!("no {field} line in /proc/self/status"))
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

/// The same config as `generate`, written as one JSON object.
fn generate_json(n: usize) -> String {
    let mut s = String::with_capacity(n * 140);
    s.push_str(r#"{"providers": {"bench": {"type": "openai_compatible", "base_url": "http://127.0.0.1:9/v1", "api_key": "unused", "models": ["#);
    for m in 0..100 {
        let _ = write!(s, "{}\"model-{m}\"", if m > 0 { ", " } else { "" });
    }
    s.push_str("]}},\n\"virtual_models\": [\n");
    for i in 0..n {
        let _ = write!(
            s,
            "{}  {{\"source\": \"vm-{i}\", \"strategy\": \"round_robin\", \"targets\": [{{\"model\": \"bench/model-{}\", \"weight\": 2}}, {{\"model\": \"bench/model-{}\", \"weight\": 1}}]}}",
            if i > 0 { ",\n" } else { "" },
            i % 100,
            (i + 1) % 100
        );
    }
    s.push_str("\n]}\n");
    s
}

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[0]), ms(v[v.len() / 2]), ms(v[v.len() - 1]))
}

fn main() -> Result<(), String> {
    // As the gateway's `main` does.
    modelgate::allocator::without_huge_pages();
    let args = Args::parse();
    if args.runs == 0 || args.models == 0 {
        return Err("--runs and --models must be above 0".into());
    }
    let idle_rss = memory_mib("VmRSS")?;
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let path = dir.path().join("config.yaml");
    let text = if args.json {
        generate_json(args.models)
    } else {
        generate(args.models)
    };
    std::fs::write(&path, &text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let yaml_kib = text.len() / 1024;
    drop(text);
    let env = Env::default();

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
        std::thread::sleep(Duration::from_millis(args.pause_ms));
        let t = Instant::now();
        app.reload()?;
        reload.push(t.elapsed());
    }
    // The replaced snapshots are freed on a background thread, which hands the memory back to
    // the operating system a second after the last of them: let it, before reading the
    // resident set.
    std::thread::sleep(Duration::from_millis(1500));
    let reload_rss = memory_mib("VmRSS")?;
    let live = live_mib();
    let peak_rss = memory_mib("VmHWM")?;
    drop(app);
    // Let the background thread free what the app handed it before the heap is counted again.
    std::thread::sleep(Duration::from_millis(500));

    // The file's text is held only while it is parsed (the resident set above excludes it).
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading back: {e}"))?;
    let mut yaml = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        let v = config::document::parse(&text, "generated")?;
        yaml.push(t.elapsed());
        drop(v);
    }
    let mut load = Vec::new();
    let mut build = Vec::new();
    let registry = StateRegistry::default();
    let mut previous: Option<Snapshot> = None;
    // Heap held by one loaded config and by one snapshot (the first run's).
    let (mut loaded_mib, mut snapshot_mib) = (0.0, 0.0);
    for run in 0..args.runs {
        let before = live_mib();
        let t = Instant::now();
        let loaded = config::load(Some(&path), &env)?;
        load.push(t.elapsed());
        let after_load = live_mib();
        let t = Instant::now();
        let snap = Snapshot::build(&loaded, &[], previous.as_ref(), &registry)
            .map_err(|e| e.join("\n"))?;
        build.push(t.elapsed());
        if run == 0 {
            (loaded_mib, snapshot_mib) = (after_load - before, live_mib() - after_load);
        }
        if snap.table.models.len() != args.models {
            return Err(format!(
                "built {} virtual models, expected {}",
                snap.table.models.len(),
                args.models
            ));
        }
        previous = Some(snap);
    }
    drop(previous);
    drop(registry);

    // `modelgate check` is `App::start` (no admin store here) and the table it prints.
    let mut check = Vec::new();
    let mut table_bytes = 0;
    for _ in 0..args.runs {
        let t = Instant::now();
        let app = App::start(
            ConfigSource {
                path: Some(path.clone()),
                env_file: None,
                overrides: Vec::new(),
            },
            None,
        )?;
        table_bytes = modelgate::cli::check_table(&app.snapshot()).len();
        check.push(t.elapsed());
    }
    let mut check_bin = Vec::new();
    if let Some(bin) = &args.binary {
        for _ in 0..args.runs {
            let t = Instant::now();
            let out = Command::new(bin)
                .arg("--config")
                .arg(&path)
                .arg("check")
                .current_dir(dir.path())
                .env_clear()
                .output()
                .map_err(|e| format!("running {}: {e}", bin.display()))?;
            check_bin.push(t.elapsed());
            if !out.status.success() {
                return Err(format!(
                    "{} check failed: {}",
                    bin.display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }

    let (y, l, b, r, c) = (
        stats(yaml),
        stats(load),
        stats(build),
        stats(reload),
        stats(check),
    );
    println!(
        "{} virtual models, {} KiB of {}, {} runs (ms: min / median / max)",
        args.models,
        yaml_kib,
        if args.json { "JSON" } else { "YAML" },
        args.runs
    );
    println!(
        "  parse only ({})  {:8.1} {:8.1} {:8.1}",
        if args.json { "JSON" } else { "YAML" },
        y.0,
        y.1,
        y.2
    );
    println!("  config::load     {:8.1} {:8.1} {:8.1}", l.0, l.1, l.2);
    println!("  Snapshot::build  {:8.1} {:8.1} {:8.1}", b.0, b.1, b.2);
    println!("  App::reload      {:8.1} {:8.1} {:8.1}", r.0, r.1, r.2);
    println!(
        "  check (in process: App::start + {} KiB table) {:8.1} {:8.1} {:8.1}",
        table_bytes / 1024,
        c.0,
        c.1,
        c.2
    );
    let check_bin_median = if check_bin.is_empty() {
        "null".to_string()
    } else {
        let cb = stats(check_bin);
        println!(
            "  modelgate check (the binary, process start to exit) {:8.1} {:8.1} {:8.1}",
            cb.0, cb.1, cb.2
        );
        format!("{:.1}", cb.1)
    };
    println!(
        "  RSS: {idle_rss:.1} MiB idle, {reload_rss:.1} MiB after the reloads (peak {peak_rss:.1} MiB; heap in use {live:.1} MiB)"
    );
    println!("  heap held by one LoadedConfig {loaded_mib:.1} MiB, by one Snapshot {snapshot_mib:.1} MiB");
    println!(
        r#"{{"models":{},"json":{},"parse_ms_median":{:.1},"load_ms_median":{:.1},"build_ms_median":{:.1},"reload_ms_median":{:.1},"reload_ms_max":{:.1},"check_ms_median":{:.1},"check_binary_ms_median":{},"idle_rss_mib":{:.1},"reload_rss_mib":{:.1},"peak_rss_mib":{:.1},"heap_mib":{:.1}}}"#,
        args.models,
        args.json,
        y.1,
        l.1,
        b.1,
        r.1,
        r.2,
        c.1,
        check_bin_median,
        idle_rss,
        reload_rss,
        peak_rss,
        live
    );
    Ok(())
}
