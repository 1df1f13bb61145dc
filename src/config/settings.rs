//! Process-wide settings (listen address, limits, flags), resolved env > file > default.
//!
//! Settings are plain values; nothing here starts a server or opens a file.

use super::env::Env;
use super::schema::{FileConfig, SizeValue};

/// The user-path header's name unless `USER_PATH_HEADER` names another (lower case).
pub const DEFAULT_USER_PATH_HEADER: &str = "x-modelgate-user-path";

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub listen: String,
    pub master_key: Option<String>,
    pub body_size_limit: u64,
    pub user_path_header: String,
    pub keep_only_aliases: bool,
    pub models_enabled_by_default: bool,
    /// `CONFIGURED_PROVIDER_MODELS_MODE=allowlist`: serve only configured models.
    pub allowlist_mode: bool,
    pub cache_refresh_interval_s: u64,
    /// How long a request naming a model the catalog lacks waits for the on-demand `/models`
    /// refresh before it is answered 404 (the refresh goes on in the background).
    pub model_refresh_wait_ms: u64,
    pub threads: usize,
    pub grace_period_s: u64,
    pub pid_file: Option<String>,
    pub sqlite_path: String,
    pub log_json: bool,
    pub anthropic_default_max_tokens: u64,
}

pub const DEFAULT_BODY_LIMIT: u64 = 10 * 1024 * 1024;

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
            None => s.port,
        };
        let listen = match (port, &s.listen) {
            (Some(p), _) if env.get("PORT").is_some() => format!("0.0.0.0:{p}"),
            (_, Some(l)) => l.clone(),
            (Some(p), None) => format!("0.0.0.0:{p}"),
            (None, None) => "0.0.0.0:8080".to_string(),
        };
        let body_size_limit = match env.get("BODY_SIZE_LIMIT") {
            Some(v) => parse_size(v).ok_or_else(|| {
                format!("BODY_SIZE_LIMIT={v:?} is not a size; use bytes or a K/M/G suffix, e.g. 10M")
            })?,
            None => match &s.body_size_limit {
                None => DEFAULT_BODY_LIMIT,
                Some(SizeValue::Bytes(b)) if *b > 0 => *b,
                Some(SizeValue::Bytes(_)) => {
                    return Err(format!("{label}: server.body_size_limit must be above 0"))
                }
                Some(SizeValue::Text(t)) => parse_size(t).ok_or_else(|| {
                    format!("{label}: server.body_size_limit {t:?} is not a size; use bytes or a K/M/G suffix")
                })?,
            },
        };
        let mode = env
            .get("CONFIGURED_PROVIDER_MODELS_MODE")
            .map(str::to_string)
            .or(file.models.configured_provider_models_mode.clone());
        let allowlist_mode = match mode.as_deref().map(|m| m.trim().to_ascii_lowercase()) {
            None => false,
            Some(m) if m == "allowlist" => true,
            Some(m) if m == "merge" || m == "union" || m.is_empty() => false,
            Some(m) => {
                return Err(format!(
                    "CONFIGURED_PROVIDER_MODELS_MODE={m:?} is unknown; use allowlist or merge"
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
            None => file.models.cache_refresh_interval.unwrap_or(3600).max(1),
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
            allowlist_mode,
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
                .unwrap_or_else(|| "data/modelgate.db".to_string()),
            log_json,
            anthropic_default_max_tokens,
        })
    }
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
    fn bad_env_values_are_named() {
        let env = Env::from_pairs([("BODY_SIZE_LIMIT", "huge")]);
        let e = Settings::resolve(&FileConfig::default(), &env, "c").unwrap_err();
        assert!(e.contains("BODY_SIZE_LIMIT"));
    }
}
