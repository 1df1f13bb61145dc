//! GoModel's `config.yaml` and `.env`, read as they are: which of GoModel's keys and variables
//! modelgate honours, which it names as ignored, and the two GoModel-only formats it parses (Go
//! durations and the manual fallback rules file).
//!
//! The ignored keys are listed here, once, and removed from the parsed YAML before the schema
//! reads it, so the schema keeps rejecting keys neither system knows (with a suggestion). This
//! module decides nothing about routing; it only reports and parses.

use std::fmt::Write as _;

use smol_str::SmolStr;

use super::env::Env;
use super::schema::FallbackSpec;
use crate::routing::fallback::{FallbackMode, FallbackRules};

/// One GoModel feature modelgate does not have: its keys in the file (`keys` under `section`;
/// empty = the whole section) and its environment variables (a trailing `*` is a prefix).
struct Ignored {
    section: &'static str,
    keys: &'static [&'static str],
    env: &'static [&'static str],
    what: &'static str,
}

const IGNORED: &[Ignored] = &[
    Ignored {
        section: "server",
        keys: &[
            "swagger_enabled",
            "pprof_enabled",
            "enable_passthrough_routes",
            "allow_passthrough_v1_alias",
            "enabled_passthrough_providers",
        ],
        env: &[
            "SWAGGER_ENABLED",
            "PPROF_ENABLED",
            "ENABLE_PASSTHROUGH_ROUTES",
            "ALLOW_PASSTHROUGH_V1_ALIAS",
            "ENABLED_PASSTHROUGH_PROVIDERS",
        ],
        what: "GoModel's Swagger UI, pprof and /p/{provider} passthrough routes",
    },
    Ignored {
        section: "cache",
        keys: &["response"],
        env: &[
            "RESPONSE_CACHE_SIMPLE_ENABLED",
            "SEMANTIC_CACHE_*",
            "REDIS_KEY_RESPONSES",
            "REDIS_TTL_RESPONSES",
        ],
        what: "GoModel's response caches, exact and semantic",
    },
    Ignored {
        section: "cache.model",
        keys: &["local", "redis", "model_list"],
        env: &[
            "GOMODEL_CACHE_DIR",
            "REDIS_KEY_MODELS",
            "REDIS_TTL_MODELS",
            "MODEL_LIST_URL",
        ],
        what: "catalogs are kept in memory; cache.model.refresh_interval applies",
    },
    Ignored {
        section: "storage",
        keys: &["mongodb"],
        env: &["MONGODB_URL", "MONGODB_DATABASE"],
        what: "MongoDB is not supported; the stores are sqlite and postgresql",
    },
    Ignored {
        section: "storage.postgresql",
        keys: &["max_conns"],
        env: &["POSTGRES_MAX_CONNS"],
        what: "the PostgreSQL store uses one connection for writes and one to follow changes",
    },
    Ignored {
        section: "logging",
        keys: &[
            "enabled",
            "log_bodies",
            "log_headers",
            "buffer_size",
            "flush_interval",
            "retention_days",
            "only_model_interactions",
        ],
        env: &["LOGGING_*"],
        what: "GoModel's audit log; modelgate writes an access log line per request",
    },
    Ignored {
        section: "usage",
        keys: &[],
        env: &["USAGE_*", "ENFORCE_RETURNING_USAGE_DATA"],
        what: "GoModel's usage tracking",
    },
    Ignored {
        section: "admin",
        keys: &[],
        env: &["ADMIN_ENDPOINTS_ENABLED", "ADMIN_UI_ENABLED"],
        what: "the admin API and dashboard are always on",
    },
    Ignored {
        section: "workflows",
        keys: &[],
        env: &["WORKFLOW_REFRESH_INTERVAL"],
        what: "GoModel's workflows",
    },
    Ignored {
        section: "guardrails",
        keys: &["enable_for_batch_processing"],
        env: &["ENABLE_GUARDRAILS_FOR_BATCH_PROCESSING"],
        what: "modelgate has no batch API",
    },
    Ignored {
        section: "(environment)",
        keys: &[],
        env: &["LOG_LEVEL"],
        what: "modelgate's log filter is RUST_LOG",
    },
];

/// GoModel keys modelgate honours, reported by `check` when the file is a GoModel one.
const HONOURED: &[&str] = &[
    "server.port",
    "server.master_key",
    "server.body_size_limit",
    "server.base_path",
    "models.enabled_by_default",
    "models.overrides_enabled",
    "models.keep_only_aliases_at_models_endpoint",
    "models.configured_provider_models_mode",
    "cache.model.refresh_interval",
    "storage.type",
    "storage.sqlite.path",
    "storage.postgresql.url",
    "metrics.enabled",
    "metrics.endpoint",
    "http.timeout",
    "http.response_header_timeout",
    "resilience.retry",
    "resilience.circuit_breaker",
    "guardrails (type system_prompt)",
    "fallback.default_mode",
    "fallback.manual_rules_path",
    "fallback.overrides",
    "budgets.enabled",
    "budgets.user_paths",
];

/// GoModel variables modelgate honours (beyond its own, which `.env.template` lists).
const HONOURED_ENV: &[&str] = &[
    "BASE_PATH",
    "MODEL_OVERRIDES_ENABLED",
    "METRICS_ENABLED",
    "METRICS_ENDPOINT",
    "HTTP_TIMEOUT",
    "HTTP_RESPONSE_HEADER_TIMEOUT",
    "RETRY_MAX_RETRIES",
    "RETRY_INITIAL_BACKOFF",
    "RETRY_MAX_BACKOFF",
    "RETRY_BACKOFF_FACTOR",
    "RETRY_JITTER_FACTOR",
    "CIRCUIT_BREAKER_FAILURE_THRESHOLD",
    "CIRCUIT_BREAKER_SUCCESS_THRESHOLD",
    "CIRCUIT_BREAKER_TIMEOUT",
    "FEATURE_FALLBACK_MODE",
    "FALLBACK_MANUAL_RULES_PATH",
    "AZURE_API_VERSION",
    "OPENROUTER_SITE_URL",
    "OPENROUTER_APP_NAME",
    "BUDGETS_ENABLED",
    "SET_BUDGET_*",
];

/// What the GoModel reading of a file and environment found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// GoModel keys and variables in use that modelgate honours (empty unless GoModel's).
    pub honoured: Vec<String>,
    /// One line per GoModel section that modelgate ignores, naming its keys and variables.
    pub ignored: Vec<String>,
}

/// The mapping at `path` (dotted) inside `value`, if every step is a mapping.
fn mapping_at<'a>(
    value: &'a mut serde_yaml::Value,
    path: &str,
) -> Option<&'a mut serde_yaml::Mapping> {
    let mut cur = value;
    for step in path.split('.') {
        cur = cur.as_mapping_mut()?.get_mut(step)?;
    }
    cur.as_mapping_mut()
}

fn has_path(value: &serde_yaml::Value, path: &str) -> bool {
    let mut cur = value;
    for step in path.split('.') {
        match cur.as_mapping().and_then(|m| m.get(step)) {
            Some(v) => cur = v,
            None => return false,
        }
    }
    true
}

fn env_matches<'a>(env: &'a Env, patterns: &[&str]) -> Vec<&'a str> {
    env.iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, _)| k)
        .filter(|k| {
            patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => k.starts_with(prefix),
                None => k == p,
            })
        })
        .collect()
}

/// Removes the keys modelgate ignores from the parsed file (before the schema reads it) and
/// reports them, with the ignored variables set in `env` and the honoured keys in use.
pub fn strip(value: &mut serde_yaml::Value, env: &Env) -> Report {
    let mut report = Report::default();
    for item in IGNORED {
        let mut named: Vec<String> = Vec::new();
        if item.keys.is_empty() {
            if let Some(top) = value.as_mapping_mut() {
                if top.remove(item.section).is_some() {
                    named.push(item.section.to_string());
                }
            }
        } else if let Some(m) = mapping_at(value, item.section) {
            for k in item.keys {
                if m.remove(*k).is_some() {
                    named.push(format!("{}.{k}", item.section));
                }
            }
        }
        named.extend(env_matches(env, item.env).into_iter().map(str::to_string));
        if !named.is_empty() {
            let mut line = named.join(", ");
            let _ = write!(
                line,
                ": not supported by modelgate; ignored ({})",
                item.what
            );
            report.ignored.push(line);
        }
    }
    let gomodel_file = !report.ignored.is_empty()
        || ["storage", "resilience", "fallback", "http", "cache"]
            .iter()
            .any(|k| has_path(value, k));
    if gomodel_file {
        report.honoured = HONOURED
            .iter()
            .filter(|p| has_path(value, p))
            .map(|p| p.to_string())
            .collect();
        if let Some(providers) = value.get("providers").and_then(|p| p.as_mapping()) {
            for (name, spec) in providers {
                for key in ["api_version", "resilience"] {
                    if spec.get(key).is_some() {
                        let name = name.as_str().unwrap_or("?");
                        report.honoured.push(format!("providers.{name}.{key}"));
                    }
                }
            }
        }
        report.honoured.extend(
            env_matches(env, HONOURED_ENV)
                .into_iter()
                .map(|k| format!("env {k}")),
        );
    }
    report
}

/// A Go duration (`300ms`, `1.5s`, `2m`, `1h30m`; units ns us ms s m h) or a plain number of
/// seconds, in milliseconds.
pub fn parse_duration_ms(raw: &str) -> Option<u64> {
    let t = raw.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(secs) = t.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).round() as u64);
    }
    let mut total_ms = 0.0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let per_ms = match &rest[..unit_len] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total_ms += n * per_ms;
    }
    total_ms.is_finite().then(|| total_ms.round() as u64)
}

/// A duration variable: None when unset, an error naming it when not a duration.
pub fn env_duration_ms(env: &Env, name: &str) -> Result<Option<u64>, String> {
    match env.get(name) {
        None => Ok(None),
        Some(v) => parse_duration_ms(v).map(Some).ok_or_else(|| {
            format!(
                "{name}={v:?} is not a duration; use e.g. 1s, 500ms or 2m, or a number of seconds"
            )
        }),
    }
}

fn parse_mode(raw: &str, at: &str) -> Result<FallbackMode, String> {
    FallbackMode::parse(raw)
        .ok_or_else(|| format!("{at}: {raw:?} is unknown; use {}", FallbackMode::NAMES))
}

/// GoModel's `fallback` section with `FEATURE_FALLBACK_MODE` and `FALLBACK_MANUAL_RULES_PATH`
/// over it: the mode per model and the manual rules file (a JSON object from a model to its
/// ordered fallbacks), read now.
pub fn fallback_rules(
    spec: &FallbackSpec,
    env: &Env,
    label: &str,
    warnings: &mut Vec<String>,
) -> Result<FallbackRules, String> {
    let default_mode = match env.get("FEATURE_FALLBACK_MODE") {
        Some(m) => parse_mode(m, "FEATURE_FALLBACK_MODE")?,
        None => match spec.default_mode.as_deref() {
            Some(m) => parse_mode(m, &format!("{label}: fallback.default_mode"))?,
            None => FallbackMode::Manual,
        },
    };
    let mut rules = FallbackRules {
        default_mode,
        ..FallbackRules::default()
    };
    let mut auto = default_mode == FallbackMode::Auto;
    for (model, o) in &spec.overrides {
        let at = format!("{label}: fallback.overrides.{model}.mode");
        let key = model.trim();
        if key.is_empty() {
            return Err(format!(
                "{label}: fallback.overrides: a model key cannot be empty"
            ));
        }
        let mode = parse_mode(o.mode.as_deref().unwrap_or(""), &at)?;
        auto |= mode == FallbackMode::Auto;
        rules.overrides.insert(SmolStr::from(key), mode);
    }
    let path = match env.get("FALLBACK_MANUAL_RULES_PATH") {
        Some(p) => Some((p.to_string(), "FALLBACK_MANUAL_RULES_PATH".to_string())),
        None => spec
            .manual_rules_path
            .clone()
            .filter(|p| !p.trim().is_empty())
            .map(|p| (p, format!("{label}: fallback.manual_rules_path"))),
    };
    if let Some((path, named)) = path {
        let at = format!("{named} {path:?}");
        let text = std::fs::read_to_string(path.trim())
            .map_err(|e| format!("{at}: cannot read the rules file: {e}"))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{at}: not valid JSON: {e}"))?;
        let object = value.as_object().ok_or_else(|| {
            format!("{at}: must be a JSON object from a model to its list of fallback models")
        })?;
        for (model, list) in object {
            let key = model.trim();
            if key.is_empty() {
                return Err(format!("{at}: a model key cannot be empty"));
            }
            let items = list.as_array().ok_or_else(|| {
                format!("{at}: {model:?}: must be a list of model names, e.g. [\"openai/gpt-4o\"]")
            })?;
            let mut fallbacks = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let name = item.as_str().ok_or_else(|| {
                    format!("{at}: {model:?}[{i}]: must be a model name (a string)")
                })?;
                if !name.trim().is_empty() {
                    fallbacks.push(SmolStr::from(name.trim()));
                }
            }
            rules.manual.insert(SmolStr::from(key), fallbacks);
        }
    }
    if auto {
        warnings.push(format!(
            "{label}: fallback mode auto: GoModel's ranking-based candidates are not supported \
             by modelgate; the manual rules apply"
        ));
    }
    Ok(rules)
}

/// GoModel's `guardrails` as request middleware calls, in `order` (stable for equal orders:
/// GoModel runs those side by side, and system-prompt rules touch one field, so the file's order
/// is as good as any). Only `system_prompt` rules exist here; other types are named once and
/// left out. Off unless `enabled` (or `GUARDRAILS_ENABLED`) says true, as in GoModel.
pub fn guardrail_calls(
    spec: &super::schema::GuardrailsSpec,
    env: &Env,
    label: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<crate::middleware::MiddlewareCall>, String> {
    let enabled = match env.get("GUARDRAILS_ENABLED") {
        Some(v) => super::env::parse_bool(v)
            .ok_or_else(|| format!("GUARDRAILS_ENABLED={v:?} must be true or false"))?,
        None => spec.enabled.unwrap_or(false),
    };
    if !enabled {
        return Ok(Vec::new());
    }
    let mut rules: Vec<(usize, &super::schema::GuardrailRuleSpec)> =
        spec.rules.iter().enumerate().collect();
    rules.sort_by_key(|(_, r)| r.order.unwrap_or(0));
    let mut calls = Vec::new();
    for (i, rule) in rules {
        let at = format!("{label}: guardrails.rules[{i}] ({:?})", rule.name);
        match rule.kind.trim() {
            "system_prompt" => {
                let Some(sp) = &rule.system_prompt else {
                    return Err(format!("{at}: type system_prompt needs a system_prompt block with content"));
                };
                if sp.content.trim().is_empty() {
                    return Err(format!("{at}: system_prompt.content is empty"));
                }
                let position = match sp.mode.as_deref().map(str::trim).unwrap_or("inject") {
                    "inject" => "inject",
                    "override" => "replace",
                    "decorator" => "prepend",
                    other => {
                        return Err(format!(
                            "{at}: system_prompt.mode {other:?} is unknown; use inject, override or decorator"
                        ))
                    }
                };
                calls.push(crate::middleware::MiddlewareCall {
                    name: "system-prompt".into(),
                    config_type: Some("system_prompt_config".into()),
                    config: Some(serde_json::json!({"text": sp.content, "position": position})),
                    config_id: None,
                });
            }
            other => warnings.push(format!(
                "{at}: type {other:?}: not supported by modelgate; ignored (system_prompt rules are)"
            )),
        }
    }
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_and_plain_seconds() {
        assert_eq!(parse_duration_ms("1s"), Some(1000));
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("1m30s"), Some(90_000));
        assert_eq!(parse_duration_ms("1.5h"), Some(5_400_000));
        assert_eq!(parse_duration_ms("600"), Some(600_000));
        assert_eq!(parse_duration_ms("0.25"), Some(250));
        assert_eq!(parse_duration_ms("10 parsecs"), None);
        assert_eq!(parse_duration_ms("s"), None);
        assert_eq!(parse_duration_ms("-1"), None);
    }

    #[test]
    fn ignored_sections_are_removed_and_named_one_line_each() {
        let mut v: serde_yaml::Value = serde_yaml::from_str(
            "server: {port: 1, pprof_enabled: true, swagger_enabled: false}\n\
             usage: {enabled: true}\nguardrails: {enabled: false, enable_for_batch_processing: true}\n\
             cache: {model: {refresh_interval: 60, local: {cache_dir: x}}}\n",
        )
        .unwrap();
        let env = Env::from_pairs([("LOGGING_ENABLED", "true"), ("SET_BUDGET_TEAM", "5")]);
        let r = strip(&mut v, &env);
        let text = r.ignored.join("\n");
        assert!(
            text.contains(
                "server.swagger_enabled, server.pprof_enabled: not supported by modelgate; ignored"
            ),
            "{text}"
        );
        assert!(text.contains("usage: not supported"), "{text}");
        assert!(
            text.contains("guardrails.enable_for_batch_processing: not supported"),
            "{text}"
        );
        assert!(text.contains("cache.model.local: not supported"), "{text}");
        assert!(text.contains("LOGGING_ENABLED: not supported"), "{text}");
        // Budgets are honoured (as user-path budget limits).
        assert!(!text.contains("SET_BUDGET_TEAM"), "{text}");
        assert!(r.honoured.contains(&"env SET_BUDGET_TEAM".to_string()));
        assert_eq!(r.ignored.len(), 5, "{text}");
        assert_eq!(
            serde_yaml::to_string(&v).unwrap(),
            "server:\n  port: 1\ncache:\n  model:\n    refresh_interval: 60\nguardrails:\n  enabled: false\n"
        );
        assert!(r.honoured.contains(&"server.port".to_string()));
        assert!(r
            .honoured
            .contains(&"cache.model.refresh_interval".to_string()));
    }

    #[test]
    fn a_modelgate_file_reports_nothing() {
        let mut v: serde_yaml::Value =
            serde_yaml::from_str("server: {port: 1}\nvirtual_models: []\n").unwrap();
        assert_eq!(strip(&mut v, &Env::default()), Report::default());
    }

    #[test]
    fn fallback_modes_are_checked_and_named() {
        let spec: FallbackSpec = serde_yaml::from_str("default_mode: sometimes").unwrap();
        let e = fallback_rules(&spec, &Env::default(), "c.yaml", &mut Vec::new()).unwrap_err();
        assert_eq!(
            e,
            "c.yaml: fallback.default_mode: \"sometimes\" is unknown; use off, manual or auto"
        );
        let spec: FallbackSpec =
            serde_yaml::from_str("overrides: {gpt-4o: {mode: never}}").unwrap();
        let e = fallback_rules(&spec, &Env::default(), "c.yaml", &mut Vec::new()).unwrap_err();
        assert!(
            e.starts_with("c.yaml: fallback.overrides.gpt-4o.mode: \"never\""),
            "{e}"
        );
    }

    #[test]
    fn the_rules_file_is_read_and_its_errors_name_file_and_model() {
        let dir = std::env::temp_dir().join(format!("mg-fallback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("rules.json");
        std::fs::write(&good, r#"{"gpt-4o": ["azure/gpt-4o", " gemini/g "]}"#).unwrap();
        let env = Env::from_pairs([("FALLBACK_MANUAL_RULES_PATH", good.to_str().unwrap())]);
        let mut w = Vec::new();
        let spec = FallbackSpec {
            default_mode: Some("auto".into()),
            ..FallbackSpec::default()
        };
        let r = fallback_rules(&spec, &env, "c", &mut w).unwrap();
        assert_eq!(
            r.for_model("openai", "gpt-4o"),
            ["azure/gpt-4o", "gemini/g"]
        );
        assert!(w[0].contains("auto"), "{w:?}");

        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"{"gpt-4o": "azure/gpt-4o"}"#).unwrap();
        let env = Env::from_pairs([("FALLBACK_MANUAL_RULES_PATH", bad.to_str().unwrap())]);
        let e = fallback_rules(&FallbackSpec::default(), &env, "c", &mut w).unwrap_err();
        assert!(
            e.contains("bad.json") && e.contains("\"gpt-4o\": must be a list"),
            "{e}"
        );
        let missing = FallbackSpec {
            manual_rules_path: Some("/nonexistent/rules.json".into()),
            ..FallbackSpec::default()
        };
        let e = fallback_rules(&missing, &Env::default(), "c.yaml", &mut w).unwrap_err();
        assert!(
            e.starts_with(
                "c.yaml: fallback.manual_rules_path \"/nonexistent/rules.json\": cannot read"
            ),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
