//! Configuration: the file, `.env`, environment variables and `VIRTUAL_MODELS`, loaded and
//! checked into one `LoadedConfig`. Precedence of settings: env > file > default.
//!
//! Loading never touches the network and never swaps anything live; `snapshot` decides what to
//! do with a loaded config.

pub mod block_yaml;
pub mod document;
pub mod dotenv;
pub mod env;
pub mod expand;
pub mod gomodel;
pub mod pipelines;
pub mod providers;
pub mod schema;
pub mod settings;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::middleware::call::MiddlewareConfigEntry;
use env::Env;
use providers::{ProviderConfig, ProviderDefaults};
use schema::{FileConfig, VirtualModelSpec};
use settings::Settings;

use crate::routing::fallback::FallbackRules;

/// Everything read from the file and the environment (the admin store is added later).
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub path: Option<PathBuf>,
    /// How messages name the file (its path as given, or "built-in defaults").
    pub label: String,
    pub settings: Settings,
    pub providers: Vec<ProviderConfig>,
    /// Shared with the snapshot's virtual models, which keep the declaration as written.
    pub file_virtual_models: Vec<Arc<VirtualModelSpec>>,
    /// The file's `middleware_configs:` map (`"workspace/name"` -> entry).
    pub middleware_configs: BTreeMap<String, MiddlewareConfigEntry>,
    pub env_virtual_models: Vec<Arc<VirtualModelSpec>>,
    /// Fallbacks of concrete models requested directly (GoModel's `fallback` section).
    pub fallbacks: FallbackRules,
    /// GoModel's guardrails as request middleware run on every chat-shaped request (empty when
    /// they are off).
    pub guardrails: Vec<crate::middleware::MiddlewareCall>,
    /// Rate limits and budgets, and where their counters live.
    pub limits: crate::limits::LimitsConfig,
    pub warnings: Vec<String>,
}

/// The config path: the flag, else `$MODELGATE_CONFIG`, else `config/config.yaml`, else
/// `./config.yaml`; None means built-in defaults.
pub fn find_path(flag: Option<&Path>, env: &Env) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_path_buf());
    }
    if let Some(p) = env.get("MODELGATE_CONFIG") {
        return Some(PathBuf::from(p));
    }
    ["config/config.yaml", "config.yaml"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Loads and checks the file and environment. The error names the file, entry and field.
pub fn load(path: Option<&Path>, env: &Env) -> Result<LoadedConfig, String> {
    let (label, file, report) = match path {
        None => {
            let mut empty = serde_yaml::Value::Mapping(Default::default());
            let report = gomodel::strip(&mut empty, env);
            (
                "built-in defaults".to_string(),
                FileConfig::default(),
                report,
            )
        }
        Some(p) => {
            let label = p.display().to_string();
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("{label}: cannot read the config file: {e}"))?;
            let (file, report) = parse_file_reporting(&text, &label, env)?;
            (label, file, report)
        }
    };
    let mut warnings: Vec<String> = report
        .ignored
        .iter()
        .map(|line| format!("{label}: {line}"))
        .collect();
    let mut settings = Settings::resolve(&file, env, &label)?;
    settings.gomodel_honoured = report.honoured;
    settings.gomodel_ignored = warnings.clone();
    let defaults = ProviderDefaults::resolve(&file, env, settings.retry.clone(), &label)?;
    let providers = providers::resolve(&file.providers, &label, env, &defaults, &mut warnings)?;
    let fallbacks = gomodel::fallback_rules(&file.fallback, env, &label, &mut warnings)?;
    let guardrails = gomodel::guardrail_calls(&file.guardrails, env, &label, &mut warnings)?;
    let budgets = crate::limits::gomodel::limits(&file.budgets, env, &label)?;
    let limits = crate::limits::config::load(&file.limits, budgets, env, &label)?;
    let env_virtual_models = match env.get("VIRTUAL_MODELS") {
        None => Vec::new(),
        Some(raw) => shared(parse_virtual_models_json(raw)?),
    };
    Ok(LoadedConfig {
        path: path.map(Path::to_path_buf),
        label,
        settings,
        providers,
        file_virtual_models: file.virtual_models,
        middleware_configs: file.middleware_configs,
        env_virtual_models,
        fallbacks,
        guardrails,
        limits,
        warnings,
    })
}

/// Each declaration moved into its own shared allocation. Collected into a new vector on
/// purpose: collecting the iterator in place would keep the old vector's whole buffer (as large
/// as every declaration together) for a vector of pointers.
fn shared(specs: Vec<VirtualModelSpec>) -> Vec<Arc<VirtualModelSpec>> {
    let mut out = Vec::with_capacity(specs.len());
    out.extend(specs.into_iter().map(Arc::new));
    out
}

/// Parses the YAML text: expands `${VAR}`, rejects unknown keys with a suggestion.
pub fn parse_file(text: &str, label: &str, env: &Env) -> Result<FileConfig, String> {
    parse_file_reporting(text, label, env).map(|(file, _)| file)
}

/// `parse_file`, with GoModel's keys that modelgate ignores taken out first and reported.
/// Errors name the section and field: `server.port: expected a number ...`.
pub fn parse_file_reporting(
    text: &str,
    label: &str,
    env: &Env,
) -> Result<(FileConfig, gomodel::Report), String> {
    let (value, report) = prepared(text, label, env)?;
    // Without tracking the path first: tracking it costs a copy of every key on the way down
    // (a tenth of the load of 100,000 virtual models). A file that fails is read again with
    // the path tracked, so that the message names the section and field.
    if let Ok(file) = FileConfig::deserialize(value) {
        return Ok((file, report));
    }
    let (value, report) = prepared(text, label, env)?;
    let file = serde_path_to_error::deserialize::<_, FileConfig>(value)
        .map_err(|e| format!("{label}: {}", at_path(&e)))?;
    Ok((file, report))
}

/// The document with `${VAR}` expanded and GoModel's ignored keys taken out.
fn prepared(
    text: &str,
    label: &str,
    env: &Env,
) -> Result<(serde_yaml::Value, gomodel::Report), String> {
    let mut value = document::parse(text, label)?;
    if expand::text_may_hold_variables(text) {
        expand::expand_yaml(&mut value, env, "").map_err(|e| format!("{label}: {e}"))?;
    }
    let report = gomodel::strip(&mut value, env);
    Ok((value, report))
}

/// A serde error prefixed by where it happened (`server.port: ...`), with a suggestion for an
/// unknown key. At the top level (`.`) there is no prefix.
fn at_path<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>) -> String {
    let inner = suggest(&e.inner().to_string());
    match e.path().to_string().as_str() {
        "." | "" => inner,
        path => format!("{path}: {inner}"),
    }
}

/// Parses `VIRTUAL_MODELS` (a JSON array of virtual model objects).
pub fn parse_virtual_models_json(raw: &str) -> Result<Vec<VirtualModelSpec>, String> {
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| format!("VIRTUAL_MODELS: not valid JSON: {e}"))?;
    let items = value
        .as_array()
        .ok_or("VIRTUAL_MODELS: must be a JSON array of virtual model objects")?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            serde_path_to_error::deserialize::<_, VirtualModelSpec>(item.clone())
                .map_err(|e| format!("VIRTUAL_MODELS[{i}]: {}", at_path(&e)))
        })
        .collect()
}

/// Adds "did you mean" to serde's unknown-field messages.
pub fn suggest(message: &str) -> String {
    let Some(start) = message.find("unknown field `") else {
        return message.to_string();
    };
    let rest = &message[start + "unknown field `".len()..];
    let Some(end) = rest.find('`') else {
        return message.to_string();
    };
    let unknown = &rest[..end];
    let expected: Vec<&str> = rest[end + 1..].split('`').skip(1).step_by(2).collect();
    let best = expected
        .iter()
        .map(|k| (strsim::damerau_levenshtein(unknown, k), *k))
        .min();
    match best {
        Some((d, k)) if d <= 3.max(unknown.len() / 3) => {
            format!("{message}; did you mean `{k}`?")
        }
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_suggests_nearest() {
        let err = parse_file(
            "providers:\n  openai:\n    api_kye: x\n",
            "c.yaml",
            &Env::default(),
        )
        .unwrap_err();
        assert!(err.starts_with("c.yaml: "), "{err}");
        assert!(err.contains("unknown field `api_kye`"), "{err}");
        assert!(err.contains("did you mean `api_key`?"), "{err}");
    }

    #[test]
    fn unknown_top_level_key_suggests() {
        let err = parse_file("virtual_model: []\n", "c.yaml", &Env::default()).unwrap_err();
        assert!(err.contains("did you mean `virtual_models`?"), "{err}");
    }

    #[test]
    fn type_errors_name_the_section_and_field() {
        let err = parse_file("server:\n  port: \"80a\"\n", "c.yaml", &Env::default()).unwrap_err();
        assert_eq!(
            err,
            "c.yaml: server.port: expected a number or a numeric string, got \"80a\""
        );
        let err = parse_file(
            "virtual_models:\n  - source: s\n    targets: [{model: a/b, weight: heavy}]\n",
            "c.yaml",
            &Env::default(),
        )
        .unwrap_err();
        assert!(
            err.starts_with("c.yaml: virtual_models[0].targets[0].weight: invalid type"),
            "{err}"
        );
        let err = parse_file(
            "resilience:\n  retry:\n    initial_backoff: soon\n",
            "c.yaml",
            &Env::default(),
        )
        .unwrap_err();
        assert!(
            err.starts_with("c.yaml: resilience.retry.initial_backoff: expected a duration"),
            "{err}"
        );
    }

    #[test]
    fn a_misspelt_key_in_a_gomodel_section_still_suggests() {
        let err = parse_file(
            "fallback:\n  default_mod: manual\n",
            "c.yaml",
            &Env::default(),
        )
        .unwrap_err();
        assert!(
            err.contains("c.yaml: fallback.default_mod: unknown field `default_mod`")
                && err.contains("did you mean `default_mode`?"),
            "{err}"
        );
    }

    #[test]
    fn a_variable_written_as_an_escaped_dollar_is_still_expanded() {
        let env = Env::from_pairs([("PORT", "9001")]);
        let json = r#"{"server": {"port": "\u0024{PORT}"}}"#;
        assert_eq!(
            parse_file(json, "c.json", &env).unwrap().server.port,
            Some(schema::PortValue(9001))
        );
        let yaml = "server:\n  port: \"\\x24{PORT}\"\n";
        assert_eq!(
            parse_file(yaml, "c.yaml", &env).unwrap().server.port,
            Some(schema::PortValue(9001))
        );
        let plain = "server:\n  port: 9002\n";
        assert_eq!(
            parse_file(plain, "c.yaml", &env).unwrap().server.port,
            Some(schema::PortValue(9002))
        );
    }

    #[test]
    fn a_json_file_reads_like_the_same_yaml_file() {
        let env = Env::from_pairs([("PORT", "9001")]);
        let yaml = "server:\n  port: ${PORT}\nvirtual_models:\n  - source: s\n    targets: [{model: a/b, weight: 2}]\n";
        let json = r#"{"server": {"port": "${PORT}"},
            "virtual_models": [{"source": "s", "targets": [{"model": "a/b", "weight": 2}]}]}"#;
        let from_yaml = parse_file(yaml, "c.yaml", &env).unwrap();
        let from_json = parse_file(json, "c.json", &env).unwrap();
        assert_eq!(format!("{from_yaml:?}"), format!("{from_json:?}"));
        assert_eq!(from_json.virtual_models[0].source.as_deref(), Some("s"));
        let err = parse_file(
            r#"{"virtual_models": [{"source": "s", "targets": [{"model": "a/b", "weight": "heavy"}]}]}"#,
            "c.json",
            &env,
        )
        .unwrap_err();
        assert!(
            err.starts_with("c.json: virtual_models[0].targets[0].weight: invalid type"),
            "{err}"
        );
        let err = parse_file(r#"{"virtual_model": []}"#, "c.json", &env).unwrap_err();
        assert!(err.contains("did you mean `virtual_models`?"), "{err}");
    }

    #[test]
    fn env_virtual_models_parse_with_truefoundry_spellings() {
        let v = parse_virtual_models_json(
            r#"[{"source":"s","routing_config":{"type":"priority-based-routing"},
                 "load_balance_targets":[{"target":"openai/gpt-4o","retry_config":{"attempts":3,"delay":50,"on_status_codes":["429"]},"fallback_status_codes":["500",502]}]}]"#,
        )
        .unwrap();
        let t = &v[0].targets.as_ref().unwrap()[0];
        assert_eq!(t.model.as_deref(), Some("openai/gpt-4o"));
        assert_eq!(t.retry.as_ref().unwrap().attempts, Some(3));
        assert_eq!(t.retry.as_ref().unwrap().delay_ms, Some(50));
        assert_eq!(t.fallback_on.as_ref().unwrap().len(), 2);
    }

    #[test]
    fn env_virtual_models_bad_json_is_named() {
        let err = parse_virtual_models_json("[{").unwrap_err();
        assert!(err.starts_with("VIRTUAL_MODELS: not valid JSON"));
        let err = parse_virtual_models_json(r#"[{"sorce":"x"}]"#).unwrap_err();
        assert!(
            err.contains("VIRTUAL_MODELS[0]") && err.contains("did you mean `source`?"),
            "{err}"
        );
    }
}
