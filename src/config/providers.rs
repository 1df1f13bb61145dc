//! Providers: the file's `providers` section united with env auto-discovery, resolved into
//! `ProviderConfig` values (type, base URL parts, key, models, headers, timeouts).
//!
//! Nothing here touches the network; DNS resolution happens later, off the request path.

use std::collections::BTreeMap;

use super::env::Env;
use super::schema::{BreakerSpec, FileConfig, GoBreakerSpec, ModelSpec, ProviderSpec, TimeoutSpec};
use crate::routing::model::{RetryPolicy, WireFormat};

/// Provider types and their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
    /// Any OpenAI-compatible server; the name is the declared type.
    Compatible(&'static str),
    /// Answers locally, for demos and tests.
    Mock,
}

/// OpenAI-compatible types with their default base URL and whether they need a key.
const COMPATIBLE: [(&str, &str, bool); 18] = [
    ("groq", "https://api.groq.com/openai/v1", true),
    ("xai", "https://api.x.ai/v1", true),
    ("openrouter", "https://openrouter.ai/api/v1", true),
    ("deepseek", "https://api.deepseek.com/v1", true),
    (
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        true,
    ),
    ("mistral", "https://api.mistral.ai/v1", true),
    ("together", "https://api.together.xyz/v1", true),
    ("fireworks", "https://api.fireworks.ai/inference/v1", true),
    ("ollama", "http://127.0.0.1:11434/v1", false),
    ("vllm", "http://127.0.0.1:8000/v1", false),
    ("llamacpp", "http://127.0.0.1:8080/v1", false),
    ("sglang", "http://127.0.0.1:30000/v1", false),
    ("lmstudio", "http://127.0.0.1:1234/v1", false),
    ("openai_compatible", "", false),
    ("azure", "", true),
    ("oracle", "", true),
    ("minimax", "https://api.minimax.io/v1", true),
    ("zai", "https://api.z.ai/api/paas/v4", true),
];

/// Every type name `ProviderKind::parse` accepts (its aliases aside), for messages: derived
/// from the same table, so the two cannot drift.
pub fn type_names() -> String {
    let mut names = vec!["openai", "anthropic"];
    names.extend(COMPATIBLE.iter().map(|(n, _, _)| *n));
    names.push("mock");
    names.join(", ")
}

/// Azure OpenAI's `api-version` unless `api_version` or `AZURE_API_VERSION` names another.
pub const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

impl ProviderKind {
    pub fn parse(s: &str) -> Option<ProviderKind> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "openai" => Some(ProviderKind::OpenAi),
            "anthropic" => Some(ProviderKind::Anthropic),
            "mock" => Some(ProviderKind::Mock),
            "llama.cpp" | "llama-cpp" => Some(ProviderKind::Compatible("llamacpp")),
            "openai-compatible" | "custom" => Some(ProviderKind::Compatible("openai_compatible")),
            other => COMPATIBLE
                .iter()
                .find(|(n, _, _)| *n == other)
                .map(|(n, _, _)| ProviderKind::Compatible(n)),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Mock => "mock",
            ProviderKind::Compatible(n) => n,
        }
    }

    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "https://api.openai.com/v1",
            ProviderKind::Anthropic => "https://api.anthropic.com/v1",
            ProviderKind::Mock => "",
            ProviderKind::Compatible(n) => COMPATIBLE
                .iter()
                .find(|(t, _, _)| *t == n)
                .map_or("", |(_, u, _)| u),
        }
    }

    pub fn needs_key(self) -> bool {
        match self {
            ProviderKind::OpenAi | ProviderKind::Anthropic => true,
            ProviderKind::Mock => false,
            ProviderKind::Compatible(n) => COMPATIBLE
                .iter()
                .find(|(t, _, _)| *t == n)
                .is_some_and(|(_, _, k)| *k),
        }
    }

    /// Azure OpenAI takes its key in `api-key` and an `api-version` query on every call.
    pub fn is_azure(self) -> bool {
        self == ProviderKind::Compatible("azure")
    }

    pub fn wire_format(self) -> WireFormat {
        match self {
            ProviderKind::Anthropic => WireFormat::AnthropicMessages,
            ProviderKind::OpenAi | ProviderKind::Compatible(_) | ProviderKind::Mock => {
                WireFormat::OpenAiChat
            }
        }
    }

    fn env_prefix(self) -> String {
        self.name().to_ascii_uppercase()
    }
}

/// A base URL split into what a peer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash, e.g. `/v1`.
    pub path: String,
}

impl BaseUrl {
    pub fn parse(raw: &str) -> Result<BaseUrl, String> {
        let uri: http::Uri = raw
            .trim()
            .parse()
            .map_err(|e| format!("base_url {raw:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(format!(
                    "base_url {raw:?} must start with http:// or https://"
                ))
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("base_url {raw:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri.path().trim_end_matches('/').to_string();
        Ok(BaseUrl {
            tls,
            host,
            port,
            path,
        })
    }

    pub fn display(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}{}", self.host, self.port, self.path)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect_ms: u64,
    pub first_byte_ms: u64,
    pub idle_ms: u64,
}

impl Timeouts {
    /// Each bound must be at least 1 ms: 0 would fail every request at once.
    fn check(t: &TimeoutSpec, at: &str) -> Result<(), String> {
        for (field, v) in [
            ("connect_ms", t.connect_ms),
            ("first_byte_ms", t.first_byte_ms),
            ("idle_ms", t.idle_ms),
        ] {
            if v == Some(0) {
                return Err(format!(
                    "{at}: timeouts.{field}: must be at least 1 (milliseconds); leave it out for the default"
                ));
            }
        }
        Ok(())
    }

    /// The provider's own bounds over the defaults' (`http` and its variables), over the
    /// built-in ones.
    fn from_spec(t: &TimeoutSpec, defaults: &TimeoutSpec) -> Timeouts {
        Timeouts {
            connect_ms: t.connect_ms.or(defaults.connect_ms).unwrap_or(5_000),
            first_byte_ms: t.first_byte_ms.or(defaults.first_byte_ms).unwrap_or(60_000),
            idle_ms: t.idle_ms.or(defaults.idle_ms).unwrap_or(60_000),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub open_seconds: u64,
    pub success_threshold: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_seconds: 30,
            success_threshold: 2,
        }
    }
}

impl BreakerConfig {
    pub fn with(self, spec: Option<&BreakerSpec>) -> BreakerConfig {
        match spec {
            None => self,
            Some(s) => BreakerConfig {
                failure_threshold: s.failure_threshold.unwrap_or(self.failure_threshold).max(1),
                open_seconds: s.open_seconds.unwrap_or(self.open_seconds),
                success_threshold: s.success_threshold.unwrap_or(self.success_threshold).max(1),
            },
        }
    }
}

impl BreakerConfig {
    /// GoModel's `circuit_breaker` block (`timeout` is how long the circuit stays open).
    pub fn with_go(self, spec: Option<&GoBreakerSpec>) -> BreakerConfig {
        match spec {
            None => self,
            Some(s) => BreakerConfig {
                failure_threshold: s.failure_threshold.unwrap_or(self.failure_threshold).max(1),
                open_seconds: s.timeout.map_or(self.open_seconds, |d| d.0.div_ceil(1000)),
                success_threshold: s.success_threshold.unwrap_or(self.success_threshold).max(1),
            },
        }
    }
}

/// What every provider starts from before its own block: the circuit breaker, the retry
/// policy and the timeouts, from the file's global sections and the variables over them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderDefaults {
    pub breaker: BreakerConfig,
    pub retry: RetryPolicy,
    pub timeouts: TimeoutSpec,
}

impl ProviderDefaults {
    /// `circuit_breaker` / `resilience.circuit_breaker` with `CIRCUIT_BREAKER_*` over them,
    /// `retry` (already resolved with `RETRY_*`), and GoModel's `http` timeouts with
    /// `HTTP_TIMEOUT` / `HTTP_RESPONSE_HEADER_TIMEOUT` over them: the response-header timeout
    /// bounds the first byte, the overall timeout bounds each wait for more of the answer.
    pub fn resolve(
        file: &FileConfig,
        env: &Env,
        retry: RetryPolicy,
        label: &str,
    ) -> Result<ProviderDefaults, String> {
        let mut breaker = BreakerConfig::default()
            .with(file.circuit_breaker.as_ref())
            .with_go(file.resilience.circuit_breaker.as_ref());
        let whole = |name: &str| -> Result<Option<u32>, String> {
            env.get(name)
                .map(|v| {
                    v.trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| format!("{name}={v:?} must be a whole number above 0"))
                })
                .transpose()
        };
        if let Some(n) = whole("CIRCUIT_BREAKER_FAILURE_THRESHOLD")? {
            breaker.failure_threshold = n;
        }
        if let Some(n) = whole("CIRCUIT_BREAKER_SUCCESS_THRESHOLD")? {
            breaker.success_threshold = n;
        }
        if let Some(ms) = super::gomodel::env_duration_ms(env, "CIRCUIT_BREAKER_TIMEOUT")? {
            breaker.open_seconds = ms.div_ceil(1000);
        }
        let first_byte = super::gomodel::env_duration_ms(env, "HTTP_RESPONSE_HEADER_TIMEOUT")?
            .or(file.http.response_header_timeout.map(|d| d.0));
        let idle = super::gomodel::env_duration_ms(env, "HTTP_TIMEOUT")?
            .or(file.http.timeout.map(|d| d.0));
        for (name, v) in [
            ("http.response_header_timeout", first_byte),
            ("http.timeout", idle),
        ] {
            if v == Some(0) {
                return Err(format!(
                    "{label}: {name}: must be more than 0; leave it out for the default"
                ));
            }
        }
        Ok(ProviderDefaults {
            breaker,
            retry,
            timeouts: TimeoutSpec {
                connect_ms: None,
                first_byte_ms: first_byte,
                idle_ms: idle,
            },
        })
    }
}

/// How the key reaches the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStyle {
    /// `Authorization: Bearer` (OpenAI dialect) or `x-api-key` (Anthropic dialect).
    Standard,
    /// Azure OpenAI's `api-key` header.
    AzureApiKey,
}

/// A provider ready to use.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// None only for `mock`.
    pub base: Option<BaseUrl>,
    pub api_key: Option<String>,
    pub models: Vec<ModelSpec>,
    pub headers: Vec<(String, String)>,
    pub timeouts: Timeouts,
    pub breaker: BreakerConfig,
    /// The retry policy of this provider's models requested directly, and the base of its
    /// targets' policies.
    pub retry: RetryPolicy,
    pub key_style: KeyStyle,
    /// A query string every upstream call carries (Azure's `api-version=...`).
    pub query: Option<String>,
    /// `config` or `env`.
    pub origin: &'static str,
}

impl ProviderConfig {
    /// True when the provider can be sent requests (it has a key, or needs none).
    pub fn usable(&self) -> bool {
        !self.kind.needs_key() || self.api_key.is_some()
    }
}

/// Headers a provider's `headers` may not set: they belong to the gateway.
pub const RESERVED_HEADERS: [&str; 10] = [
    "authorization",
    "x-api-key",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "proxy-authorization",
];

/// Resolves file providers and env-discovered ones. Errors name the file and provider.
pub fn resolve(
    file: &BTreeMap<String, ProviderSpec>,
    file_label: &str,
    env: &Env,
    defaults: &ProviderDefaults,
    warnings: &mut Vec<String>,
) -> Result<Vec<ProviderConfig>, String> {
    let mut out = Vec::new();
    for (name, spec) in file {
        let at = format!("{file_label}: providers.{name}");
        if name.trim().is_empty() || name.contains('/') {
            return Err(format!(
                "{at}: a provider name must be non-empty and contain no '/'"
            ));
        }
        let kind_raw = spec.kind.as_deref().unwrap_or(name.as_str());
        let kind = ProviderKind::parse(kind_raw).ok_or_else(|| {
            format!(
                "{at}: type {kind_raw:?} is unknown; use one of {}",
                type_names()
            )
        })?;
        let base = match kind {
            ProviderKind::Mock => None,
            _ => {
                let raw = spec
                    .base_url
                    .as_deref()
                    .filter(|s| !s.trim().is_empty())
                    .unwrap_or(kind.default_base_url());
                if raw.is_empty() {
                    return Err(format!(
                        "{at}: base_url is required for type {}",
                        kind.name()
                    ));
                }
                Some(BaseUrl::parse(raw).map_err(|e| format!("{at}: {e}"))?)
            }
        };
        let mut headers = Vec::new();
        for (k, v) in &spec.headers {
            let lower = k.trim().to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(format!(
                    "{at}: headers.{k}: this header is set by the gateway and cannot be configured"
                ));
            }
            http::HeaderName::from_bytes(lower.as_bytes())
                .map_err(|_| format!("{at}: headers.{k}: not a valid header name"))?;
            http::HeaderValue::from_str(v)
                .map_err(|_| format!("{at}: headers.{k}: not a valid header value"))?;
            headers.push((lower, v.clone()));
        }
        Timeouts::check(&spec.timeouts, &at)?;
        for (i, m) in spec.models.iter().enumerate() {
            if m.context_window == Some(0) {
                return Err(format!(
                    "{at}: models[{i}] ({:?}): context_window must be above 0 (tokens)",
                    m.id
                ));
            }
        }
        let api_key = api_key(spec.api_key.as_deref(), &format!("{at}: api_key"))?;
        let resilience = spec.resilience.unwrap_or_default();
        let retry = super::settings::backoff_over(
            &defaults.retry,
            resilience.retry.as_ref(),
            None,
            &format!("{at}.resilience"),
        )?;
        app_headers(kind, env, &mut headers);
        let mut p = ProviderConfig {
            name: name.clone(),
            kind,
            base,
            api_key,
            models: spec.models.clone(),
            headers,
            timeouts: Timeouts::from_spec(&spec.timeouts, &defaults.timeouts),
            breaker: defaults
                .breaker
                .with(spec.circuit_breaker.as_ref())
                .with_go(resilience.circuit_breaker.as_ref()),
            retry,
            key_style: KeyStyle::Standard,
            query: None,
            origin: "config",
        };
        azure(&mut p, spec.api_version.as_deref(), env, &at)?;
        if spec.api_version.is_some() && !kind.is_azure() {
            warnings.push(format!(
                "{at}: api_version applies to type azure only; ignored for type {}",
                kind.name()
            ));
        }
        if !p.usable() {
            warnings.push(format!(
                "{at}: no API key (api_key is empty); its models are unavailable until one is set"
            ));
        }
        out.push(p);
    }
    discover(env, &mut out, defaults)?;
    Ok(out)
}

/// Azure OpenAI: the key goes in `api-key`, and every call carries `api-version` (the
/// provider's `api_version`, else `AZURE_API_VERSION`, else the default).
fn azure(
    p: &mut ProviderConfig,
    api_version: Option<&str>,
    env: &Env,
    at: &str,
) -> Result<(), String> {
    if !p.kind.is_azure() {
        return Ok(());
    }
    let version = api_version
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .or(env.get("AZURE_API_VERSION").map(str::trim))
        .unwrap_or(AZURE_DEFAULT_API_VERSION);
    if !version
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(format!(
            "{at}: api_version {version:?} must look like 2024-10-21"
        ));
    }
    p.key_style = KeyStyle::AzureApiKey;
    p.query = Some(format!("api-version={version}"));
    Ok(())
}

/// OpenRouter's app attribution headers from `OPENROUTER_SITE_URL` and `OPENROUTER_APP_NAME`,
/// unless the provider's `headers` already set them.
fn app_headers(kind: ProviderKind, env: &Env, headers: &mut Vec<(String, String)>) {
    if kind != ProviderKind::Compatible("openrouter") {
        return;
    }
    for (name, value) in [
        ("http-referer", env.get("OPENROUTER_SITE_URL")),
        ("x-openrouter-title", env.get("OPENROUTER_APP_NAME")),
    ] {
        let Some(v) = value.map(str::trim) else {
            continue;
        };
        if http::HeaderValue::from_str(v).is_ok() && !headers.iter().any(|(k, _)| k == name) {
            headers.push((name.to_string(), v.to_string()));
        }
    }
}

/// A provider key, trimmed (`None` when blank). It is sent as a header value, so a control
/// character in it (a pasted newline, say) is refused here, naming where it came from and never
/// the key itself.
fn api_key(raw: Option<&str>, at: &str) -> Result<Option<String>, String> {
    let Some(key) = raw.map(str::trim).filter(|k| !k.is_empty()) else {
        return Ok(None);
    };
    if http::HeaderValue::from_str(key).is_err() {
        return Err(format!(
            "{at}: the key holds a control character (a pasted line break?) and cannot be sent \
             as a header"
        ));
    }
    Ok(Some(key.to_string()))
}

/// Env auto-discovery: `<TYPE>[_SUFFIX]_API_KEY`, keyless local types by `<TYPE>_BASE_URL`.
fn discover(
    env: &Env,
    out: &mut Vec<ProviderConfig>,
    defaults: &ProviderDefaults,
) -> Result<(), String> {
    let mut kinds: Vec<ProviderKind> = vec![ProviderKind::OpenAi, ProviderKind::Anthropic];
    kinds.extend(
        COMPATIBLE
            .iter()
            .filter(|(n, _, _)| *n != "openai_compatible")
            .map(|(n, _, _)| ProviderKind::Compatible(n)),
    );
    // (instance name, kind, env prefix)
    let mut found: Vec<(String, ProviderKind, String)> = Vec::new();
    for (var, _) in env.iter() {
        for kind in &kinds {
            let prefix = kind.env_prefix();
            let Some(rest) = var.strip_prefix(prefix.as_str()) else {
                continue;
            };
            let (suffix, what) = if let Some(s) = rest.strip_suffix("_API_KEY") {
                (s, "key")
            } else if let Some(s) = rest.strip_suffix("_BASE_URL") {
                (s, "url")
            } else {
                continue;
            };
            if what == "url" && kind.needs_key() {
                continue;
            }
            let instance = if suffix.is_empty() {
                kind.name().to_string()
            } else if let Some(s) = suffix.strip_prefix('_') {
                if s.is_empty() {
                    continue;
                }
                format!(
                    "{}-{}",
                    kind.name(),
                    s.to_ascii_lowercase().replace('_', "-")
                )
            } else {
                continue;
            };
            if env.get(var).is_none() {
                continue;
            }
            if !found.iter().any(|(n, _, _)| *n == instance) {
                found.push((instance, *kind, format!("{prefix}{suffix}")));
            }
        }
    }
    for (instance, kind, prefix) in found {
        if out.iter().any(|p| p.name == instance) {
            continue;
        }
        let base_raw = env
            .get(&format!("{prefix}_BASE_URL"))
            .unwrap_or(kind.default_base_url());
        if base_raw.is_empty() {
            return Err(format!(
                "{prefix}_API_KEY is set but {prefix}_BASE_URL is not; type {} has no default base URL",
                kind.name()
            ));
        }
        let base = BaseUrl::parse(base_raw).map_err(|e| format!("{prefix}_BASE_URL: {e}"))?;
        let models = env
            .get(&format!("{prefix}_MODELS"))
            .map(|m| {
                m.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|id| ModelSpec {
                        id: id.to_string(),
                        pricing: None,
                        context_window: None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut headers = Vec::new();
        app_headers(kind, env, &mut headers);
        let mut p = ProviderConfig {
            name: instance,
            kind,
            base: Some(base),
            api_key: api_key(
                env.get(&format!("{prefix}_API_KEY")),
                &format!("{prefix}_API_KEY"),
            )?,
            models,
            headers,
            timeouts: Timeouts::from_spec(&TimeoutSpec::default(), &defaults.timeouts),
            breaker: defaults.breaker,
            retry: defaults.retry.clone(),
            key_style: KeyStyle::Standard,
            query: None,
            origin: "env",
        };
        azure(&mut p, None, env, &format!("{prefix}_API_KEY"))?;
        out.push(p);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_type_name_parses_to_itself() {
        let names = type_names();
        for name in names.split(", ") {
            let kind = ProviderKind::parse(name).unwrap_or_else(|| panic!("{name} does not parse"));
            assert_eq!(kind.name(), name);
        }
        assert!(names.contains("azure") && names.contains("mock"));
    }

    #[test]
    fn base_url_parts() {
        let b = BaseUrl::parse("https://api.openai.com/v1/").unwrap();
        assert_eq!(
            b,
            BaseUrl {
                tls: true,
                host: "api.openai.com".into(),
                port: 443,
                path: "/v1".into()
            }
        );
        let b = BaseUrl::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!((b.tls, b.port, b.path.as_str()), (false, 9000, ""));
        assert!(BaseUrl::parse("ftp://x").is_err());
    }

    #[test]
    fn env_discovers_typed_and_suffixed_instances() {
        let env = Env::from_pairs([
            ("OPENAI_API_KEY", "k1"),
            ("OPENAI_EU_API_KEY", "k2"),
            ("OPENAI_EU_BASE_URL", "https://eu.example.com/v1"),
            ("OLLAMA_BASE_URL", "http://127.0.0.1:11434/v1"),
            ("OLLAMA_MODELS", "llama3, qwen"),
        ]);
        let mut w = Vec::new();
        let ps = resolve(
            &BTreeMap::new(),
            "f",
            &env,
            &ProviderDefaults::default(),
            &mut w,
        )
        .unwrap();
        let names: Vec<&str> = ps.iter().map(|p| p.name.as_str()).collect();
        assert!(names.contains(&"openai"));
        assert!(names.contains(&"openai-eu"));
        assert!(names.contains(&"ollama"));
        let eu = ps.iter().find(|p| p.name == "openai-eu").unwrap();
        assert_eq!(eu.base.as_ref().unwrap().host, "eu.example.com");
        let ol = ps.iter().find(|p| p.name == "ollama").unwrap();
        assert_eq!(ol.models.len(), 2);
        assert!(ol.usable());
    }

    #[test]
    fn unknown_type_lists_valid_ones() {
        let mut file = BTreeMap::new();
        file.insert(
            "x".to_string(),
            ProviderSpec {
                kind: Some("nope".into()),
                ..ProviderSpec::default()
            },
        );
        let err = resolve(
            &file,
            "config.yaml",
            &Env::default(),
            &ProviderDefaults::default(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(err.contains("config.yaml: providers.x: type \"nope\" is unknown"));
        assert!(err.contains("openai, anthropic"));
    }

    #[test]
    fn missing_key_is_a_warning() {
        let mut file = BTreeMap::new();
        file.insert("openai".to_string(), ProviderSpec::default());
        let mut w = Vec::new();
        let ps = resolve(
            &file,
            "c",
            &Env::default(),
            &ProviderDefaults::default(),
            &mut w,
        )
        .unwrap();
        assert!(!ps[0].usable());
        assert!(w[0].contains("no API key"));
    }

    #[test]
    fn keys_are_trimmed_and_a_control_character_is_refused_without_showing_the_key() {
        let mut file = BTreeMap::new();
        file.insert(
            "openai".to_string(),
            ProviderSpec {
                api_key: Some("  sk-file\n".into()),
                ..ProviderSpec::default()
            },
        );
        let env = Env::from_pairs([("ANTHROPIC_API_KEY", "sk-env\n")]);
        let ps = resolve(
            &file,
            "c",
            &env,
            &ProviderDefaults::default(),
            &mut Vec::new(),
        )
        .unwrap();
        let key = |n: &str| {
            ps.iter()
                .find(|p| p.name == n)
                .and_then(|p| p.api_key.clone())
        };
        assert_eq!(key("openai").as_deref(), Some("sk-file"));
        assert_eq!(key("anthropic").as_deref(), Some("sk-env"));

        file.insert(
            "openai".to_string(),
            ProviderSpec {
                api_key: Some("sk-se\u{7}cret".into()),
                ..ProviderSpec::default()
            },
        );
        let err = resolve(
            &file,
            "c",
            &Env::default(),
            &ProviderDefaults::default(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(
            err.starts_with("c: providers.openai: api_key: the key holds a control character"),
            "{err}"
        );
        assert!(!err.contains("sk-se"), "{err}");

        let env = Env::from_pairs([("OPENAI_API_KEY", "sk-a\u{1}b")]);
        let err = resolve(
            &BTreeMap::new(),
            "c",
            &env,
            &ProviderDefaults::default(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(
            err.starts_with("OPENAI_API_KEY: the key holds a control character"),
            "{err}"
        );
        assert!(!err.contains("sk-a"), "{err}");
    }

    fn one(yaml: &str, env: &Env, defaults: &ProviderDefaults) -> Result<ProviderConfig, String> {
        let file: BTreeMap<String, ProviderSpec> = serde_yaml::from_str(yaml).unwrap();
        resolve(&file, "c", env, defaults, &mut Vec::new()).map(|mut v| v.remove(0))
    }

    #[test]
    fn azure_takes_its_key_in_api_key_and_an_api_version_query() {
        let yaml = "az: {type: azure, base_url: 'https://r.openai.azure.com/openai/deployments/d', api_key: k}";
        let p = one(yaml, &Env::default(), &ProviderDefaults::default()).unwrap();
        assert_eq!(p.key_style, KeyStyle::AzureApiKey);
        assert_eq!(p.query.as_deref(), Some("api-version=2024-10-21"));
        let env = Env::from_pairs([("AZURE_API_VERSION", "2025-04-01-preview")]);
        let p = one(yaml, &env, &ProviderDefaults::default()).unwrap();
        assert_eq!(p.query.as_deref(), Some("api-version=2025-04-01-preview"));
        let with_key = format!(
            "{}, api_version: '2023-05-15'}}",
            yaml.trim_end_matches('}')
        );
        let p = one(&with_key, &env, &ProviderDefaults::default()).unwrap();
        assert_eq!(p.query.as_deref(), Some("api-version=2023-05-15"));
        let bad = format!("{}, api_version: 'a&b=c'}}", yaml.trim_end_matches('}'));
        let e = one(&bad, &env, &ProviderDefaults::default()).unwrap_err();
        assert!(
            e.starts_with("c: providers.az: api_version \"a&b=c\""),
            "{e}"
        );
    }

    #[test]
    fn api_version_outside_azure_is_a_warning() {
        let file: BTreeMap<String, ProviderSpec> =
            serde_yaml::from_str("o: {type: openai, api_key: k, api_version: '2024-10-21'}")
                .unwrap();
        let mut w = Vec::new();
        let ps = resolve(
            &file,
            "c",
            &Env::default(),
            &ProviderDefaults::default(),
            &mut w,
        )
        .unwrap();
        assert_eq!(ps[0].query, None);
        assert_eq!(
            w,
            ["c: providers.o: api_version applies to type azure only; ignored for type openai"]
        );
    }

    #[test]
    fn gomodel_types_are_discovered_from_their_variables() {
        let env = Env::from_pairs([
            ("ZAI_API_KEY", "z"),
            ("MINIMAX_API_KEY", "m"),
            ("ORACLE_API_KEY", "o"),
            ("ORACLE_BASE_URL", "https://oci.example.com/v1"),
            ("ORACLE_MODELS", "openai.gpt-oss-120b, xai.grok-3"),
            ("AZURE_API_KEY", "a"),
            (
                "AZURE_BASE_URL",
                "https://r.openai.azure.com/openai/deployments/d",
            ),
        ]);
        let ps = resolve(
            &BTreeMap::new(),
            "c",
            &env,
            &ProviderDefaults::default(),
            &mut Vec::new(),
        )
        .unwrap();
        let get = |n: &str| ps.iter().find(|p| p.name == n).unwrap();
        assert_eq!(get("zai").base.as_ref().unwrap().path, "/api/paas/v4");
        assert_eq!(get("minimax").base.as_ref().unwrap().host, "api.minimax.io");
        assert_eq!(get("oracle").models.len(), 2);
        assert_eq!(get("azure").key_style, KeyStyle::AzureApiKey);
        let env = Env::from_pairs([("AZURE_API_KEY", "a")]);
        let e = resolve(
            &BTreeMap::new(),
            "c",
            &env,
            &ProviderDefaults::default(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(
            e.contains("AZURE_API_KEY is set but AZURE_BASE_URL is not"),
            "{e}"
        );
    }

    #[test]
    fn openrouter_app_headers_come_from_the_environment_unless_configured() {
        let env = Env::from_pairs([
            ("OPENROUTER_SITE_URL", "https://example.test"),
            ("OPENROUTER_APP_NAME", "App"),
        ]);
        let p = one(
            "or: {type: openrouter, api_key: k}",
            &env,
            &ProviderDefaults::default(),
        )
        .unwrap();
        assert!(p
            .headers
            .contains(&("http-referer".into(), "https://example.test".into())));
        assert!(p
            .headers
            .contains(&("x-openrouter-title".into(), "App".into())));
        let p = one(
            "or: {type: openrouter, api_key: k, headers: {X-OpenRouter-Title: Mine}}",
            &env,
            &ProviderDefaults::default(),
        )
        .unwrap();
        let titles: Vec<_> = p
            .headers
            .iter()
            .filter(|(k, _)| k == "x-openrouter-title")
            .collect();
        assert_eq!(
            titles,
            [&("x-openrouter-title".to_string(), "Mine".to_string())]
        );
    }

    #[test]
    fn provider_resilience_overrides_only_what_it_names() {
        let defaults = ProviderDefaults {
            retry: RetryPolicy {
                attempts: 4,
                initial_delay_ms: 1000,
                ..RetryPolicy::default()
            },
            ..ProviderDefaults::default()
        };
        let p = one(
            "o: {type: openai, api_key: k, resilience: {retry: {max_retries: 5}, circuit_breaker: {failure_threshold: 9, timeout: 1m}}}",
            &Env::default(),
            &defaults,
        )
        .unwrap();
        assert_eq!((p.retry.attempts, p.retry.initial_delay_ms), (6, 1000));
        assert_eq!(
            (p.breaker.failure_threshold, p.breaker.open_seconds),
            (9, 60)
        );
        assert_eq!(p.breaker.success_threshold, 2);
    }

    #[test]
    fn http_timeouts_and_breaker_variables_set_every_providers_defaults() {
        let file: FileConfig = serde_yaml::from_str(
            "http: {timeout: 120, response_header_timeout: 30s}\nresilience: {circuit_breaker: {failure_threshold: 7}}",
        )
        .unwrap();
        let env = Env::from_pairs([("CIRCUIT_BREAKER_TIMEOUT", "45s"), ("HTTP_TIMEOUT", "3m")]);
        let d = ProviderDefaults::resolve(&file, &env, RetryPolicy::default(), "c").unwrap();
        assert_eq!(
            (d.breaker.failure_threshold, d.breaker.open_seconds),
            (7, 45)
        );
        assert_eq!(
            (d.timeouts.first_byte_ms, d.timeouts.idle_ms),
            (Some(30_000), Some(180_000))
        );
        let p = one(
            "o: {type: openai, api_key: k, timeouts: {first_byte_ms: 5}}",
            &env,
            &d,
        )
        .unwrap();
        assert_eq!((p.timeouts.first_byte_ms, p.timeouts.idle_ms), (5, 180_000));
        let zero: FileConfig = serde_yaml::from_str("http: {timeout: 0s}").unwrap();
        let e = ProviderDefaults::resolve(&zero, &Env::default(), RetryPolicy::default(), "c")
            .unwrap_err();
        assert_eq!(
            e,
            "c: http.timeout: must be more than 0; leave it out for the default"
        );
        let env = Env::from_pairs([("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "0")]);
        let e = ProviderDefaults::resolve(&file, &env, RetryPolicy::default(), "c").unwrap_err();
        assert!(e.contains("CIRCUIT_BREAKER_FAILURE_THRESHOLD"), "{e}");
    }
}
