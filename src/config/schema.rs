//! The on-disk and `VIRTUAL_MODELS` schema as serde types, exactly as users write them.
//!
//! These types only describe shape: they never resolve providers, read the environment or judge
//! whether a declaration makes sense. `validate` turns them into routing types.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::middleware::call::{MiddlewareCall, MiddlewareConfigEntry};

/// The whole `config.yaml`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSpec>,
    /// Each declaration in the `Arc` the loaded config and the snapshot share.
    #[serde(default, deserialize_with = "shared_specs")]
    pub virtual_models: Vec<Arc<VirtualModelSpec>>,
    #[serde(default)]
    pub models: ModelsSection,
    #[serde(default)]
    pub circuit_breaker: Option<BreakerSpec>,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub logging: LoggingSection,
    // GoModel's sections (`gomodel` strips the keys modelgate ignores before these are read).
    #[serde(default)]
    pub storage: StorageSpec,
    #[serde(default)]
    pub cache: CacheSpec,
    #[serde(default)]
    pub metrics: MetricsSpec,
    #[serde(default)]
    pub http: HttpSpec,
    #[serde(default)]
    pub resilience: ResilienceSpec,
    #[serde(default)]
    pub fallback: FallbackSpec,
    #[serde(default)]
    pub guardrails: GuardrailsSpec,
    /// Shared middleware configurations, keyed `"workspace/name"`, that a `MiddlewareCall`
    /// names with `config_id`.
    #[serde(default)]
    pub middleware_configs: BTreeMap<String, MiddlewareConfigEntry>,
    /// Rate limits and budgets (`crate::limits`).
    #[serde(default)]
    pub limits: Vec<crate::limits::LimitSpec>,
    /// GoModel's budgets, mapped onto budget limits by user path.
    #[serde(default)]
    pub budgets: crate::limits::gomodel::BudgetsSpec,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<String>,
    pub port: Option<PortValue>,
    /// Serve every route under this prefix (GoModel's `base_path`).
    pub base_path: Option<String>,
    pub master_key: Option<String>,
    pub body_size_limit: Option<SizeValue>,
    pub audio_body_size_limit: Option<SizeValue>,
    pub user_path_header: Option<String>,
    pub threads: Option<usize>,
    pub grace_period_seconds: Option<u64>,
    pub pid_file: Option<String>,
}

/// A port written as a number or a numeric string (GoModel writes `port: "8080"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortValue(pub u16);

impl<'de> Deserialize<'de> for PortValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a numeric string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortValue, E> {
                u16::try_from(v)
                    .map(PortValue)
                    .map_err(|_| E::custom(format!("expected a port number (0-65535), got {v}")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortValue, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("expected a port number (0-65535), got {v}")))
                    .and_then(|u| self.visit_u64(u))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortValue, E> {
                match v.trim().parse::<u64>() {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(E::custom(format!(
                        "expected a number or a numeric string, got {v:?}"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration in milliseconds, written as Go writes one (`1s`, `500ms`, `1m30s`) or as a number
/// of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationMs(pub u64);

impl<'de> Deserialize<'de> for DurationMs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationMs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as 1s, 500ms or 2m, or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationMs, E> {
                Ok(DurationMs(v.saturating_mul(1000)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationMs, E> {
                u64::try_from(v)
                    .map(|u| DurationMs(u.saturating_mul(1000)))
                    .map_err(|_| E::custom(format!("expected a duration of 0 or more, got {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DurationMs, E> {
                if v.is_finite() && v >= 0.0 {
                    Ok(DurationMs((v * 1000.0).round() as u64))
                } else {
                    Err(E::custom(format!(
                        "expected a duration of 0 or more, got {v}"
                    )))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationMs, E> {
                super::gomodel::parse_duration_ms(v).map(DurationMs).ok_or_else(|| {
                    E::custom(format!(
                        "expected a duration such as 1s, 500ms or 2m, or a number of seconds, got {v:?}"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// GoModel's `storage` section (`postgresql` and `mongodb` are named and ignored by `gomodel`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub sqlite: SqliteSpec,
    #[serde(default)]
    pub postgresql: PostgresStorageSpec,
}

/// GoModel's `storage.postgresql`: the database of the fleet store.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresStorageSpec {
    pub url: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteSpec {
    pub path: Option<String>,
}

/// GoModel's `cache`: only the model catalog's refresh interval applies here.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    #[serde(default)]
    pub model: ModelCacheSpec,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCacheSpec {
    pub refresh_interval: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSpec {
    pub enabled: Option<bool>,
    pub endpoint: Option<String>,
}

/// GoModel's upstream HTTP client timeouts.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    pub timeout: Option<DurationMs>,
    pub response_header_timeout: Option<DurationMs>,
}

/// GoModel's `resilience`, globally and per provider.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResilienceSpec {
    pub retry: Option<BackoffSpec>,
    pub circuit_breaker: Option<GoBreakerSpec>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackoffSpec {
    pub max_retries: Option<u32>,
    pub initial_backoff: Option<DurationMs>,
    pub max_backoff: Option<DurationMs>,
    pub backoff_factor: Option<f64>,
    pub jitter_factor: Option<f64>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GoBreakerSpec {
    pub failure_threshold: Option<u32>,
    pub success_threshold: Option<u32>,
    pub timeout: Option<DurationMs>,
}

/// GoModel's `guardrails` (`enable_for_batch_processing` is stripped as ignored first).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailsSpec {
    pub enabled: Option<bool>,
    #[serde(default)]
    pub rules: Vec<GuardrailRuleSpec>,
}

/// One GoModel guardrail rule; only `system_prompt` rules are honoured.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailRuleSpec {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    pub order: Option<i64>,
    pub user_path: Option<String>,
    pub system_prompt: Option<SystemPromptRuleSpec>,
    /// Named as unsupported when present; its settings are not read.
    pub llm_based_altering: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemPromptRuleSpec {
    pub mode: Option<String>,
    #[serde(default)]
    pub content: String,
}

/// GoModel's `fallback`: fallbacks for concrete models requested directly.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackSpec {
    pub default_mode: Option<String>,
    pub manual_rules_path: Option<String>,
    #[serde(default)]
    pub overrides: BTreeMap<String, FallbackOverrideSpec>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackOverrideSpec {
    pub mode: Option<String>,
}

/// A size written as a number of bytes or a string with a K/M/G suffix.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsSection {
    pub keep_only_aliases_at_models_endpoint: Option<bool>,
    pub enabled_by_default: Option<bool>,
    pub overrides_enabled: Option<bool>,
    pub configured_provider_models_mode: Option<String>,
    pub cache_refresh_interval: Option<u64>,
    pub refresh_wait_ms: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite` (default) or `postgresql`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub sqlite_path: Option<String>,
    pub postgres_url: Option<String>,
    pub poll_seconds: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSection {
    pub format: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    pub failure_threshold: Option<u32>,
    pub open_seconds: Option<u64>,
    pub success_threshold: Option<u32>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub api_key: Option<String>,
    pub base_url: Option<String>,
    #[serde(default)]
    pub models: Vec<ModelSpec>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeouts: TimeoutSpec,
    pub circuit_breaker: Option<BreakerSpec>,
    /// Azure's `api-version` query value (GoModel's key).
    pub api_version: Option<String>,
    /// GoModel's per-provider `resilience` overrides.
    pub resilience: Option<ResilienceSpec>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSpec {
    pub connect_ms: Option<u64>,
    pub first_byte_ms: Option<u64>,
    pub idle_ms: Option<u64>,
}

/// A configured model: a bare id, or an object with pricing and a context window.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub id: String,
    pub pricing: Option<PricingSpec>,
    /// The model's context window in tokens (overrides the bundled table's).
    pub context_window: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PricingSpec {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSpecObject {
    id: String,
    pricing: Option<PricingSpec>,
    context_window: Option<u64>,
}

impl<'de> Deserialize<'de> for ModelSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ModelSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a model id or {id, pricing, context_window}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ModelSpec, E> {
                Ok(ModelSpec {
                    id: v.to_string(),
                    pricing: None,
                    context_window: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ModelSpec, A::Error> {
                let o = ModelSpecObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ModelSpec {
                    id: o.id,
                    pricing: o.pricing,
                    context_window: o.context_window,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// One virtual model declaration (GoModel keys, TrueFoundry spellings as aliases).
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VirtualModelSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Boxed, as are the other rarely set blocks here and in a target: a declaration is kept
    /// for every virtual model, and most leave these out (BENCHMARKS.md, "100,000 virtual
    /// models").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Box<TargetSpec>>,
    #[serde(
        default,
        alias = "load_balance_targets",
        skip_serializing_if = "Option::is_none"
    )]
    pub targets: Option<Vec<TargetSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_config: Option<Box<RoutingConfigSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<Box<SessionAffinitySpec>>,
    /// Hedged requests (off when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge: Option<Box<HedgeSpec>>,
    /// Rate-limit steering settings (defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steer: Option<Box<SteerSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_routing: Option<Box<StickySpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_paths: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    // NeMo's VirtualModel fields; any origin may carry them.
    /// Stable id, assigned when the admin API first writes the row; kept across renames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoprovisioned: Option<bool>,
    /// NeMo's VirtualModel without a `default_model_entity` (created without one, or cleared
    /// with `null`): its `models`, the targets, serve in their order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_default_model: Option<bool>,
    /// The user path of the caller who created the row through the admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// The user path of the caller who last wrote the row through the admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_middleware: Option<Box<[MiddlewareCall]>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_middleware: Option<Box<[MiddlewareCall]>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_response_middleware: Option<Box<[MiddlewareCall]>>,
}

impl VirtualModelSpec {
    /// The three middleware lists with their field names, in phase order.
    pub fn middleware_lists(&self) -> [(&'static str, &[MiddlewareCall]); 3] {
        [
            ("request_middleware", &self.request_middleware),
            ("response_middleware", &self.response_middleware),
            ("post_response_middleware", &self.post_response_middleware),
        ]
        .map(|(name, l)| (name, l.as_deref().unwrap_or(&[])))
    }
}

/// `virtual_models`, each declaration moved once into its `Arc`. Collected into a
/// `Vec<VirtualModelSpec>` first, every 368-byte declaration was moved three times (into the
/// vector, again each time it grew, then into the `Arc`): at 100,000 virtual models, about 150 MB
/// of copying per load.
fn shared_specs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Arc<VirtualModelSpec>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<Arc<VirtualModelSpec>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            // The hint comes from the parsed document, but cap it as serde does.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(spec) = seq.next_element::<VirtualModelSpec>()? {
                out.push(Arc::new(spec));
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V)
}

/// TrueFoundry's `routing_config` block: `type` names the strategy, targets may sit inside.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfigSpec {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, alias = "targets", skip_serializing_if = "Option::is_none")]
    pub load_balance_targets: Option<Vec<TargetSpec>>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StickySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_identifiers: Option<Vec<SessionIdentifierSpec>>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SessionIdentifierSpec {
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub key: String,
}

/// One target of a redirect: a bare model name, or an object.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct TargetSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Box<RetrySpec>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_on: Option<Box<[StatusCode]>>,
    /// Error classes (`routing::error_class`) that fall back besides `fallback_on`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_on_errors: Option<Box<[String]>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_candidate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_params: Option<Box<serde_json::Map<String, serde_json::Value>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Box<HeadersSpec>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_match: Option<Box<BTreeMap<String, String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sla: Option<Box<SlaSpec>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_format: Option<Box<str>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetSpecObject {
    provider: Option<String>,
    #[serde(alias = "target")]
    model: Option<String>,
    weight: Option<f64>,
    priority: Option<i64>,
    #[serde(alias = "retry_config")]
    retry: Option<RetrySpec>,
    #[serde(alias = "fallback_status_codes")]
    fallback_on: Option<Vec<StatusCode>>,
    fallback_on_errors: Option<Vec<String>>,
    fallback_candidate: Option<bool>,
    override_params: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(alias = "headers_override")]
    headers: Option<HeadersSpec>,
    metadata_match: Option<BTreeMap<String, String>>,
    sla: Option<SlaSpec>,
    backend_format: Option<String>,
}

impl<'de> Deserialize<'de> for TargetSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TargetSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a model name or a target object {model, weight, ...}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TargetSpec, E> {
                Ok(TargetSpec {
                    model: Some(v.to_string()),
                    ..TargetSpec::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TargetSpec, A::Error> {
                let o = TargetSpecObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(TargetSpec {
                    provider: o.provider,
                    model: o.model,
                    weight: o.weight,
                    priority: o.priority,
                    retry: o.retry.map(Box::new),
                    fallback_on: o.fallback_on.map(Vec::into_boxed_slice),
                    fallback_on_errors: o.fallback_on_errors.map(Vec::into_boxed_slice),
                    fallback_candidate: o.fallback_candidate,
                    override_params: o.override_params.map(Box::new),
                    headers: o.headers.map(Box::new),
                    metadata_match: o.metadata_match.map(Box::new),
                    sla: o.sla.map(Box::new),
                    backend_format: o.backend_format.map(String::into_boxed_str),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// An HTTP status written as a number or a string (TrueFoundry writes `"429"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct StatusCode(pub u16);

impl<'de> Deserialize<'de> for StatusCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StatusCode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an HTTP status code (100-599)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusCode, E> {
                match u16::try_from(v) {
                    Ok(c) if (100..=599).contains(&c) => Ok(StatusCode(c)),
                    _ => Err(E::custom(format!(
                        "{v} is not an HTTP status code (100-599)"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusCode, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(E::custom(format!(
                        "{v} is not an HTTP status code (100-599)"
                    ))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusCode, E> {
                match v.trim().parse::<u64>() {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(E::custom(format!(
                        "{v:?} is not an HTTP status code (100-599)"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct RetrySpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_status: Option<Vec<StatusCode>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrySpecObject {
    attempts: Option<u32>,
    #[serde(alias = "delay")]
    delay_ms: Option<u64>,
    #[serde(alias = "on_status_codes")]
    on_status: Option<Vec<StatusCode>>,
}

impl<'de> Deserialize<'de> for RetrySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let o = RetrySpecObject::deserialize(d)?;
        Ok(RetrySpec {
            attempts: o.attempts,
            delay_ms: o.delay_ms,
            on_status: o.on_status,
        })
    }
}

#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeadersSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlaSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_first_token_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_per_output_token_ms: Option<u64>,
}

/// `session_affinity`: `true`/`false` (pin by session header), or an object that also chooses
/// the key: `{key: prefix, prefix_messages: N, ttl_seconds}` pins by the request's system
/// prompt and first N messages.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionAffinitySpec {
    Enabled(bool),
    Keyed(AffinityKeySpec),
}

impl SessionAffinitySpec {
    /// Whether pins apply at all.
    pub fn enabled(&self) -> bool {
        match self {
            SessionAffinitySpec::Enabled(b) => *b,
            SessionAffinitySpec::Keyed(k) => k.enabled.unwrap_or(true),
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AffinityKeySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `header` (default) or `prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_messages: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

impl Serialize for SessionAffinitySpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SessionAffinitySpec::Enabled(b) => s.serialize_bool(*b),
            SessionAffinitySpec::Keyed(k) => k.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for SessionAffinitySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SessionAffinitySpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or {key, prefix_messages, ttl_seconds}")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<SessionAffinitySpec, E> {
                Ok(SessionAffinitySpec::Enabled(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SessionAffinitySpec, A::Error> {
                AffinityKeySpec::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(SessionAffinitySpec::Keyed)
            }
        }
        d.deserialize_any(V)
    }
}

/// `hedge`: after `after_ms` without an answer's header, the same request also goes to the
/// next target of the plan.
#[derive(Debug, Default, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HedgeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_extra: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_percent: Option<f64>,
}

/// `steer`: rate-limit steering of a virtual model's targets.
#[derive(Debug, Default, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SteerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_remaining_fraction: Option<f64>,
}
