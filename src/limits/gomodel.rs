//! GoModel's budgets, read as they are and mapped onto budget limits matched by user path:
//! `budgets.user_paths` (`path`, `limits: [{period: hourly|daily|weekly|monthly, amount}]`,
//! or `period_seconds` 3600/86400/604800/2592000), `budgets.enabled` / `BUDGETS_ENABLED`, and
//! `SET_BUDGET_<PATH>` variables (`SET_BUDGET_TEAM__ALPHA="daily=10,weekly=50"`: segments
//! joined by `__`, lower-cased; the value as `period=amount` pairs, a JSON object or a JSON
//! list), which replace the file's entry for the same path.

use serde::Deserialize;

use super::spec::{BudgetSpec, LimitSpec, MatchSpec, Matcher, Period};
use crate::config::env::Env;
use crate::routing::user_path::UserPath;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetsSpec {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub user_paths: Vec<BudgetPathSpec>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetPathSpec {
    pub path: String,
    #[serde(default)]
    pub limits: Vec<BudgetLimitSpec>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetLimitSpec {
    #[serde(default)]
    pub period: Option<String>,
    #[serde(default)]
    pub period_seconds: Option<i64>,
    pub amount: f64,
}

fn period(name: Option<&str>, seconds: Option<i64>) -> Result<Period, String> {
    if let Some(s) = seconds.filter(|s| *s > 0) {
        return match s {
            3600 => Ok(Period::Hour),
            86_400 => Ok(Period::Day),
            604_800 => Ok(Period::Week),
            2_592_000 => Ok(Period::Month),
            other => Err(format!(
                "period_seconds {other} is not one modelgate keeps; use 3600, 86400, 604800 or 2592000"
            )),
        };
    }
    match name.map(|n| n.trim().to_ascii_lowercase()).as_deref() {
        Some("hourly" | "hour") => Ok(Period::Hour),
        Some("daily" | "day") => Ok(Period::Day),
        Some("weekly" | "week") => Ok(Period::Week),
        Some("monthly" | "month") => Ok(Period::Month),
        Some(other) => Err(format!(
            "period {other:?} is unknown; use hourly, daily, weekly or monthly"
        )),
        None => Err("period is missing; use hourly, daily, weekly or monthly".to_string()),
    }
}

/// `SET_BUDGET_TEAM__ALPHA` -> `/team/alpha`.
fn env_path(suffix: &str) -> String {
    let segments: Vec<String> = suffix
        .trim()
        .to_ascii_lowercase()
        .split("__")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    format!("/{}", segments.join("/"))
}

fn env_limits(raw: &str) -> Result<Vec<BudgetLimitSpec>, String> {
    let raw = raw.trim();
    if raw.starts_with('{') {
        let map: std::collections::BTreeMap<String, f64> =
            serde_json::from_str(raw).map_err(|e| e.to_string())?;
        return Ok(map
            .into_iter()
            .map(|(p, amount)| BudgetLimitSpec {
                period: Some(p),
                period_seconds: None,
                amount,
            })
            .collect());
    }
    if raw.starts_with('[') {
        return serde_json::from_str(raw).map_err(|e| e.to_string());
    }
    raw.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (p, a) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not period=amount"))?;
            let amount = a
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("{a:?} is not an amount"))?;
            Ok(BudgetLimitSpec {
                period: Some(p.trim().to_string()),
                period_seconds: None,
                amount,
            })
        })
        .collect()
}

/// The budget limits GoModel's section and variables declare.
pub fn limits(
    spec: &BudgetsSpec,
    env: &Env,
    label: &str,
) -> Result<Vec<(Matcher, LimitSpec)>, String> {
    let enabled = match env.get("BUDGETS_ENABLED").map(str::trim) {
        Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(other) => return Err(format!("BUDGETS_ENABLED: {other:?} is not true or false")),
        None => spec.enabled.unwrap_or(true),
    };
    if !enabled {
        return Ok(Vec::new());
    }
    // (where it was declared, path, limits); a variable replaces the file's entry for its path.
    let mut entries: Vec<(String, String, Vec<BudgetLimitSpec>)> = spec
        .user_paths
        .iter()
        .enumerate()
        .map(|(i, e)| {
            (
                format!("{label}: budgets.user_paths[{i}]"),
                e.path.clone(),
                e.limits.clone(),
            )
        })
        .collect();
    let mut vars: Vec<(&str, &str)> = env
        .iter()
        .filter(|(k, v)| k.starts_with("SET_BUDGET_") && !v.trim().is_empty())
        .collect();
    vars.sort();
    for (k, v) in vars {
        let path = env_path(&k["SET_BUDGET_".len()..]);
        let limits = env_limits(v).map_err(|e| format!("{k}: {e}"))?;
        let same = |p: &str| UserPath::parse(p).ok() == UserPath::parse(&path).ok();
        entries.retain(|(_, p, _)| !same(p));
        entries.push((k.to_string(), path, limits));
    }
    let mut out = Vec::new();
    for (origin, path, limits) in entries {
        let user_path = UserPath::parse(&path).map_err(|e| format!("{origin}.path: {e}"))?;
        for (j, l) in limits.iter().enumerate() {
            let at = format!("{origin}.limits[{j}]");
            let period =
                period(l.period.as_deref(), l.period_seconds).map_err(|e| format!("{at}: {e}"))?;
            if !l.amount.is_finite() || l.amount <= 0.0 {
                return Err(format!(
                    "{at}.amount: {} must be a positive amount",
                    l.amount
                ));
            }
            out.push((
                Matcher::UserPath(user_path.clone()),
                LimitSpec {
                    matcher: Some(MatchSpec {
                        user_path: Some(user_path.as_str().to_string()),
                        ..MatchSpec::default()
                    }),
                    rpm: None,
                    tpm: None,
                    max_concurrent: None,
                    budget: Some(BudgetSpec {
                        usd: l.amount,
                        period,
                    }),
                },
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> BudgetsSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn file_budgets_become_user_path_budget_limits() {
        let s = spec("user_paths: [{path: /team, limits: [{period: daily, amount: 10}, {period_seconds: 604800, amount: 50}]}]");
        let got = limits(
            &s,
            &Env::from_pairs::<[(&str, &str); 0], &str, &str>([]),
            "c.yaml",
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].0,
            Matcher::UserPath(UserPath::parse("/team").unwrap())
        );
        let b = got[1].1.budget.as_ref().unwrap();
        assert_eq!((b.usd, b.period), (50.0, Period::Week));
        let bad = spec("user_paths: [{path: /t, limits: [{period: yearly, amount: 1}]}]");
        let e = limits(
            &bad,
            &Env::from_pairs::<[(&str, &str); 0], &str, &str>([]),
            "c.yaml",
        )
        .unwrap_err();
        assert!(
            e.starts_with("c.yaml: budgets.user_paths[0].limits[0]: period \"yearly\""),
            "{e}"
        );
    }

    #[test]
    fn variables_replace_the_files_entry_for_their_path() {
        let s = spec("user_paths: [{path: /team/alpha, limits: [{period: daily, amount: 10}]}]");
        let env = Env::from_pairs([("SET_BUDGET_TEAM__ALPHA", "daily=3,monthly=20")]);
        let got = limits(&s, &env, "c").unwrap();
        let budgets: Vec<(f64, Period)> = got
            .iter()
            .map(|(_, l)| l.budget.as_ref().map(|b| (b.usd, b.period)).unwrap())
            .collect();
        assert_eq!(budgets, [(3.0, Period::Day), (20.0, Period::Month)]);
        let env = Env::from_pairs([("SET_BUDGET_X", r#"{"hourly": 1}"#)]);
        assert_eq!(limits(&BudgetsSpec::default(), &env, "c").unwrap().len(), 1);
        let env = Env::from_pairs([("SET_BUDGET_X", "daily")]);
        assert!(limits(&BudgetsSpec::default(), &env, "c")
            .unwrap_err()
            .starts_with("SET_BUDGET_X: "));
        let env = Env::from_pairs([("BUDGETS_ENABLED", "false"), ("SET_BUDGET_X", "daily=1")]);
        assert!(limits(&s, &env, "c").unwrap().is_empty());
    }
}
