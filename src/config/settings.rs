//! Process-wide settings (listen address, limits, flags), resolved env > file > default.
//!
//! Settings are plain values; nothing here starts a server or opens a file.

use super::env::Env;
use super::schema::{FileConfig, SizeValue};
use crate::routing::model::RetryPolicy;

/// Which models of a provider are served: its `/models` listing, its configured list, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogMode {
    /// Listed and configured models (the default).
    Merge,
    /// Only the configured models.
    Allowlist,
    /// The listing while `/models` answers; the configured models only while it does not
    /// (GoModel's `fallback` mode).
    Fallback,
}

/// The user-path header's name unless `USER_PATH_HEADER` names another (lower case).
pub const DEFAULT_USER_PATH_HEADER: &str = "x-modelgate-user-path";

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub listen: String,
    pub master_key: Option<String>,
    pub body_size_limit: u64,
    /// The limit of the multipart audio uploads (`AUDIO_BODY_SIZE_LIMIT`, default 25M).
    pub audio_body_size_limit: u64,
    pub user_path_header: String,
    pub keep_only_aliases: bool,
    pub models_enabled_by_default: bool,
    /// `CONFIGURED_PROVIDER_MODELS_MODE`.
    pub catalog_mode: CatalogMode,
    /// GoModel's `models.overrides_enabled`: false leaves the admin store's access policies
    /// out of the snapshot (config and env policies still apply).
    pub model_overrides_enabled: bool,
    /// Every route is served under this prefix (`/gateway`, no trailing slash), nothing
    /// outside it.
    pub base_path: Option<String>,
    /// Where `/metrics` is served; None = not served.
    pub metrics_path: Option<String>,
    /// The retry policy of targets whose provider is found per request (and the base of every
    /// provider's own): `resilience.retry` and `RETRY_*`.
    pub retry: RetryPolicy,
    /// GoModel keys and variables in use that modelgate honours, for `check`.
    pub gomodel_honoured: Vec<String>,
    /// The warnings naming GoModel keys and variables modelgate ignores, for `check` to show
    /// in their own section.
    pub gomodel_ignored: Vec<String>,
    pub cache_refresh_interval_s: u64,
    /// How long a request naming a model the catalog lacks waits for the on-demand `/models`
    /// refresh before it is answered 404 (the refresh goes on in the background).
    pub model_refresh_wait_ms: u64,
    pub threads: usize,
    pub grace_period_s: u64,
    pub pid_file: Option<String>,
    pub sqlite_path: String,
    pub store: StoreKind,
    /// `STORE_POLL_SECONDS`: how often a fleet store's revision is checked besides
    /// notifications.
    pub store_poll_s: u64,
    pub log_json: bool,
    pub anthropic_default_max_tokens: u64,
}

pub const DEFAULT_BODY_LIMIT: u64 = 10 * 1024 * 1024;

/// The default limit of an audio upload (OpenAI's own limit is 25 MB).
pub const DEFAULT_AUDIO_BODY_LIMIT: u64 = 25 * 1024 * 1024;

/// Which admin store a gateway opens (`STORAGE_TYPE`).
#[derive(Debug, Clone, PartialEq)]
pub enum StoreKind {
    /// The file at `sqlite_path`.
    Sqlite,
    /// `POSTGRES_URL`, as given (parsed when the store opens).
    Postgres { url: String },
}

/// `STORAGE_TYPE` / `store.type` (or GoModel's `storage.type`) and `POSTGRES_URL` /
/// `store.postgres_url` (or GoModel's `storage.postgresql.url`), env over file.
fn store_kind(file: &FileConfig, env: &Env, label: &str) -> Result<StoreKind, String> {
    let (kind, from) = match (env.get("STORAGE_TYPE"), &file.store.kind) {
        (Some(k), _) => (Some(k.to_string()), "STORAGE_TYPE".to_string()),
        (None, Some(k)) => (Some(k.clone()), format!("{label}: store.type")),
        (None, None) => (file.storage.kind.clone(), format!("{label}: storage.type")),
    };
    let url = env
        .get("POSTGRES_URL")
        .map(str::to_string)
        .or(file.store.postgres_url.clone())
        .or(file.storage.postgresql.url.clone())
        .filter(|u| !u.trim().is_empty());
    match kind.as_deref().map(|k| k.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("sqlite") => Ok(StoreKind::Sqlite),
        Some("postgresql" | "postgres") => match url {
            Some(url) => Ok(StoreKind::Postgres { url }),
            None => Err(format!(
                "{from} is postgresql but no database is named; set POSTGRES_URL (or store.postgres_url in the config file), e.g. postgresql://modelgate@db:5432/modelgate"
            )),
        },
        Some(other) => Err(format!(
            "{from} {other:?} is unknown; use sqlite or postgresql"
        )),
    }
}
/// The default bound of a request's wait for an on-demand catalog refresh.
pub const DEFAULT_MODEL_REFRESH_WAIT_MS: u64 = 2_000;

/// Parses `10M`, `512K`, `1G`, `2048` (binary units).
pub fn parse_size(raw: &str) -> Option<u64> {
    let t = raw.trim();
    let (num, mult) = match t.char_indices().last()? {
        (i, 'k' | 'K') => (&t[..i], 1024),
        (i, 'm' | 'M') => (&t[..i], 1024 * 1024),
        (i, 'g' | 'G') => (&t[..i], 1024 * 1024 * 1024),
        _ => (t, 1),
    };
    let n: u64 = num.trim().trim_end_matches(['i', 'B', 'b']).parse().ok()?;
    n.checked_mul(mult).filter(|v| *v > 0)
}

/// A size from the variable `var` (env wins) or the file's `key`: None when neither sets it.
fn size_setting(
    env: &Env,
    var: &str,
    file: Option<&SizeValue>,
    key: &str,
    label: &str,
) -> Result<Option<u64>, String> {
    if let Some(v) = env.get(var) {
        return parse_size(v).map(Some).ok_or_else(|| {
            format!("{var}={v:?} is not a size; use bytes or a K/M/G suffix, e.g. 10M")
        });
    }
    match file {
        None => Ok(None),
        Some(SizeValue::Bytes(b)) if *b > 0 => Ok(Some(*b)),
        Some(SizeValue::Bytes(_)) => Err(format!("{label}: {key} must be above 0")),
        Some(SizeValue::Text(t)) => parse_size(t).map(Some).ok_or_else(|| {
            format!("{label}: {key} {t:?} is not a size; use bytes or a K/M/G suffix")
        }),
    }
}

/// A whole-number variable: None when unset, an error naming it when not a number >= `min`.
fn env_number(env: &Env, name: &str, min: u64, what: &str) -> Result<Option<u64>, String> {
    match env.get(name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= min)
            .map(Some)
            .ok_or_else(|| format!("{name}={v:?} must be {what}")),
    }
}

impl Settings {
    pub fn resolve(file: &FileConfig, env: &Env, label: &str) -> Result<Settings, String> {
        let s = &file.server;
        let port = match env.get("PORT") {
            Some(p) => Some(
                p.trim()
                    .parse::<u16>()
                    .map_err(|_| format!("PORT={p:?} is not a port number"))?,
            ),
            None => s.port.map(|p| p.0),
        };
        let listen = match (port, &s.listen) {
            (Some(p), _) if env.get("PORT").is_some() => format!("0.0.0.0:{p}"),
            (_, Some(l)) => l.clone(),
            (Some(p), None) => format!("0.0.0.0:{p}"),
            (None, None) => "0.0.0.0:8080".to_string(),
        };
        let body_size_limit = size_setting(
            env,
            "BODY_SIZE_LIMIT",
            s.body_size_limit.as_ref(),
            "server.body_size_limit",
            label,
        )?
        .unwrap_or(DEFAULT_BODY_LIMIT);
        let audio_body_size_limit = size_setting(
            env,
            "AUDIO_BODY_SIZE_LIMIT",
            s.audio_body_size_limit.as_ref(),
            "server.audio_body_size_limit",
            label,
        )?
        .unwrap_or(DEFAULT_AUDIO_BODY_LIMIT);
        let mode = env
            .get("CONFIGURED_PROVIDER_MODELS_MODE")
            .map(str::to_string)
            .or(file.models.configured_provider_models_mode.clone());
        let catalog_mode = match mode.as_deref().map(|m| m.trim().to_ascii_lowercase()) {
            None => CatalogMode::Merge,
            Some(m) if m == "allowlist" => CatalogMode::Allowlist,
            Some(m) if m == "fallback" => CatalogMode::Fallback,
            Some(m) if m == "merge" || m == "union" || m.is_empty() => CatalogMode::Merge,
            Some(m) => {
                return Err(format!(
                    "CONFIGURED_PROVIDER_MODELS_MODE={m:?} is unknown; use merge, allowlist or fallback"
                ))
            }
        };
        let cache_refresh_interval_s = match env_number(
            env,
            "CACHE_REFRESH_INTERVAL",
            1,
            "a number of seconds above 0",
        )? {
            Some(n) => n,
            None => file
                .models
                .cache_refresh_interval
                .or(file.cache.model.refresh_interval)
                .unwrap_or(3600)
                .max(1),
        };
        let model_refresh_wait_ms = match env_number(
            env,
            "MODEL_REFRESH_WAIT_MS",
            0,
            "a number of milliseconds (0: do not wait)",
        )? {
            Some(n) => n,
            None => file
                .models
                .refresh_wait_ms
                .unwrap_or(DEFAULT_MODEL_REFRESH_WAIT_MS),
        };
        let log_json = match env
            .get("LOG_FORMAT")
            .map(str::to_string)
            .or(file.logging.format.clone())
            .map(|f| f.trim().to_ascii_lowercase())
        {
            None => false,
            Some(f) if f == "json" => true,
            Some(f) if f == "text" => false,
            Some(f) => return Err(format!("LOG_FORMAT={f:?} is unknown; use text or json")),
        };
        let anthropic_default_max_tokens =
            env_number(env, "ANTHROPIC_DEFAULT_MAX_TOKENS", 1, "a number above 0")?.unwrap_or(4096);
        let grace_period_s =
            match env_number(env, "GRACE_PERIOD_SECONDS", 0, "a number of seconds")? {
                Some(n) => n,
                None => s.grace_period_seconds.unwrap_or(30),
            };
        let threads = match env_number(env, "MODELGATE_THREADS", 1, "a number above 0")? {
            Some(n) => n as usize,
            None => s
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        };
        Ok(Settings {
            listen,
            master_key: env
                .get("MODELGATE_MASTER_KEY")
                .or(env.get("GOMODEL_MASTER_KEY"))
                .map(str::to_string)
                .or(s.master_key.clone().filter(|k| !k.trim().is_empty())),
            body_size_limit,
            audio_body_size_limit,
            user_path_header: env
                .get("USER_PATH_HEADER")
                .map(str::to_string)
                .or(s.user_path_header.clone())
                .map(|h| h.trim().to_ascii_lowercase())
                .unwrap_or_else(|| DEFAULT_USER_PATH_HEADER.to_string()),
            keep_only_aliases: env
                .bool("KEEP_ONLY_ALIASES_AT_MODELS_ENDPOINT")?
                .or(file.models.keep_only_aliases_at_models_endpoint)
                .unwrap_or(false),
            models_enabled_by_default: env
                .bool("MODELS_ENABLED_BY_DEFAULT")?
                .or(file.models.enabled_by_default)
                .unwrap_or(true),
            catalog_mode,
            model_overrides_enabled: env
                .bool("MODEL_OVERRIDES_ENABLED")?
                .or(file.models.overrides_enabled)
                .unwrap_or(true),
            base_path: match env.get("BASE_PATH") {
                Some(v) => base_path(Some(v), "BASE_PATH")?,
                None => base_path(
                    s.base_path.as_deref(),
                    &format!("{label}: server.base_path"),
                )?,
            },
            metrics_path: metrics_path(file, env, label)?,
            retry: retry_policy(file.resilience.retry.as_ref(), env, label)?,
            gomodel_honoured: Vec::new(),
            gomodel_ignored: Vec::new(),
            cache_refresh_interval_s,
            model_refresh_wait_ms,
            threads,
            grace_period_s,
            pid_file: env
                .get("PID_FILE")
                .map(str::to_string)
                .or(s.pid_file.clone()),
            sqlite_path: env
                .get("SQLITE_PATH")
                .map(str::to_string)
                .or(file.store.sqlite_path.clone())
                .or(storage_sqlite_path(file, label)?)
                .unwrap_or_else(|| "data/modelgate.db".to_string()),
            store: store_kind(file, env, label)?,
            store_poll_s: match env_number(
                env,
                "STORE_POLL_SECONDS",
                1,
                "a number of seconds above 0",
            )? {
                Some(n) => n,
                None => match file.store.poll_seconds {
                    Some(0) => return Err(format!("{label}: store.poll_seconds must be above 0")),
                    Some(n) => n,
                    None => 30,
                },
            },
            log_json,
            anthropic_default_max_tokens,
        })
    }
}

/// `server.base_path` / `BASE_PATH` as a prefix: `/gw` (leading slash added, trailing one
/// dropped); `/` or empty is none.
fn base_path(raw: Option<&str>, named: &str) -> Result<Option<String>, String> {
    let Some(raw) = raw.map(str::trim) else {
        return Ok(None);
    };
    let trimmed = raw.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed
        .chars()
        .any(|c| c.is_whitespace() || c == '?' || c == '#' || c == '%')
    {
        return Err(format!(
            "{named} {raw:?} must be a plain URL path such as /gateway"
        ));
    }
    Ok(Some(format!("/{trimmed}")))
}

/// `metrics.enabled` / `METRICS_ENABLED` and `metrics.endpoint` / `METRICS_ENDPOINT`. Unlike
/// GoModel, metrics are on unless switched off.
fn metrics_path(file: &FileConfig, env: &Env, label: &str) -> Result<Option<String>, String> {
    let enabled = env
        .bool("METRICS_ENABLED")?
        .or(file.metrics.enabled)
        .unwrap_or(true);
    if !enabled {
        return Ok(None);
    }
    let (endpoint, named) = match (env.get("METRICS_ENDPOINT"), &file.metrics.endpoint) {
        (Some(e), _) => (e.trim(), "METRICS_ENDPOINT".to_string()),
        (None, Some(e)) => (e.trim(), format!("{label}: metrics.endpoint")),
        (None, None) => ("/metrics", String::new()),
    };
    if !endpoint.starts_with('/') || endpoint.len() < 2 || endpoint.contains(['?', '#', ' ']) {
        return Err(format!(
            "{named} {endpoint:?} must be a path such as /metrics"
        ));
    }
    Ok(Some(endpoint.trim_end_matches('/').to_string()))
}

/// GoModel's `storage` section: SQLite is the store here; PostgreSQL is configured by
/// variables, and MongoDB does not exist.
fn storage_sqlite_path(file: &FileConfig, label: &str) -> Result<Option<String>, String> {
    let kind = file
        .storage
        .kind
        .as_deref()
        .map(|k| k.trim().to_ascii_lowercase());
    match kind.as_deref() {
        None | Some("") | Some("sqlite") => Ok(file.storage.sqlite.path.clone()),
        // The fleet store: `store_kind` reads storage.postgresql.url.
        Some("postgresql") | Some("postgres") => Ok(None),
        Some(other) => Err(format!(
            "{label}: storage.type {other:?} is not supported; modelgate's stores are sqlite \
             (storage.sqlite.path or SQLITE_PATH) and postgresql (STORAGE_TYPE and POSTGRES_URL)"
        )),
    }
}

/// A factor variable or key: a finite number >= `min`.
fn factor(v: Option<f64>, name: &str, min: f64, max: f64) -> Result<Option<f64>, String> {
    match v {
        Some(f) if !f.is_finite() || f < min || f > max => {
            Err(format!("{name}: {f} must be a number from {min} to {max}"))
        }
        other => Ok(other),
    }
}

fn env_f64(env: &Env, name: &str) -> Result<Option<f64>, String> {
    env.get(name)
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .map_err(|_| format!("{name}={v:?} is not a number"))
        })
        .transpose()
}

/// The retry policy from GoModel's `resilience.retry` keys over `base`, with the `RETRY_*`
/// variables over both when `env` is given (per-provider blocks take no variables).
/// `max_retries` counts retries, so `attempts` is one more.
pub fn backoff_over(
    base: &RetryPolicy,
    spec: Option<&super::schema::BackoffSpec>,
    env: Option<&Env>,
    at: &str,
) -> Result<RetryPolicy, String> {
    let mut p = base.clone();
    let spec = spec.copied().unwrap_or_default();
    let none = Env::default();
    let e = env.unwrap_or(&none);
    let max_retries = match env_number(e, "RETRY_MAX_RETRIES", 0, "a number of retries")? {
        Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX - 1)),
        None => spec.max_retries,
    };
    if let Some(n) = max_retries {
        p.attempts = n.saturating_add(1);
    }
    if let Some(ms) = super::gomodel::env_duration_ms(e, "RETRY_INITIAL_BACKOFF")?
        .or(spec.initial_backoff.map(|d| d.0))
    {
        p.initial_delay_ms = ms;
    }
    if let Some(ms) =
        super::gomodel::env_duration_ms(e, "RETRY_MAX_BACKOFF")?.or(spec.max_backoff.map(|d| d.0))
    {
        p.max_delay_ms = ms;
    }
    let f = match env_f64(e, "RETRY_BACKOFF_FACTOR")? {
        Some(v) => factor(Some(v), "RETRY_BACKOFF_FACTOR", 1.0, 100.0)?,
        None => factor(
            spec.backoff_factor,
            &format!("{at}.retry.backoff_factor"),
            1.0,
            100.0,
        )?,
    };
    if let Some(f) = f {
        p.backoff_factor = f;
    }
    let j = match env_f64(e, "RETRY_JITTER_FACTOR")? {
        Some(v) => factor(Some(v), "RETRY_JITTER_FACTOR", 0.0, 1.0)?,
        None => factor(
            spec.jitter_factor,
            &format!("{at}.retry.jitter_factor"),
            0.0,
            1.0,
        )?,
    };
    if let Some(j) = j {
        p.jitter_factor = j;
    }
    if p.initial_delay_ms > p.max_delay_ms {
        return Err(format!(
            "{at}.retry: initial_backoff ({} ms) is longer than max_backoff ({} ms)",
            p.initial_delay_ms, p.max_delay_ms
        ));
    }
    Ok(p)
}

fn retry_policy(
    spec: Option<&super::schema::BackoffSpec>,
    env: &Env,
    label: &str,
) -> Result<RetryPolicy, String> {
    backoff_over(
        &RetryPolicy::default(),
        spec,
        Some(env),
        &format!("{label}: resilience"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(parse_size("10M"), Some(10 * 1024 * 1024));
        assert_eq!(parse_size("512k"), Some(512 * 1024));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("2048"), Some(2048));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("0"), None);
    }

    #[test]
    fn env_beats_file_beats_default() {
        let file: FileConfig =
            serde_yaml::from_str("server: {port: 9000, body_size_limit: 1M}").unwrap();
        let s = Settings::resolve(&file, &Env::default(), "c").unwrap();
        assert_eq!(s.listen, "0.0.0.0:9000");
        assert_eq!(s.body_size_limit, 1 << 20);
        let env = Env::from_pairs([("PORT", "7000"), ("BODY_SIZE_LIMIT", "2K")]);
        let s = Settings::resolve(&file, &env, "c").unwrap();
        assert_eq!(s.listen, "0.0.0.0:7000");
        assert_eq!(s.body_size_limit, 2048);
    }

    #[test]
    fn the_audio_limit_has_its_own_setting_and_default() {
        let s = Settings::resolve(&FileConfig::default(), &Env::default(), "c").unwrap();
        assert_eq!(s.audio_body_size_limit, 25 << 20);
        let file: FileConfig =
            serde_yaml::from_str("server: {audio_body_size_limit: 40M}").unwrap();
        let s = Settings::resolve(&file, &Env::default(), "c").unwrap();
        assert_eq!(s.audio_body_size_limit, 40 << 20);
        let env = Env::from_pairs([("AUDIO_BODY_SIZE_LIMIT", "1K")]);
        let s = Settings::resolve(&file, &env, "c").unwrap();
        assert_eq!(s.audio_body_size_limit, 1024);
        let env = Env::from_pairs([("AUDIO_BODY_SIZE_LIMIT", "big")]);
        let e = Settings::resolve(&file, &env, "c").unwrap_err();
        assert!(
            e.contains("AUDIO_BODY_SIZE_LIMIT=\"big\" is not a size"),
            "{e}"
        );
    }

    #[test]
    fn port_may_be_a_numeric_string() {
        let file: FileConfig = serde_yaml::from_str("server: {port: \"9001\"}").unwrap();
        let s = Settings::resolve(&file, &Env::default(), "c").unwrap();
        assert_eq!(s.listen, "0.0.0.0:9001");
    }

    #[test]
    fn base_path_is_normalised_and_checked() {
        assert_eq!(base_path(Some("gw/"), "c").unwrap().as_deref(), Some("/gw"));
        assert_eq!(
            base_path(Some("/a/b"), "c").unwrap().as_deref(),
            Some("/a/b")
        );
        assert_eq!(base_path(Some("/"), "c").unwrap(), None);
        let file: FileConfig = serde_yaml::from_str("server: {base_path: '/a b'}").unwrap();
        let e = Settings::resolve(&file, &Env::default(), "c").unwrap_err();
        assert_eq!(
            e,
            "c: server.base_path \"/a b\" must be a plain URL path such as /gateway"
        );
        let env = Env::from_pairs([("BASE_PATH", "/x?y")]);
        let e = Settings::resolve(&file, &env, "c").unwrap_err();
        assert!(e.starts_with("BASE_PATH \"/x?y\""), "{e}");
    }

    #[test]
    fn resilience_retry_maps_onto_the_retry_policy_and_env_wins() {
        let file: FileConfig = serde_yaml::from_str(
            "resilience: {retry: {max_retries: 3, initial_backoff: 1s, max_backoff: 30s, backoff_factor: 2.0, jitter_factor: 0.1}}",
        )
        .unwrap();
        let s = Settings::resolve(&file, &Env::default(), "c").unwrap();
        assert_eq!(
            (
                s.retry.attempts,
                s.retry.initial_delay_ms,
                s.retry.max_delay_ms
            ),
            (4, 1000, 30_000)
        );
        assert_eq!((s.retry.backoff_factor, s.retry.jitter_factor), (2.0, 0.1));
        let env = Env::from_pairs([("RETRY_MAX_RETRIES", "0"), ("RETRY_INITIAL_BACKOFF", "5ms")]);
        let s = Settings::resolve(&file, &env, "c").unwrap();
        assert_eq!((s.retry.attempts, s.retry.initial_delay_ms), (1, 5));
        let env = Env::from_pairs([("RETRY_JITTER_FACTOR", "2")]);
        let e = Settings::resolve(&file, &env, "c").unwrap_err();
        assert!(e.contains("RETRY_JITTER_FACTOR"), "{e}");
    }

    #[test]
    fn storage_types_other_than_sqlite_are_explained() {
        let file: FileConfig =
            serde_yaml::from_str("storage: {type: sqlite, sqlite: {path: x.db}}").unwrap();
        let s = Settings::resolve(&file, &Env::default(), "c").unwrap();
        assert_eq!(s.sqlite_path, "x.db");
        let file: FileConfig = serde_yaml::from_str(
            "storage: {type: postgresql, postgresql: {url: 'postgres://u@h/g'}}",
        )
        .unwrap();
        let s = Settings::resolve(&file, &Env::default(), "c").unwrap();
        assert_eq!(
            s.store,
            StoreKind::Postgres {
                url: "postgres://u@h/g".into()
            }
        );
        let file: FileConfig = serde_yaml::from_str("storage: {type: postgresql}").unwrap();
        let e = Settings::resolve(&file, &Env::default(), "c").unwrap_err();
        assert!(
            e.contains("c: storage.type is postgresql") && e.contains("POSTGRES_URL"),
            "{e}"
        );
        let file: FileConfig = serde_yaml::from_str("storage: {type: mongodb}").unwrap();
        let e = Settings::resolve(&file, &Env::default(), "c").unwrap_err();
        assert!(
            e.contains("\"mongodb\" is not supported") && e.contains("sqlite"),
            "{e}"
        );
    }

    #[test]
    fn the_refresh_wait_is_two_seconds_unless_set() {
        let none = Settings::resolve(&FileConfig::default(), &Env::default(), "c").unwrap();
        assert_eq!(none.model_refresh_wait_ms, 2_000);
        let file: FileConfig = serde_yaml::from_str("models: {refresh_wait_ms: 500}").unwrap();
        let s = Settings::resolve(&file, &Env::default(), "c").unwrap();
        assert_eq!(s.model_refresh_wait_ms, 500);
        let env = Env::from_pairs([("MODEL_REFRESH_WAIT_MS", "0")]);
        let s = Settings::resolve(&file, &env, "c").unwrap();
        assert_eq!(s.model_refresh_wait_ms, 0);
        let env = Env::from_pairs([("MODEL_REFRESH_WAIT_MS", "2s")]);
        let e = Settings::resolve(&file, &env, "c").unwrap_err();
        assert!(
            e.contains("MODEL_REFRESH_WAIT_MS=\"2s\" must be a number of milliseconds"),
            "{e}"
        );
    }

    #[test]
    fn metrics_can_move_or_be_switched_off() {
        let file: FileConfig =
            serde_yaml::from_str("metrics: {enabled: true, endpoint: /stats}").unwrap();
        let s = Settings::resolve(&file, &Env::default(), "c").unwrap();
        assert_eq!(s.metrics_path.as_deref(), Some("/stats"));
        let env = Env::from_pairs([("METRICS_ENABLED", "false")]);
        assert_eq!(
            Settings::resolve(&file, &env, "c").unwrap().metrics_path,
            None
        );
        let env = Env::from_pairs([("METRICS_ENDPOINT", "stats")]);
        let e = Settings::resolve(&file, &env, "c").unwrap_err();
        assert_eq!(
            e,
            "METRICS_ENDPOINT \"stats\" must be a path such as /metrics"
        );
        assert_eq!(
            Settings::resolve(&FileConfig::default(), &Env::default(), "c")
                .unwrap()
                .metrics_path
                .as_deref(),
            Some("/metrics")
        );
    }

    #[test]
    fn bad_env_values_are_named() {
        let env = Env::from_pairs([("BODY_SIZE_LIMIT", "huge")]);
        let e = Settings::resolve(&FileConfig::default(), &env, "c").unwrap_err();
        assert!(e.contains("BODY_SIZE_LIMIT"));
    }

    #[test]
    fn the_store_is_sqlite_unless_postgresql_is_named_with_a_url() {
        let s = Settings::resolve(&FileConfig::default(), &Env::default(), "c").unwrap();
        assert_eq!((s.store, s.store_poll_s), (StoreKind::Sqlite, 30));
        let file: FileConfig = serde_yaml::from_str(
            "store: {type: postgresql, postgres_url: 'postgresql://f@h/d', poll_seconds: 5}",
        )
        .unwrap();
        let s = Settings::resolve(&file, &Env::default(), "c").unwrap();
        assert_eq!(
            (s.store, s.store_poll_s),
            (
                StoreKind::Postgres {
                    url: "postgresql://f@h/d".into()
                },
                5
            )
        );
        let env = Env::from_pairs([
            ("POSTGRES_URL", "postgresql://e@h/d"),
            ("STORE_POLL_SECONDS", "2"),
        ]);
        let s = Settings::resolve(&file, &env, "c").unwrap();
        assert_eq!(
            (s.store, s.store_poll_s),
            (
                StoreKind::Postgres {
                    url: "postgresql://e@h/d".into()
                },
                2
            )
        );
        let env = Env::from_pairs([("STORAGE_TYPE", "sqlite")]);
        assert_eq!(
            Settings::resolve(&file, &env, "c").unwrap().store,
            StoreKind::Sqlite
        );
    }

    #[test]
    fn store_settings_errors_name_the_setting() {
        let env = Env::from_pairs([("STORAGE_TYPE", "postgresql")]);
        let e = Settings::resolve(&FileConfig::default(), &env, "c").unwrap_err();
        assert!(e.starts_with("STORAGE_TYPE is postgresql but"), "{e}");
        assert!(e.contains("POSTGRES_URL"), "{e}");
        let env = Env::from_pairs([("STORAGE_TYPE", "mysql")]);
        let e = Settings::resolve(&FileConfig::default(), &env, "c").unwrap_err();
        assert_eq!(
            e,
            "STORAGE_TYPE \"mysql\" is unknown; use sqlite or postgresql"
        );
        let file: FileConfig = serde_yaml::from_str("store: {type: mongo}").unwrap();
        let e = Settings::resolve(&file, &Env::default(), "c.yaml").unwrap_err();
        assert!(e.starts_with("c.yaml: store.type \"mongo\""), "{e}");
        let env = Env::from_pairs([("STORE_POLL_SECONDS", "0")]);
        let e = Settings::resolve(&FileConfig::default(), &env, "c").unwrap_err();
        assert!(e.starts_with("STORE_POLL_SECONDS=\"0\""), "{e}");
    }
}
