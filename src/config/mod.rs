//! Configuration: the file, `.env`, environment variables and `VIRTUAL_MODELS`, loaded and
//! checked into one `LoadedConfig`. Precedence of settings: env > file > default.
//!
//! Loading never touches the network and never swaps anything live; `snapshot` decides what to
//! do with a loaded config.

pub mod env;
pub mod expand;
pub mod pipelines;
pub mod providers;
pub mod schema;
pub mod settings;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::middleware::call::MiddlewareConfigEntry;
use env::Env;
use providers::{BreakerConfig, ProviderConfig};
use schema::{FileConfig, VirtualModelSpec};
use settings::Settings;

/// Everything read from the file and the environment (the admin store is added later).
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub path: Option<PathBuf>,
    /// How messages name the file (its path as given, or "built-in defaults").
    pub label: String,
    pub settings: Settings,
    pub providers: Vec<ProviderConfig>,
    pub file_virtual_models: Vec<VirtualModelSpec>,
    /// The file's `middleware_configs:` map (`"workspace/name"` -> entry).
    pub middleware_configs: BTreeMap<String, MiddlewareConfigEntry>,
    pub env_virtual_models: Vec<VirtualModelSpec>,
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
    let (label, file) = match path {
        None => ("built-in defaults".to_string(), FileConfig::default()),
        Some(p) => {
            let label = p.display().to_string();
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("{label}: cannot read the config file: {e}"))?;
            (label.clone(), parse_file(&text, &label, env)?)
        }
    };
    let mut warnings = Vec::new();
    let settings = Settings::resolve(&file, env, &label)?;
    let breaker = BreakerConfig::default().with(file.circuit_breaker.as_ref());
    let providers = providers::resolve(&file.providers, &label, env, breaker, &mut warnings)?;
    let env_virtual_models = match env.get("VIRTUAL_MODELS") {
        None => Vec::new(),
        Some(raw) => parse_virtual_models_json(raw)?,
    };
    Ok(LoadedConfig {
        path: path.map(Path::to_path_buf),
        label,
        settings,
        providers,
        file_virtual_models: file.virtual_models,
        middleware_configs: file.middleware_configs,
        env_virtual_models,
        warnings,
    })
}

/// Parses the YAML text: expands `${VAR}`, rejects unknown keys with a suggestion.
pub fn parse_file(text: &str, label: &str, env: &Env) -> Result<FileConfig, String> {
    let mut value: serde_yaml::Value = if text.trim().is_empty() {
        serde_yaml::Value::Mapping(Default::default())
    } else {
        serde_yaml::from_str(text).map_err(|e| format!("{label}: invalid YAML: {e}"))?
    };
    if value.is_null() {
        value = serde_yaml::Value::Mapping(Default::default());
    }
    expand::expand_yaml(&mut value, env, "").map_err(|e| format!("{label}: {e}"))?;
    serde_yaml::from_value::<FileConfig>(value)
        .map_err(|e| format!("{label}: {}", suggest(&e.to_string())))
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
            serde_json::from_value::<VirtualModelSpec>(item.clone())
                .map_err(|e| format!("VIRTUAL_MODELS[{i}]: {}", suggest(&e.to_string())))
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
