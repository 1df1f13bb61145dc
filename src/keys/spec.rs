//! A key's declared shape: the JSON a `POST /admin/api/v1/keys` body carries (besides its
//! name) and the store keeps, and its checks. Every error names the field it is about.

use serde::{Deserialize, Serialize};

use super::ManagedKey;
use crate::limits::LimitSpec;
use crate::routing::user_path::UserPath;

/// What a key may do: `inference` (call models) or `manage:GROUP` (write the virtual models
/// whose source is `GROUP/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Inference,
    Manage(String),
}

impl Scope {
    pub fn parse(raw: &str) -> Result<Scope, String> {
        let s = raw.trim();
        if s == "inference" {
            return Ok(Scope::Inference);
        }
        match s.strip_prefix("manage:") {
            Some(g) if is_group(g) => Ok(Scope::Manage(g.to_string())),
            Some(g) => Err(format!(
                "scope {raw:?}: group {g:?} must be a non-empty name without '/' or spaces"
            )),
            None => Err(format!(
                "scope {raw:?} is unknown; use \"inference\" or \"manage:GROUP\""
            )),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Scope::Inference => "inference".to_string(),
            Scope::Manage(g) => format!("manage:{g}"),
        }
    }
}

fn is_group(g: &str) -> bool {
    !g.is_empty() && !g.contains('/') && !g.chars().any(char::is_whitespace)
}

/// A key's spec as written to the store and read back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Unix seconds, or an RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Vec<LimitSpec>>,
}

/// A spec that does not hold: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn field(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// Unix seconds from an integer or an RFC 3339 string.
pub fn parse_time(v: &serde_json::Value) -> Result<i64, String> {
    match v {
        serde_json::Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("{n} is not a whole number of unix seconds")),
        serde_json::Value::String(s) => s
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_second())
            .map_err(|e| format!("{s:?} is not an RFC 3339 time ({e})")),
        other => Err(format!(
            "expected unix seconds or an RFC 3339 time, got {other}"
        )),
    }
}

impl KeySpec {
    /// Checks the spec and builds the key it describes.
    pub fn into_key(self, name: &str, created_at: i64) -> Result<ManagedKey, FieldError> {
        let user_path = match self.user_path.as_deref() {
            None => UserPath::root(),
            Some(p) => UserPath::parse(p).map_err(|e| field("user_path", e.to_string()))?,
        };
        let scopes = match self.scopes {
            None => vec![Scope::Inference],
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, s)| Scope::parse(s).map_err(|e| field(format!("scopes[{i}]"), e)))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let expires_at = self
            .expires_at
            .as_ref()
            .filter(|v| !v.is_null())
            .map(parse_time)
            .transpose()
            .map_err(|e| field("expires_at", e))?;
        let limits = self.limits.unwrap_or_default();
        for (i, l) in limits.iter().enumerate() {
            l.check_on_key()
                .map_err(|e| field(format!("limits[{i}].{}", e.field), e.message))?;
        }
        Ok(ManagedKey {
            name: name.to_string(),
            user_path,
            scopes,
            expires_at,
            limits,
            created_at,
        })
    }

    /// The spec as the store keeps it: normalized, times in unix seconds.
    pub fn stored(key: &ManagedKey) -> KeySpec {
        KeySpec {
            user_path: Some(key.user_path.as_str().to_string()),
            scopes: Some(key.scopes.iter().map(Scope::name).collect()),
            expires_at: key.expires_at.map(serde_json::Value::from),
            limits: (!key.limits.is_empty()).then(|| key.limits.clone()),
        }
    }
}

/// Whether a key name is acceptable: 1 to 64 letters, digits, `-`, `_`, `.`.
pub fn check_name(name: &str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(field(
            "name",
            format!("{name:?} must be 1 to 64 letters, digits, '-', '_' or '.'"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<ManagedKey, FieldError> {
        serde_json::from_str::<KeySpec>(json)
            .unwrap()
            .into_key("k", 0)
    }

    #[test]
    fn defaults_are_root_path_and_inference() {
        let k = spec("{}").unwrap();
        assert!(k.user_path.is_root());
        assert_eq!(k.scopes, vec![Scope::Inference]);
        assert!(k.may_infer());
    }

    #[test]
    fn scopes_and_times_are_parsed_and_errors_name_the_field() {
        let k =
            spec(r#"{"scopes":["manage:team-a"],"expires_at":"2030-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!(k.managed_groups().collect::<Vec<_>>(), ["team-a"]);
        assert!(!k.may_infer());
        assert_eq!(k.expires_at, Some(1_893_456_000));
        let e = spec(r#"{"scopes":["inference","admin"]}"#).unwrap_err();
        assert_eq!(e.field, "scopes[1]");
        assert!(e.message.contains("manage:GROUP"), "{e}");
        assert_eq!(
            spec(r#"{"scopes":["manage:a/b"]}"#).unwrap_err().field,
            "scopes[0]"
        );
        assert_eq!(
            spec(r#"{"expires_at":"soon"}"#).unwrap_err().field,
            "expires_at"
        );
        assert_eq!(
            spec(r#"{"user_path":"/a/../b"}"#).unwrap_err().field,
            "user_path"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("ci-bot_1.x").is_ok());
        for bad in ["", "a b", "a/b", &"x".repeat(65)] {
            assert_eq!(check_name(bad).unwrap_err().field, "name");
        }
    }
}
