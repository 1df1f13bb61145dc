//! Hot reload, graceful shutdown and metrics, against the real binary.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn cfg(a: &Upstream, b: &Upstream, target: &str) -> String {
    format!(
        "providers:\n{}{}virtual_models:\n  - source: v\n    target: {target}\n",
        provider_block("a", a, &["m1"]),
        provider_block("b", b, &["m3"])
    )
}

/// Polls (bounded) until `v` is served by `want`.
fn wait_for_route(g: &Gateway, want: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if g.chat("v").header("x-modelgate-model") == Some(want) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn metric(g: &Gateway, name: &str) -> f64 {
    let (_, text) = g.get("/metrics");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("metrics parse as Prometheus text");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[test]
fn reload_on_in_place_write() {
    let (a, b) = (Upstream::echo(&["m1"]), Upstream::echo(&["m3"]));
    let g = Gateway::start(&cfg(&a, &b, "a/m1"), &[]);
    assert_eq!(g.chat("v").header("x-modelgate-model"), Some("a/m1"));
    std::fs::write(&g.config, cfg(&a, &b, "b/m3")).unwrap();
    assert!(wait_for_route(&g, "b/m3"), "{}", g.logs());
}

#[test]
fn reload_on_rename_over() {
    let (a, b) = (Upstream::echo(&["m1"]), Upstream::echo(&["m3"]));
    let g = Gateway::start(&cfg(&a, &b, "a/m1"), &[]);
    let tmp = g.dir.path().join(".config.yaml.swp");
    std::fs::write(&tmp, cfg(&a, &b, "b/m3")).unwrap();
    std::fs::rename(&tmp, &g.config).unwrap();
    assert!(wait_for_route(&g, "b/m3"), "{}", g.logs());
}

#[test]
fn reload_on_sighup_rereads_the_env_file() {
    let (a, b) = (Upstream::echo(&["m1"]), Upstream::echo(&["m3"]));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, cfg(&a, &b, "a/m1")).unwrap();
    // The env file is not watched: only SIGHUP makes the gateway read it again.
    let env_file = dir.path().join("gateway.env");
    std::fs::write(&env_file, "X=1\n").unwrap();
    let port = free_port();
    let mut child = command(dir.path())
        .args([
            "--config",
            config.to_str().unwrap(),
            "--env-file",
            env_file.to_str().unwrap(),
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let g = GatewayRef { port };
    assert!(g.wait_up(), "gateway did not start");
    assert_eq!(g.model_of("v").as_deref(), Some("a/m1"));
    std::fs::write(
        &env_file,
        "VIRTUAL_MODELS='[{\"source\":\"v\",\"target\":\"b/m3\"}]'\n",
    )
    .unwrap();
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = None;
    while Instant::now() < deadline {
        seen = g.model_of("v");
        if seen.as_deref() == Some("b/m3") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(seen.as_deref(), Some("b/m3"));
}

struct GatewayRef {
    port: u16,
}

impl GatewayRef {
    fn wait_up(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if ureq::get(&format!("http://127.0.0.1:{}/health", self.port))
                .call()
                .is_ok()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn model_of(&self, model: &str) -> Option<String> {
        let r = ureq::post(&format!(
            "http://127.0.0.1:{}/v1/chat/completions",
            self.port
        ))
        .send_json(json!({"model": model, "messages": []}))
        .ok()?;
        r.header("x-modelgate-model").map(str::to_string)
    }
}

#[test]
fn invalid_edit_keeps_the_last_good_config_and_recovers() {
    let (a, b) = (Upstream::echo(&["m1"]), Upstream::echo(&["m3"]));
    let g = Gateway::start(&cfg(&a, &b, "a/m1"), &[]);
    std::fs::write(
        &g.config,
        cfg(&a, &b, "a/m1").replace("target: a/m1", "strategy: fastest\n    target: b/m3"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && metric(&g, "modelgate_config_last_reload_ok") != 0.0 {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        metric(&g, "modelgate_config_last_reload_ok"),
        0.0,
        "the failed reload is visible"
    );
    assert!(metric(&g, "modelgate_config_reloads_total") >= 1.0);
    let r = g.chat("v");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-modelgate-model"),
        Some("a/m1"),
        "still on the last good config"
    );
    let logs = g.logs();
    assert!(
        logs.contains("virtual_models[0] (source \"v\"): strategy \"fastest\" is unknown"),
        "{logs}"
    );
    std::fs::write(&g.config, cfg(&a, &b, "b/m3")).unwrap();
    assert!(wait_for_route(&g, "b/m3"));
    assert_eq!(metric(&g, "modelgate_config_last_reload_ok"), 1.0);
}

#[test]
fn no_request_fails_while_the_config_is_rewritten_under_load() {
    let (a, b) = (Upstream::echo(&["m1"]), Upstream::echo(&["m3"]));
    let g = Gateway::start(&cfg(&a, &b, "a/m1"), &[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = g.port;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(10))
                    .build();
                let (mut ok, mut failed, mut served) =
                    (0u32, 0u32, std::collections::HashSet::new());
                // Bounded: at most 1,500 requests per client.
                for _ in 0..1500 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) && ok > 0 {
                        break;
                    }
                    match agent
                        .post(&format!("http://127.0.0.1:{port}/v1/chat/completions"))
                        .send_json(json!({"model": "v", "messages": []}))
                    {
                        Ok(r) if r.status() == 200 => {
                            ok += 1;
                            served.insert(r.header("x-modelgate-model").unwrap_or("").to_string());
                        }
                        _ => failed += 1,
                    }
                }
                (ok, failed, served)
            })
        })
        .collect();
    for i in 0..50 {
        let target = if i % 2 == 0 { "b/m3" } else { "a/m1" };
        std::fs::write(&g.config, cfg(&a, &b, target)).unwrap();
        // Longer than the watcher's debounce, so each rewrite becomes its own reload.
        std::thread::sleep(Duration::from_millis(160));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total_ok = 0;
    let mut served_all = std::collections::HashSet::new();
    for c in clients {
        let (ok, failed, served) = c.join().unwrap();
        assert_eq!(failed, 0, "no request may fail during reloads");
        total_ok += ok;
        served_all.extend(served);
    }
    assert!(total_ok > 100, "load ran: {total_ok}");
    assert!(
        served_all.contains("a/m1") && served_all.contains("b/m3"),
        "both routings seen: {served_all:?}"
    );
}

#[test]
fn sigterm_lets_a_slow_stream_finish_and_exits_zero() {
    let (release, g8) = gate();
    let a = Upstream::start(&["m1"], move |_| {
        Reply::Stream(
            vec![
                b"data: {\"x\":1}\n\n".to_vec(),
                b"data: [DONE]\n\n".to_vec(),
            ],
            Some(g8.clone()),
        )
    });
    let b = Upstream::echo(&["m3"]);
    let mut g = Gateway::start(&cfg(&a, &b, "a/m1"), &[]);
    let resp = Gateway::agent()
        .post(&g.url("/v1/chat/completions"))
        .send_json(json!({"model": "v", "stream": true, "messages": []}))
        .unwrap();
    let mut reader = std::io::BufReader::new(resp.into_reader());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut reader, &mut first).unwrap();
    assert!(first.contains("\"x\":1"));
    sigterm(&g);
    // Wait (bounded) until the gateway stops accepting: it is draining now.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && std::net::TcpStream::connect(("127.0.0.1", g.port)).is_ok() {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", g.port)).is_err(),
        "listener closed on SIGTERM"
    );
    // The in-flight stream's last chunk is still delivered.
    release.send(()).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert!(rest.contains("[DONE]"), "{rest}");
    assert_eq!(exit_code_within_20s(&mut g), Some(0), "{}", g.logs());
}

/// `name` once it reaches `want`: a request is counted in its logging step, just after its
/// answer reached the client, so a scrape right after an answer may not see it yet. Bounded:
/// gives up (returning the last value) after 100 scrapes.
fn metric_reaching(g: &Gateway, name: &str, want: f64) -> f64 {
    let mut v = metric(g, name);
    for _ in 0..100 {
        if v >= want {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        v = metric(g, name);
    }
    v
}

fn sigterm(g: &Gateway) {
    let pid = g.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
}

/// The gateway's exit code once it has exited, waiting at most 20 s (None: still running).
fn exit_code_within_20s(g: &mut Gateway) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = g.child.try_wait().unwrap() {
            return s.code();
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_move_with_requests_and_parse() {
    let (a, b) = (Upstream::echo(&["m1"]), Upstream::echo(&["m3"]));
    let g = Gateway::start(&cfg(&a, &b, "a/m1"), &[]);
    let before = metric(&g, "modelgate_requests_total");
    for _ in 0..3 {
        assert_eq!(g.chat("v").status, 200);
    }
    assert_eq!(g.chat("nope").status, 404);
    let after = metric_reaching(&g, "modelgate_requests_total", before + 4.0);
    assert_eq!(after - before, 4.0);
    assert_eq!(
        metric(&g, "modelgate_tokens_input_total"),
        9.0,
        "usage of three answers"
    );
    let (_, text) = g.get("/metrics");
    assert!(text.contains("modelgate_requests_total{virtual_model=\"v\",model=\"m1\",provider=\"a\",status=\"200\"} 3"), "{text}");
    assert!(
        text.contains(
            "modelgate_request_duration_seconds_count{virtual_model=\"v\",provider=\"a\"} 3"
        ),
        "{text}"
    );
    assert!(!text.contains("nope"), "unknown names never become labels");
}

#[test]
fn cost_and_tokens_are_counted_for_the_target_that_answered() {
    let (a, b) = (Upstream::echo(&["m1"]), Upstream::echo(&["m3"]));
    // a/m1 is priced and answers; b/m3 is priced too but never asked.
    let config = format!(
        "providers:\n  a:\n    type: openai_compatible\n    base_url: {}\n    api_key: k\n    models:\n      - {{id: m1, pricing: {{input_per_mtok: 5, output_per_mtok: 15}}}}\n  b:\n    type: openai_compatible\n    base_url: {}\n    api_key: k\n    models:\n      - {{id: m3, pricing: {{input_per_mtok: 1000, output_per_mtok: 1000}}}}\nvirtual_models:\n  - source: v\n    target: a/m1\n",
        a.base_url(),
        b.base_url()
    );
    let g = Gateway::start(&config, &[]);
    for _ in 0..3 {
        assert_eq!(g.chat("v").status, 200);
    }
    // Each answer reports 3 input and 2 output tokens: 3 x (3 x 5 + 2 x 15) / 1e6 USD.
    assert_eq!(metric_reaching(&g, "modelgate_requests_total", 3.0), 3.0);
    let (_, text) = g.get("/metrics");
    assert!(
        text.contains("modelgate_cost_usd_total{provider=\"a\",model=\"m1\"} 0.000135"),
        "{text}"
    );
    assert!(
        text.contains("modelgate_tokens_output_total{provider=\"a\",model=\"m1\"} 6"),
        "{text}"
    );
    assert!(!text.contains("model=\"m3\""), "{text}");
}

#[test]
fn access_log_has_one_json_line_per_request_without_secrets() {
    let (a, b) = (Upstream::echo(&["m1"]), Upstream::echo(&["m3"]));
    let g = Gateway::start(
        &cfg(&a, &b, "a/m1"),
        &[
            ("LOG_FORMAT", "json"),
            ("MODELGATE_MASTER_KEY", "top-secret"),
        ],
    );
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "v", "messages": [{"role": "user", "content": "private words"}]}),
        &[
            ("authorization", "Bearer top-secret"),
            ("x-request-id", "rid-42"),
            ("x-modelgate-user-path", "/team/a"),
        ],
    );
    assert_eq!(r.status, 200);
    // The access line is written after the response: poll the log (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut line = None;
    while Instant::now() < deadline && line.is_none() {
        line = g
            .logs()
            .lines()
            .find(|l| l.contains("rid-42"))
            .map(str::to_string);
        std::thread::sleep(Duration::from_millis(20));
    }
    let line = line.expect("an access line for the request");
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON access line");
    assert_eq!(v["user_path"], "/team/a");
    assert_eq!(v["model"], "v");
    assert_eq!(v["served_model"], "a/m1");
    assert_eq!(v["attempts"], 1);
    assert_eq!(v["status"], 200);
    assert_eq!(v["tokens_in"], 3);
    let all = g.logs();
    assert!(
        !all.contains("top-secret") && !all.contains("sk-test-a") && !all.contains("private words")
    );
}

#[test]
fn the_pid_file_serves_modelgate_reload_and_is_removed_on_exit() {
    let (a, b) = (Upstream::echo(&["m1"]), Upstream::echo(&["m3"]));
    let pid_dir = tempfile::tempdir().unwrap();
    let pid_file = pid_dir.path().join("modelgate.pid");
    let pid_path = pid_file.to_str().unwrap();
    let mut g = Gateway::start(&cfg(&a, &b, "a/m1"), &[("PID_FILE", pid_path)]);
    let written = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(written.trim(), g.child.id().to_string());
    // `modelgate reload` finds the gateway through the file and reloads it.
    let (code, out) = run_cli(&cfg(&a, &b, "a/m1"), &["reload"], &[("PID_FILE", pid_path)]);
    assert_eq!(code, 0, "{out}");
    let mut logs = g.logs();
    for _ in 0..100 {
        if logs.contains("SIGHUP received") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        logs = g.logs();
    }
    assert!(logs.contains("SIGHUP received"), "{logs}");
    // SIGTERM with nothing in flight: the early exit removes the file too.
    sigterm(&g);
    assert_eq!(exit_code_within_20s(&mut g), Some(0), "{}", g.logs());
    assert!(!pid_file.exists(), "the pid file outlived the gateway");
}

/// The command that serves, on `port`, a config of one mock provider written into `dir`.
fn mock_provider_gateway(dir: &std::path::Path, port: u16) -> std::process::Command {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "providers:\n  m:\n    type: mock\n    models: [a]\n",
    )
    .unwrap();
    let mut cmd = command(dir);
    cmd.args(["--config", config.to_str().unwrap()]).args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "serve",
    ]);
    cmd
}

/// Starts `serve` on a config of one mock provider, `prepare` adjusting the command first; reads
/// `/proc/<pid>/<file>` once it is up, then stops it. None when it did not come up.
fn proc_file_of_a_serving_gateway(
    file: &str,
    prepare: impl FnOnce(&mut std::process::Command),
) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = mock_provider_gateway(dir.path(), port);
    cmd.stderr(std::process::Stdio::null());
    prepare(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let up = GatewayRef { port }.wait_up();
    let text = std::fs::read_to_string(format!("/proc/{}/{file}", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    up.then_some(text)
}

#[test]
fn serve_raises_the_open_files_soft_limit_to_the_hard_one() {
    use std::os::unix::process::CommandExt;
    // SAFETY: only getrlimit and setrlimit run between fork and exec.
    let limits = proc_file_of_a_serving_gateway("limits", |cmd| unsafe {
        cmd.pre_exec(|| {
            let mut r = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            r.rlim_cur = r.rlim_max.min(256);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    })
    .expect("gateway did not start");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("{limits}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_eq!(soft, hard, "started with a soft limit of 256: {line}");
    // The hard limit is what the machine allows; it is above 256 here unless the machine is odd.
    if hard != "256" {
        assert_ne!(soft, "256", "{line}");
    }
}

#[test]
fn serve_runs_without_transparent_huge_pages() {
    let status = proc_file_of_a_serving_gateway("status", |_| {}).expect("gateway did not start");
    // The gateway inherits the flag from this process, which has huge pages on (the kernel's
    // default for a process): otherwise this test could not tell whether the gateway turned
    // them off.
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let flag = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("THP_enabled:"))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
    };
    assert_eq!(
        flag(&own).as_deref(),
        Some("1"),
        "this test needs a process with transparent huge pages allowed: {own}"
    );
    assert_eq!(flag(&status).as_deref(), Some("0"), "{status}");
}

#[test]
fn a_connection_that_comes_while_descriptors_run_out_is_served_once_others_close() {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gateway.log");
    let port = free_port();
    let mut cmd = mock_provider_gateway(dir.path(), port);
    // One worker, so that what the gateway holds when idle does not grow with the cores.
    cmd.env("MODELGATE_THREADS", "1")
        .stderr(std::fs::File::create(&log).unwrap());
    // 64 descriptors in all, soft and hard: about half of them the gateway holds when idle.
    // SAFETY: only setrlimit runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let r = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let up = GatewayRef { port }.wait_up();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(up, "the gateway did not start: {}", logs());
    let addr = format!("127.0.0.1:{port}");
    // More idle connections than the gateway has descriptors for: the kernel completes them
    // all, and the gateway accepts until it runs out.
    let idle: Vec<std::net::TcpStream> = (0..80)
        .map(|_| std::net::TcpStream::connect(&addr).expect("connect"))
        .collect();
    let mut starved = false;
    for _ in 0..200 {
        if logs().contains("cannot accept connections") {
            starved = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(starved, "the gateway never ran out: {}", logs());
    // A request on one more connection waits in the queue while the idle ones stay open...
    let mut late = std::net::TcpStream::connect(&addr).expect("connect");
    late.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    late.write_all(b"GET /v1/models HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n")
        .unwrap();
    // ...and is answered once they close: accepting resumed.
    drop(idle);
    let mut answer = String::new();
    let _ = late.read_to_string(&mut answer);
    let _ = child.kill();
    let _ = child.wait();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}\n{}", logs());
    assert!(answer.contains("\"object\":\"list\""), "{answer}");
}

#[test]
fn an_emptied_config_file_keeps_the_last_good_config() {
    let (a, b) = (Upstream::echo(&["m1"]), Upstream::echo(&["m3"]));
    let g = Gateway::start(&cfg(&a, &b, "a/m1"), &[]);
    // A writer that truncates, then writes: the empty moment is not a config.
    std::fs::write(&g.config, "  \n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && metric(&g, "modelgate_config_last_reload_ok") != 0.0 {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(&g, "modelgate_config_last_reload_ok"), 0.0);
    let r = g.chat("v");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-modelgate-model"), Some("a/m1"));
    let (_, status) = g.get("/admin/api/v1/status");
    assert!(
        status.contains("the config file is empty; keeping the last good config"),
        "{status}"
    );
    std::fs::write(&g.config, cfg(&a, &b, "b/m3")).unwrap();
    assert!(wait_for_route(&g, "b/m3"), "{}", g.logs());
}
