//! The limits a config declares: `limits:` in config.yaml (each checked, errors naming the
//! file, the entry and the field), and the environment that says where counters live
//! (`REDIS_URL`, `REDIS_KEY_PREFIX`, `LIMITS_FAIL_OPEN`) and the default output estimate
//! (`LIMITS_DEFAULT_MAX_TOKENS`). Loading connects to nothing.

use super::spec::{LimitSpec, Matcher};
use crate::config::env::Env;

/// The output tokens a request that names no `max_tokens` is estimated at.
pub const DEFAULT_MAX_TOKENS: u64 = 1024;
pub const DEFAULT_KEY_PREFIX: &str = "modelgate:";

#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Config limits with what each matches, in declared order.
    pub rules: Vec<(Matcher, LimitSpec)>,
    /// Shared counters out of reach: serve (true) or answer 503 (false).
    pub fail_open: bool,
    pub default_max_tokens: u64,
    pub redis: Option<RedisSettings>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            rules: Vec::new(),
            fail_open: true,
            default_max_tokens: DEFAULT_MAX_TOKENS,
            redis: None,
        }
    }
}

/// Where shared counters live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub url: String,
    pub prefix: String,
}

fn bool_var(env: &Env, name: &str, default: bool) -> Result<bool, String> {
    match env.get(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if v.is_empty() => Ok(default),
        Some(v) => match v.as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(format!("{name}: {v:?} is not a boolean; use true or false")),
        },
    }
}

/// Checks the file's `limits:` entries (plus `extra`, already checked limits from other
/// sections) and reads the environment.
pub fn load(
    specs: &[LimitSpec],
    extra: Vec<(Matcher, LimitSpec)>,
    env: &Env,
    label: &str,
) -> Result<LimitsConfig, String> {
    let mut rules = Vec::with_capacity(specs.len() + extra.len());
    for (i, spec) in specs.iter().enumerate() {
        let matcher = spec
            .check_in_config()
            .map_err(|e| format!("{label}: limits[{i}].{}: {}", e.field, e.message))?;
        rules.push((matcher, spec.clone()));
    }
    rules.extend(extra);
    let default_max_tokens = match env.get("LIMITS_DEFAULT_MAX_TOKENS") {
        None => DEFAULT_MAX_TOKENS,
        Some(v) => v.trim().parse::<u64>().map_err(|_| {
            format!("LIMITS_DEFAULT_MAX_TOKENS: {v:?} is not a whole number of tokens")
        })?,
    };
    let redis = env
        .get("REDIS_URL")
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|url| {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(format!(
                    "REDIS_URL: {:?} is not a Redis URL; use redis://HOST:PORT[/DB]",
                    crate::limits::shared::shown(url)
                ));
            }
            Ok(RedisSettings {
                url: url.to_string(),
                prefix: env
                    .get("REDIS_KEY_PREFIX")
                    .unwrap_or(DEFAULT_KEY_PREFIX)
                    .to_string(),
            })
        })
        .transpose()?;
    Ok(LimitsConfig {
        rules,
        fail_open: bool_var(env, "LIMITS_FAIL_OPEN", true)?,
        default_max_tokens,
        redis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_entry_and_field() {
        let specs: Vec<LimitSpec> = serde_yaml::from_str(
            "[{match: {key: a}, rpm: 1}, {match: {user_path: 'a:b'}, rpm: 1}]",
        )
        .unwrap();
        let e = load(
            &specs,
            Vec::new(),
            &Env::from_pairs::<[(&str, &str); 0], &str, &str>([]),
            "c.yaml",
        )
        .unwrap_err();
        assert!(e.starts_with("c.yaml: limits[1].match.user_path: "), "{e}");
    }

    #[test]
    fn the_environment_says_where_counters_live() {
        let env = Env::from_pairs([
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("LIMITS_FAIL_OPEN", "false"),
        ]);
        let c = load(&[], Vec::new(), &env, "c").unwrap();
        assert!(!c.fail_open);
        assert_eq!(c.redis.unwrap().prefix, "modelgate:");
        let env = Env::from_pairs([("LIMITS_FAIL_OPEN", "maybe")]);
        assert!(load(&[], Vec::new(), &env, "c")
            .unwrap_err()
            .contains("LIMITS_FAIL_OPEN"));
        let env = Env::from_pairs([("REDIS_URL", "http://x")]);
        assert!(load(&[], Vec::new(), &env, "c")
            .unwrap_err()
            .contains("REDIS_URL"));
        assert_eq!(
            load(
                &[],
                Vec::new(),
                &Env::from_pairs::<[(&str, &str); 0], &str, &str>([]),
                "c"
            )
            .unwrap()
            .redis,
            None
        );
    }
}
