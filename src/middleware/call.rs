//! A NeMo `MiddlewareCall` as written in config, `VIRTUAL_MODELS`, the store and the admin APIs:
//! the raw, serde-level shape. `crate::middleware` turns a list of these into a checked pipeline.

use serde::{Deserialize, Serialize};

/// One step of a middleware pipeline: `{name, config_type, config | config_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MiddlewareCall {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_type: Option<String>,
    /// Inline configuration; exactly one of `config` and `config_id` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// `"workspace/name"` of an entry in the top-level `middleware_configs:` map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_id: Option<String>,
}

/// An entry of the top-level `middleware_configs:` map of config.yaml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MiddlewareConfigEntry {
    pub config_type: String,
    pub config: serde_json::Value,
}
