//! GoModel's `virtual_models` columns, derived from a config entry and read back from rows that
//! GoModel itself wrote (those carry no `spec` column value).
//!
//! The `spec` column (the whole entry as JSON) is authoritative for rows modelgate writes; the
//! GoModel columns are kept in step so that GoModel tooling reading the same table sees the
//! same models. This module only converts values; it never touches the database.

use serde::{Deserialize, Serialize};

use crate::config::schema::{SessionAffinitySpec, TargetSpec, VirtualModelSpec};
use crate::routing::model::Strategy;

/// The GoModel columns of one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    pub source: String,
    /// JSON array of `{provider?, model, weight?}`.
    pub targets: String,
    pub strategy: String,
    /// `""` (default), `"true"` or `"false"`.
    pub session_affinity: String,
    pub provider_name: String,
    pub model: String,
    /// JSON array of strings.
    pub user_paths: String,
    pub description: String,
    pub enabled: bool,
}

/// A target as GoModel stores it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GoTarget {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    #[serde(default)]
    pub model: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight: f64,
}

fn is_zero(w: &f64) -> bool {
    *w == 0.0
}

/// The targets of an entry, whichever spelling declared them.
pub fn spec_targets(spec: &VirtualModelSpec) -> Vec<&TargetSpec> {
    if let Some(t) = &spec.target {
        return vec![t];
    }
    if let Some(t) = spec.targets.as_ref().filter(|t| !t.is_empty()) {
        return t.iter().collect();
    }
    spec.routing_config
        .as_ref()
        .and_then(|r| r.load_balance_targets.as_ref())
        .map(|t| t.iter().collect())
        .unwrap_or_default()
}

/// GoModel's name for a strategy (it calls priority order "failover").
fn gomodel_strategy(raw: &str) -> String {
    match Strategy::parse(raw) {
        Some(Strategy::Priority) => "failover".to_string(),
        Some(s) => s.name().to_string(),
        None => raw.trim().to_string(),
    }
}

/// Our name for a GoModel strategy: `failover` is priority order; `adaptive` without GoModel's
/// extension behaves as round-robin.
pub fn strategy_from_gomodel(raw: &str) -> Option<String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "" => None,
        "failover" => Some("priority".to_string()),
        "adaptive" => Some("round_robin".to_string()),
        other => Some(other.to_string()),
    }
}

/// Splits a policy selector into GoModel's `provider_name` and `model`.
pub fn selector_parts(source: &str) -> (String, String) {
    match source.split_once('/') {
        Some((p, m)) => (p.to_string(), m.to_string()),
        None => (String::new(), source.to_string()),
    }
}

/// The GoModel columns of an entry.
pub fn from_spec(spec: &VirtualModelSpec) -> Columns {
    let source = spec.source.as_deref().unwrap_or("").trim().to_string();
    let targets: Vec<GoTarget> = spec_targets(spec)
        .into_iter()
        .map(|t| GoTarget {
            provider: t.provider.clone().unwrap_or_default(),
            model: t.model.clone().unwrap_or_default(),
            weight: t.weight.unwrap_or(0.0),
        })
        .collect();
    let strategy = spec
        .strategy
        .as_deref()
        .or(spec.routing_config.as_ref().and_then(|r| r.kind.as_deref()))
        .map(gomodel_strategy)
        .unwrap_or_default();
    let (provider_name, model) = if targets.is_empty() {
        selector_parts(&source)
    } else {
        (String::new(), String::new())
    };
    Columns {
        targets: serde_json::to_string(&targets).unwrap_or_else(|_| "[]".into()),
        strategy,
        session_affinity: match &spec.session_affinity {
            None => String::new(),
            Some(a) => a.enabled().to_string(),
        },
        provider_name,
        model,
        user_paths: serde_json::to_string(spec.user_paths.as_deref().unwrap_or(&[]))
            .unwrap_or_else(|_| "[]".into()),
        description: spec.description.clone().unwrap_or_default(),
        enabled: spec.enabled.unwrap_or(true),
        source,
    }
}

/// An entry from the GoModel columns of a row GoModel wrote.
pub fn to_spec(c: &Columns) -> Result<VirtualModelSpec, String> {
    let targets: Vec<GoTarget> = if c.targets.trim().is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(&c.targets).map_err(|e| format!("targets column: {e}"))?
    };
    let user_paths: Vec<String> = if c.user_paths.trim().is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(&c.user_paths).map_err(|e| format!("user_paths column: {e}"))?
    };
    let targets: Vec<TargetSpec> = targets
        .into_iter()
        .map(|t| TargetSpec {
            provider: Some(t.provider).filter(|p| !p.is_empty()),
            model: Some(t.model),
            // GoModel treats a non-positive weight as 1.
            weight: Some(t.weight).filter(|w| *w > 0.0),
            ..TargetSpec::default()
        })
        .collect();
    Ok(VirtualModelSpec {
        source: Some(c.source.trim().to_string()),
        targets: Some(targets).filter(|t| !t.is_empty()),
        strategy: strategy_from_gomodel(&c.strategy),
        session_affinity: match c.session_affinity.as_str() {
            "true" => Some(Box::new(SessionAffinitySpec::Enabled(true))),
            "false" => Some(Box::new(SessionAffinitySpec::Enabled(false))),
            _ => None,
        },
        user_paths: Some(user_paths).filter(|p| !p.is_empty()),
        description: Some(c.description.clone()).filter(|d| !d.is_empty()),
        enabled: Some(c.enabled).filter(|e| !e),
        ..VirtualModelSpec::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> VirtualModelSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn redirect_columns_follow_gomodel() {
        let c = from_spec(&spec(
            r#"{"source":" smart ","strategy":"priority","targets":[{"model":"a/m1","weight":2},{"provider":"b","model":"m3"}],
                "user_paths":["/team"],"description":"d","enabled":false,"session_affinity":false}"#,
        ));
        assert_eq!(c.source, "smart");
        assert_eq!(
            c.targets,
            r#"[{"model":"a/m1","weight":2.0},{"provider":"b","model":"m3"}]"#
        );
        assert_eq!(c.strategy, "failover");
        assert_eq!(c.session_affinity, "false");
        assert_eq!((c.provider_name.as_str(), c.model.as_str()), ("", ""));
        assert_eq!(c.user_paths, r#"["/team"]"#);
        assert!(!c.enabled);
    }

    #[test]
    fn policy_columns_split_the_selector() {
        let c = from_spec(&spec(r#"{"source":"openai/gpt-4o","user_paths":["/t"]}"#));
        assert_eq!(c.targets, "[]");
        assert_eq!(
            (c.provider_name.as_str(), c.model.as_str()),
            ("openai", "gpt-4o")
        );
        let c = from_spec(&spec(r#"{"source":"openai/"}"#));
        assert_eq!((c.provider_name.as_str(), c.model.as_str()), ("openai", ""));
    }

    #[test]
    fn gomodel_rows_read_back_as_entries() {
        let c = Columns {
            source: "smart".into(),
            targets: r#"[{"model":"openai/gpt-4o","weight":0},{"provider":"anthropic","model":"claude","weight":3}]"#.into(),
            strategy: "failover".into(),
            session_affinity: String::new(),
            provider_name: String::new(),
            model: String::new(),
            user_paths: r#"["/team"]"#.into(),
            description: "primary".into(),
            enabled: true,
        };
        let s = to_spec(&c).unwrap();
        assert_eq!(s.source.as_deref(), Some("smart"));
        assert_eq!(s.strategy.as_deref(), Some("priority"));
        let t = s.targets.unwrap();
        assert_eq!(t[0].model.as_deref(), Some("openai/gpt-4o"));
        assert_eq!(t[0].weight, None);
        assert_eq!(t[1].provider.as_deref(), Some("anthropic"));
        assert_eq!(t[1].weight, Some(3.0));
        assert_eq!(s.user_paths, Some(vec!["/team".to_string()]));
        assert_eq!(s.enabled, None);
    }

    #[test]
    fn bad_gomodel_json_is_named() {
        let c = Columns {
            source: "x".into(),
            targets: "[{".into(),
            strategy: String::new(),
            session_affinity: String::new(),
            provider_name: String::new(),
            model: String::new(),
            user_paths: "[]".into(),
            description: String::new(),
            enabled: true,
        };
        assert!(to_spec(&c).unwrap_err().starts_with("targets column"));
    }
}
