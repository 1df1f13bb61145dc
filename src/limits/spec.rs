//! The declared shape of a limit, as `limits:` in config.yaml and `limits` on a key write it:
//! `{match: {key | user_path | virtual_model}, rpm, tpm, max_concurrent, budget: {usd,
//! period}}`, and its checks. Every error names the field; the caller adds where the limit was
//! declared.

use serde::{Deserialize, Serialize};

use crate::routing::user_path::UserPath;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// Which requests the limit counts (config limits); a key's own limits have none.
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub matcher: Option<MatchSpec>,
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens (input and output) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    pub usd: f64,
    pub period: Period,
}

/// A budget's calendar period (UTC). GoModel's `hourly`/`daily`/`weekly`/`monthly` are
/// accepted as aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    #[serde(alias = "hourly")]
    Hour,
    #[serde(alias = "daily")]
    Day,
    #[serde(alias = "weekly")]
    Week,
    #[serde(alias = "monthly")]
    Month,
}

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    /// The period that holds `now` (unix seconds): its number and the seconds until it ends.
    pub fn at(self, now: u64) -> (u64, u64) {
        match self {
            Period::Hour => (now / 3600, 3600 - now % 3600),
            Period::Day => (now / 86_400, 86_400 - now % 86_400),
            // Weeks start on Monday: 1970-01-01 was a Thursday.
            Period::Week => {
                let shifted = now + 3 * 86_400;
                (shifted / 604_800, 604_800 - shifted % 604_800)
            }
            Period::Month => {
                let ts = jiff::Timestamp::from_second(now as i64).unwrap_or_default();
                let d = ts.to_zoned(jiff::tz::TimeZone::UTC).date();
                let index = (d.year() as i64 * 12 + i64::from(d.month()) - 1).max(0) as u64;
                let next = d
                    .first_of_month()
                    .checked_add(jiff::Span::new().months(1))
                    .ok()
                    .and_then(|n| n.to_zoned(jiff::tz::TimeZone::UTC).ok())
                    .map_or(now + 1, |z| z.timestamp().as_second().max(0) as u64);
                (index, next.saturating_sub(now).max(1))
            }
        }
    }
}

/// A limit that does not hold: the field (relative to the limit) and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.to_string(),
        message: message.into(),
    }
}

impl LimitSpec {
    fn check_amounts(&self) -> Result<(), SpecError> {
        for (name, v) in [
            ("rpm", self.rpm),
            ("tpm", self.tpm),
            ("max_concurrent", self.max_concurrent),
        ] {
            if v == Some(0) {
                return Err(err(name, "must be at least 1 (leave it out for no limit)"));
            }
        }
        if let Some(b) = &self.budget {
            if !b.usd.is_finite() || b.usd <= 0.0 {
                return Err(err(
                    "budget.usd",
                    format!("{} must be a positive amount", b.usd),
                ));
            }
        }
        if self.rpm.is_none()
            && self.tpm.is_none()
            && self.max_concurrent.is_none()
            && self.budget.is_none()
        {
            return Err(err(
                "rpm",
                "the limit sets nothing: give rpm, tpm, max_concurrent or budget",
            ));
        }
        Ok(())
    }

    /// A limit on a key: it counts that key's requests, so it names no `match`.
    pub fn check_on_key(&self) -> Result<(), SpecError> {
        if self.matcher.is_some() {
            return Err(err(
                "match",
                "a key's own limits count that key's requests; leave match out",
            ));
        }
        self.check_amounts()
    }

    /// A limit in config.yaml: exactly one of `match.key`, `match.user_path`,
    /// `match.virtual_model`.
    pub fn check_in_config(&self) -> Result<Matcher, SpecError> {
        self.check_amounts()?;
        let Some(m) = &self.matcher else {
            return Err(err(
                "match",
                "missing: say which requests it counts with match: {key | user_path | virtual_model}",
            ));
        };
        let matcher =
            match (&m.key, &m.user_path, &m.virtual_model) {
                (Some(k), None, None) if !k.trim().is_empty() => Matcher::Key(k.trim().to_string()),
                (None, Some(p), None) => Matcher::UserPath(
                    UserPath::parse(p).map_err(|e| err("match.user_path", e.to_string()))?,
                ),
                (None, None, Some(v)) if !v.trim().is_empty() => {
                    Matcher::VirtualModel(v.trim().to_string())
                }
                (None, None, None) => {
                    return Err(err(
                        "match",
                        "empty: give one of key, user_path, virtual_model",
                    ))
                }
                (Some(_), None, None) => return Err(err("match.key", "is blank")),
                (None, None, Some(_)) => return Err(err("match.virtual_model", "is blank")),
                _ => return Err(err(
                    "match",
                    "give only one of key, user_path, virtual_model (declare two limits for two)",
                )),
            };
        Ok(matcher)
    }
}

/// What a config limit counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// The requests of the managed key with this name.
    Key(String),
    /// Every request whose user path this path covers, together.
    UserPath(UserPath),
    /// The requests routed through this virtual model (its source).
    VirtualModel(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> LimitSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn config_limits_need_exactly_one_match() {
        let m = spec("{match: {user_path: team}, rpm: 5}").check_in_config();
        assert_eq!(m, Ok(Matcher::UserPath(UserPath::parse("/team").unwrap())));
        let e = spec("{rpm: 5}").check_in_config().unwrap_err();
        assert_eq!(e.field, "match");
        let e = spec("{match: {key: a, virtual_model: b}, rpm: 5}")
            .check_in_config()
            .unwrap_err();
        assert!(e.message.contains("only one"), "{e:?}");
        let e = spec("{match: {key: a}}").check_in_config().unwrap_err();
        assert!(e.message.contains("sets nothing"), "{e:?}");
        let e = spec("{match: {key: a}, budget: {usd: -1, period: day}}")
            .check_in_config()
            .unwrap_err();
        assert_eq!(e.field, "budget.usd");
        let e = spec("{match: {key: a}, rpm: 0}")
            .check_in_config()
            .unwrap_err();
        assert_eq!(e.field, "rpm");
    }

    #[test]
    fn key_limits_name_no_match() {
        assert!(spec("{rpm: 5}").check_on_key().is_ok());
        assert_eq!(
            spec("{match: {key: a}, rpm: 5}")
                .check_on_key()
                .unwrap_err()
                .field,
            "match"
        );
    }

    #[test]
    fn periods_and_their_ends() {
        assert_eq!(
            spec("{budget: {usd: 1, period: daily}}")
                .budget
                .unwrap()
                .period,
            Period::Day
        );
        assert_eq!(Period::Day.at(86_400 * 3 + 10), (3, 86_390));
        assert_eq!(Period::Hour.at(7_200), (2, 3_600));
        // 2026-12-05T00:00:00Z: December 2026, 26 days to 2027-01-01.
        let (index, left) = Period::Month.at(1_796_428_800);
        assert_eq!(index, 2026 * 12 + 11);
        assert_eq!(left, 27 * 86_400);
        // Monday 2026-11-30 00:00Z starts a week.
        let monday = 1_795_996_800;
        assert_eq!(Period::Week.at(monday).1, 604_800);
    }
}
