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

/// Which admin store a gateway opens (`STORAGE_TYPE`).
#[derive(Debug, Clone, PartialEq)]
pub enum StoreKind {
    /// The file at `sqlite_path`.
    Sqlite,
    /// `POSTGRES_URL`, as given (parsed when the store opens).
    Postgres { url: String },
}

/// `STORAGE_TYPE` / `store.type` and `POSTGRES_URL` / `store.postgres_url`, env over file.
fn store_kind(file: &FileConfig, env: &Env, label: &str) -> Result<StoreKind, String> {
    let (kind, from) = match env.get("STORAGE_TYPE") {
        Some(k) => (Some(k.to_string()), "STORAGE_TYPE".to_string()),
        None => (file.store.kind.clone(), format!("{label}: store.type")),
    };
    let url = env
        .get("POSTGRES_URL")
        .map(str::to_string)
        .or(file.store.postgres_url.clone())
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

    #[test]
    fn bad_env_values_are_named() {
        let env = Env::from_pairs([("BODY_SIZE_LIMIT", "huge")]);
        let e = Settings::resolve(&FileConfig::default(), &env, "c").unwrap_err();
        assert!(e.contains("BODY_SIZE_LIMIT"));
    }
}
