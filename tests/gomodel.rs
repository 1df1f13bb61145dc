//! A GoModel user's whole `config.yaml` and `.env`, unchanged: every section of GoModel's
//! example file is present, written here from its documented keys. `check` and `serve` accept
//! them, honour what maps onto modelgate (proved by effect) and name the rest as ignored.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// GoModel's example config, section by section, pointed at local mock upstreams. `primary`
/// retries 3 times (its own `resilience`), `backup` 2 (the global one).
fn gomodel_config(primary: &Upstream, backup: &Upstream, rules_path: &str) -> String {
    format!(
        r#"server:
  port: "8080"
  master_key: "file-key"
  body_size_limit: "10M"
  base_path: "/gw"
  pprof_enabled: false
  enable_passthrough_routes: true
  allow_passthrough_v1_alias: true
  enabled_passthrough_providers: ["openai", "anthropic"]

models:
  enabled_by_default: true
  overrides_enabled: true

cache:
  model:
    refresh_interval: 3600
    local:
      cache_dir: ".cache"

storage:
  type: "sqlite"
  sqlite:
    path: "data/gomodel.db"
  postgresql:
    url: "postgres://user:pass@localhost/gomodel"
    max_conns: 10
  mongodb:
    url: "mongodb://localhost:27017"
    database: "gomodel"

logging:
  enabled: false
  log_bodies: true
  log_headers: true
  buffer_size: 1000
  flush_interval: 5
  retention_days: 30
  only_model_interactions: true

usage:
  enabled: true
  enforce_returning_usage_data: true
  buffer_size: 1000
  flush_interval: 5
  retention_days: 90

metrics:
  enabled: true
  endpoint: "/stats"

http:
  timeout: 600
  response_header_timeout: 600

workflows:
  refresh_interval: 1m

resilience:
  retry:
    max_retries: 2
    initial_backoff: 10ms
    max_backoff: 40ms
    backoff_factor: 2.0
    jitter_factor: 0.1

guardrails:
  enabled: false
  enable_for_batch_processing: false
  rules:
    - name: "safety-prompt"
      type: "system_prompt"
      order: 0
      system_prompt:
        mode: "decorator"
        content: "Always be safe and respectful."

budgets:
  user_paths:
    - path: "/team"
      limits: [{{period: daily, amount: 10}}]

fallback:
  default_mode: "manual"
  manual_rules_path: "{rules_path}"
  overrides:
    "gpt-4o":
      mode: "manual"
    "claude-sonnet-4":
      mode: "off"

providers:
  primary:
    type: openai
    base_url: "{}"
    api_key: "sk-primary"
    models: [gpt-4o, claude-sonnet-4, flaky]
    resilience:
      retry:
        max_retries: 3
  backup:
    type: openai
    base_url: "{}"
    api_key: "sk-backup"
    models: [gpt-4o-mini, flaky]
"#,
        primary.base_url(),
        backup.base_url()
    )
}

/// GoModel's `.env.template` names, as a GoModel user sets them.
const GOMODEL_ENV: &str = "\
GOMODEL_MASTER_KEY=env-key
BODY_SIZE_LIMIT=10M
METRICS_ENABLED=true
HTTP_RESPONSE_HEADER_TIMEOUT=600
RETRY_INITIAL_BACKOFF=10ms
RETRY_MAX_BACKOFF=40ms
RETRY_BACKOFF_FACTOR=2.0
RETRY_JITTER_FACTOR=0.1
CIRCUIT_BREAKER_FAILURE_THRESHOLD=50
CIRCUIT_BREAKER_SUCCESS_THRESHOLD=2
CIRCUIT_BREAKER_TIMEOUT=30s
FEATURE_FALLBACK_MODE=manual
SWAGGER_ENABLED=true
LOGGING_ENABLED=false
USAGE_ENABLED=true
REDIS_URL=redis://localhost:6379
GUARDRAILS_ENABLED=false
# Unquoted JSON, as GoModel's documentation writes it.
VIRTUAL_MODELS=[{\"source\":\"smart\",\"strategy\":\"cost\",\"targets\":[{\"model\":\"backup/gpt-4o-mini\"}]}]
";

/// The manual rules file: each model's fallbacks, in order.
const RULES: &str = r#"{
  "primary/gpt-4o": ["backup/gpt-4o-mini"],
  "claude-sonnet-4": ["backup/gpt-4o-mini"]
}"#;

fn failing(status: u16) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    move |_| Reply::Json(status, json!({"error": {"message": "down", "type": "x"}}))
}

/// Starts the binary in `dir` (which holds `config.yaml`, `.env` and the rules file) and
/// waits until `{prefix}/health` answers: with a base path, `/health` itself is outside.
fn start_in(dir: tempfile::TempDir, prefix: &str) -> Gateway {
    let cfg = dir.path().join("config.yaml");
    let log = dir.path().join("gateway.log");
    let port = free_port();
    let child = command(dir.path())
        .arg("--config")
        .arg(&cfg)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut g = Gateway {
        port,
        child,
        dir,
        config: cfg,
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = g.child.try_wait() {
            panic!("exited with {status}: {}", g.logs());
        }
        let up = Gateway::agent()
            .get(&g.url(&format!("{prefix}/health")))
            .call()
            .is_ok_and(|r| r.status() == 200);
        if up {
            return g;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("not listening after 20 s: {}", g.logs());
}

/// A directory with the GoModel config, `.env` and rules file.
fn gomodel_dir(primary: &Upstream, backup: &Upstream) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("fallback.json");
    std::fs::write(&rules, RULES).unwrap();
    let config = gomodel_config(primary, backup, rules.to_str().unwrap());
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    std::fs::write(dir.path().join(".env"), GOMODEL_ENV).unwrap();
    dir
}

const AUTH: (&str, &str) = ("authorization", "Bearer env-key");

fn chat(g: &Gateway, path: &str, model: &str) -> Resp {
    g.post(
        path,
        &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        &[AUTH],
    )
}

const IGNORED_LINES: [&str; 8] = [
    "server.pprof_enabled, server.enable_passthrough_routes, server.allow_passthrough_v1_alias, \
     server.enabled_passthrough_providers, SWAGGER_ENABLED: not supported by modelgate; ignored",
    "cache.model.local: not supported by modelgate; ignored",
    "storage.mongodb: not supported by modelgate; ignored",
    "storage.postgresql.max_conns: not supported by modelgate; ignored",
    "logging.enabled, logging.log_bodies, logging.log_headers, logging.buffer_size, \
     logging.flush_interval, logging.retention_days, logging.only_model_interactions, \
     LOGGING_ENABLED: not supported by modelgate; ignored",
    "usage, USAGE_ENABLED: not supported by modelgate; ignored",
    "workflows: not supported by modelgate; ignored",
    "guardrails.enable_for_batch_processing: not supported by modelgate; ignored",
];

#[test]
fn serve_honours_the_gomodel_files_and_names_what_it_ignores() {
    let primary = Upstream::start(&["gpt-4o", "claude-sonnet-4", "flaky"], failing(500));
    let backup = Upstream::start(&["gpt-4o-mini", "flaky"], |s| {
        if s.json()["model"] == "flaky" {
            Reply::Json(503, json!({"error": {"message": "busy", "type": "x"}}))
        } else {
            Reply::Json(200, chat_reply("gpt-4o-mini", "from backup"))
        }
    });
    let g = start_in(gomodel_dir(&primary, &backup), "/gw");

    // base_path: every route under the prefix, nothing outside it.
    assert_eq!(g.get("/gw/health").0, 200);
    assert_eq!(g.get("/health").0, 404);
    assert_eq!(g.get("/v1/models").0, 404);
    assert_eq!(g.get("/gwx/health").0, 404);
    assert_eq!(
        chat(&g, "/v1/chat/completions", "backup/gpt-4o-mini").status,
        404
    );
    assert_eq!(
        g.get_with("/gw/admin/api/v1/virtual-models", &[AUTH]).0,
        200
    );
    // The dashboard page links its files, and its script the API, under the prefix.
    let (status, page) = g.get("/gw/admin/dashboard");
    assert_eq!(status, 200);
    assert!(page.contains("\"/gw/admin/dashboard/app.js\""), "{page}");
    let (status, js) = g.get("/gw/admin/dashboard/app.js");
    assert_eq!(status, 200);
    assert!(js.contains("'/gw/admin/api/v1'"));

    // Master key: GOMODEL_MASTER_KEY from .env wins over the file's.
    assert_eq!(g.get("/gw/v1/models").0, 401);
    assert_eq!(
        g.get_with("/gw/v1/models", &[("authorization", "Bearer file-key")])
            .0,
        401
    );
    assert_eq!(g.get_with("/gw/v1/models", &[AUTH]).0, 200);

    // Metrics moved to metrics.endpoint.
    assert_eq!(g.get("/gw/stats").0, 200);
    assert_eq!(g.get_with("/gw/metrics", &[AUTH]).0, 404);

    // Retries with backoff: 1 + max_retries tries on a concrete model; per provider, then
    // the global policy.
    let r = chat(&g, "/gw/v1/chat/completions", "primary/flaky");
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(primary.requests().len(), 4, "1 try + primary's 3 retries");
    let r = chat(&g, "/gw/v1/chat/completions", "backup/flaky");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(backup.requests().len(), 3, "1 try + the global 2 retries");

    // A manual fallback rule: primary/gpt-4o fails through its retries, then backup serves.
    let r = chat(&g, "/gw/v1/chat/completions", "primary/gpt-4o");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["choices"][0]["message"]["content"], "from backup");
    assert_eq!(primary.requests().len(), 8);
    let to_backup = backup.requests();
    assert_eq!(to_backup.len(), 4);
    assert_eq!(to_backup[3].json()["model"], "gpt-4o-mini");

    // A per-model override turns the rule off: the client gets primary's error.
    let r = chat(&g, "/gw/v1/chat/completions", "primary/claude-sonnet-4");
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(
        backup.requests().len(),
        4,
        "no fallback for claude-sonnet-4"
    );

    // VIRTUAL_MODELS from .env, its JSON unquoted.
    let r = chat(&g, "/gw/v1/chat/completions", "smart");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-modelgate-virtual-model"), Some("smart"));
    assert_eq!(r.header("x-modelgate-model"), Some("backup/gpt-4o-mini"));

    // Start-up named each ignored section once.
    let logs = g.logs();
    for line in IGNORED_LINES {
        assert_eq!(logs.matches(line).count(), 1, "{line:?} in:\n{logs}");
    }
    for honoured in [
        "resilience",
        "fallback",
        "metrics",
        "http.",
        "server.base_path",
    ] {
        assert!(
            !logs
                .lines()
                .any(|l| l.contains("ignored") && l.contains(honoured)),
            "{honoured} named as ignored:\n{logs}"
        );
    }
}

#[test]
fn check_prints_what_was_honoured_and_what_was_ignored() {
    let primary = Upstream::echo(&[]);
    let backup = Upstream::echo(&[]);
    let rules = tempfile::tempdir().unwrap();
    let rules_path = rules.path().join("fallback.json");
    std::fs::write(&rules_path, RULES).unwrap();
    let env: Vec<(&str, &str)> = GOMODEL_ENV
        .lines()
        .filter_map(|l| l.split_once('='))
        .collect();
    let cfg = gomodel_config(&primary, &backup, rules_path.to_str().unwrap());
    let (code, out) = run_cli(&cfg, &["check"], &env);
    assert_eq!(code, 0, "{out}");
    let honoured = out
        .split("GoModel settings honoured:")
        .nth(1)
        .and_then(|rest| rest.split("GoModel settings ignored:").next())
        .unwrap_or_else(|| panic!("no honoured section in:\n{out}"));
    let ignored = out
        .split("GoModel settings ignored:")
        .nth(1)
        .unwrap_or_else(|| panic!("no ignored section in:\n{out}"));
    for key in [
        "server.port",
        "server.master_key",
        "server.base_path",
        "models.overrides_enabled",
        "storage.sqlite.path",
        "metrics.endpoint",
        "http.timeout",
        "resilience.retry",
        "fallback.manual_rules_path",
        "fallback.overrides",
        "providers.primary.resilience",
        "env RETRY_INITIAL_BACKOFF",
        "env CIRCUIT_BREAKER_TIMEOUT",
        "env FEATURE_FALLBACK_MODE",
    ] {
        assert!(honoured.contains(key), "{key} not honoured in:\n{out}");
    }
    for line in IGNORED_LINES {
        assert_eq!(out.matches(line).count(), 1, "{line:?} in:\n{out}");
        assert!(
            ignored.contains(line),
            "{line:?} not in the ignored section:\n{out}"
        );
        assert!(
            !honoured.contains(line),
            "{line:?} among the honoured:\n{out}"
        );
    }
}

#[test]
fn a_misspelt_key_is_still_an_error_with_a_suggestion() {
    let cfg = "resilience:\n  retry:\n    max_retrie: 3\nusage:\n  enabled: true\n";
    let (code, out) = run_cli(cfg, &["check"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("resilience.retry.max_retrie: unknown field `max_retrie`")
            && out.contains("did you mean `max_retries`?"),
        "{out}"
    );
    let (code, out) = run_cli("fallbak:\n  default_mode: off\n", &["check"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("did you mean `fallback`?"), "{out}");
}

#[test]
fn a_port_that_is_not_a_number_names_the_field() {
    let (code, out) = run_cli("server:\n  port: \"80a\"\n", &["check"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("server.port: expected a number or a numeric string, got \"80a\""),
        "{out}"
    );
    let (code, out) = run_cli("server:\n  port: \"8080\"\n", &["check"], &[]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn storage_types_without_a_file_setting_are_explained() {
    let (code, out) = run_cli("storage:\n  type: postgresql\n", &["check"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("storage.type is postgresql but no database is named"),
        "{out}"
    );
    let (code, out) = run_cli("storage:\n  type: mongodb\n", &["check"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("\"mongodb\" is not supported"), "{out}");
}

#[test]
fn azure_and_openrouter_get_their_own_headers_and_query() {
    let azure = Upstream::echo(&["gpt-4o"]);
    let openrouter = Upstream::echo(&["x/y"]);
    let cfg = format!(
        "providers:\n  azure:\n    type: azure\n    base_url: {}\n    api_key: az-key\n    api_version: \"2025-01-01\"\n    models: [gpt-4o]\n  openrouter:\n    type: openrouter\n    base_url: {}\n    api_key: or-key\n    models: [x/y]\n",
        azure.base_url(),
        openrouter.base_url()
    );
    let g = Gateway::start(
        &cfg,
        &[
            ("OPENROUTER_SITE_URL", "https://example.test"),
            ("OPENROUTER_APP_NAME", "Team App"),
        ],
    );
    assert_eq!(g.chat("azure/gpt-4o").status, 200);
    let seen = &azure.requests()[0];
    assert_eq!(seen.path, "/v1/chat/completions?api-version=2025-01-01");
    assert_eq!(seen.header("api-key"), Some("az-key"));
    assert_eq!(seen.header("authorization"), None);

    assert_eq!(g.chat("openrouter/x/y").status, 200);
    let seen = &openrouter.requests()[0];
    assert_eq!(seen.header("authorization"), Some("Bearer or-key"));
    assert_eq!(seen.header("http-referer"), Some("https://example.test"));
    assert_eq!(seen.header("x-openrouter-title"), Some("Team App"));
}

#[test]
fn overrides_disabled_leaves_the_stores_access_policies_out() {
    let up = Upstream::echo(&[]);
    for (enabled, expect) in [(true, 403), (false, 200)] {
        let cfg = format!(
            "models:\n  overrides_enabled: {enabled}\nproviders:\n{}",
            provider_block("a", &up, &["m1"])
        );
        let g = Gateway::start(&cfg, &[]);
        let policy = json!({"source": "a/m1", "user_paths": ["/team"]});
        let r = g.call("POST", "/admin/api/v1/virtual-models", Some(&policy), &[]);
        assert!(r.status < 300, "{} {}", r.status, r.body);
        assert_eq!(
            g.chat("a/m1").status,
            expect,
            "overrides_enabled: {enabled}"
        );
    }
}

/// The `/v1/models` ids, polled until `until` holds (the catalog loads in the background).
fn models_until(g: &Gateway, until: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = g.get("/v1/models");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let ids: Vec<String> = v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect();
        if until(&ids) || Instant::now() > deadline {
            return ids;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_fallback_catalog_mode_uses_configured_models_only_while_models_is_unavailable() {
    let listing = Upstream::echo(&["listed"]);
    // Nothing listens here: its /models is unavailable.
    let closed = free_port();
    let cfg = format!(
        "models:\n  configured_provider_models_mode: fallback\nproviders:\n{}  down:\n    type: openai_compatible\n    base_url: http://127.0.0.1:{closed}/v1\n    models: [conf-down]\n",
        provider_block("up", &listing, &["conf-up"])
    );
    let g = Gateway::start(&cfg, &[]);
    let ids = models_until(&g, |ids| ids.iter().any(|i| i == "up/listed"));
    assert!(ids.contains(&"up/listed".to_string()), "{ids:?}");
    assert!(!ids.contains(&"up/conf-up".to_string()), "{ids:?}");
    assert!(ids.contains(&"down/conf-down".to_string()), "{ids:?}");
    assert_eq!(g.chat("up/conf-up").status, 404);
    assert_eq!(g.chat("up/listed").status, 200);
}

#[test]
fn system_prompt_guardrails_apply_to_every_chat_request_in_order() {
    let up = Upstream::echo(&["m1"]);
    let cfg = format!(
        "providers:\n{}guardrails:\n  enabled: true\n  rules:\n    - name: safety\n      type: system_prompt\n      order: 1\n      system_prompt: {{mode: decorator, content: \"Be safe.\"}}\n    - name: default\n      type: system_prompt\n      order: 0\n      system_prompt: {{mode: inject, content: \"You help.\"}}\n    - name: privacy\n      type: llm_based_altering\n      llm_based_altering: {{model: x}}\n",
        provider_block("a", &up, &["m1"])
    );
    let g = Gateway::start(&cfg, &[]);
    let system_texts = |i: usize| -> Vec<String> {
        up.requests()[i].json()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "system")
            .map(|m| m["content"].as_str().unwrap().to_string())
            .collect()
    };
    // No system prompt of the client's: inject adds one (order 0), decorator goes before it.
    assert_eq!(g.chat("a/m1").status, 200);
    assert_eq!(system_texts(0), ["Be safe.", "You help."]);
    // The client's own system prompt: inject leaves it, decorator still goes first.
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "a/m1", "messages": [{"role": "system", "content": "Mine."},
                                               {"role": "user", "content": "hi"}]}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(system_texts(1), ["Be safe.", "Mine."]);
    assert!(
        g.logs().contains("guardrails.rules[2] (\"privacy\"): type \"llm_based_altering\": not supported by modelgate; ignored"),
        "{}",
        g.logs()
    );
    // Off unless enabled: GUARDRAILS_ENABLED=false wins over the file.
    let g = Gateway::start(&cfg, &[("GUARDRAILS_ENABLED", "false")]);
    assert_eq!(g.chat("a/m1").status, 200);
    assert!(system_texts(2).is_empty());
}

#[test]
fn an_override_guardrail_replaces_the_clients_system_prompt() {
    let up = Upstream::echo(&["m1"]);
    let cfg = format!(
        "providers:\n{}guardrails:\n  enabled: true\n  rules:\n    - name: strict\n      type: system_prompt\n      system_prompt: {{mode: override, content: \"Policy only.\"}}\n",
        provider_block("a", &up, &["m1"])
    );
    let g = Gateway::start(&cfg, &[]);
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "a/m1", "messages": [{"role": "system", "content": "Mine."},
                                               {"role": "user", "content": "hi"}]}),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = up.requests()[0].json();
    assert_eq!(
        seen["messages"][0],
        json!({"role": "system", "content": "Policy only."})
    );
    assert_eq!(seen["messages"].as_array().unwrap().len(), 2);
    // A mode neither system knows is an error naming the rule.
    let bad = cfg.replace("mode: override", "mode: sometimes");
    let (code, out) = run_cli(&bad, &["check"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "guardrails.rules[0] (\"strict\"): system_prompt.mode \"sometimes\" is unknown"
        ),
        "{out}"
    );
}
