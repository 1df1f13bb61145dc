//! Reading a caller's key, shared by the client API and the admin surface: one parser for
//! `Authorization: Bearer <key>` (scheme in any case, as RFC 9110 says), one constant-time
//! comparison with the master key, and the lookup of managed keys (`identify`). Nothing here
//! reads a request or the network.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::api_error::ApiError;
use crate::keys::{KeyTable, ManagedKey};

/// Who a request's key says the caller is.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The master key.
    Master,
    /// No master key is set and no managed key was presented: the gateway is open.
    Open,
    /// A managed key (not expired).
    Key(Arc<ManagedKey>),
}

/// Identifies the caller of `given`: the master key (compared first, in constant time), else a
/// managed key (looked up by its hash in the current table; an expired one is 401
/// `expired_api_key`), else, with no master key set, an open caller unless the token looks
/// like a managed key (a revoked or unknown `mg-` key is refused even then). `now` is unix
/// seconds.
pub fn identify(
    given: Option<&str>,
    master: Option<&str>,
    keys: &ArcSwap<KeyTable>,
    now: i64,
    missing: &str,
) -> Result<Caller, ApiError> {
    let Some(token) = given else {
        return match master {
            Some(_) => Err(ApiError::new(
                401,
                "authentication_error",
                "missing_api_key",
                missing.to_string(),
            )),
            None => Ok(Caller::Open),
        };
    };
    if let Some(m) = master {
        if constant_time_eq::constant_time_eq(token.as_bytes(), m.as_bytes()) {
            return Ok(Caller::Master);
        }
    }
    if token.starts_with(crate::keys::PREFIX) {
        if let Some(k) = keys.load().find(token) {
            if k.expired(now) {
                return Err(ApiError::new(
                    401,
                    "authentication_error",
                    "expired_api_key",
                    format!("API key {:?} has expired", k.name),
                ));
            }
            return Ok(Caller::Key(k.clone()));
        }
    } else if master.is_none() {
        return Ok(Caller::Open);
    }
    Err(ApiError::new(
        401,
        "authentication_error",
        "invalid_api_key",
        "invalid API key",
    ))
}

/// 403 `forbidden`: the caller's key may not do this.
pub fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(403, "permission_error", "forbidden", message)
}

/// The token of an `Authorization` header value that uses the Bearer scheme.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether `given` is the master key, compared in constant time. `missing` is the message a
/// caller without a key gets (it says where to send one).
pub fn check_master(given: Option<&str>, master: &str, missing: &str) -> Result<(), ApiError> {
    match given {
        Some(k) if constant_time_eq::constant_time_eq(k.as_bytes(), master.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(
            401,
            "authentication_error",
            "invalid_api_key",
            "invalid API key",
        )),
        None => Err(ApiError::new(
            401,
            "authentication_error",
            "missing_api_key",
            missing.to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_read_in_any_case() {
        for v in ["Bearer k1", "bearer k1", "BEARER k1", "  Bearer   k1  "] {
            assert_eq!(bearer_token(v), Some("k1"), "{v:?}");
        }
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_no_bearer() {
        for v in ["Basic k1", "Bearer", "Bearer   ", "k1", ""] {
            assert_eq!(bearer_token(v), None, "{v:?}");
        }
    }

    fn table(json: &str) -> (ArcSwap<KeyTable>, String) {
        let secret = crate::keys::generate().unwrap();
        let (t, _) = KeyTable::build(&[crate::keys::StoredKey {
            name: "k".into(),
            hash: crate::keys::hash_hex(&secret),
            spec: json.into(),
            created_at: 0,
        }]);
        (ArcSwap::from_pointee(t), secret)
    }

    #[test]
    fn callers_are_identified_master_first_then_managed_keys() {
        let (keys, secret) = table(r#"{"user_path":"/t","expires_at":100}"#);
        let who = |given, master| identify(given, master, &keys, 50, "send one");
        assert!(matches!(who(Some("m"), Some("m")), Ok(Caller::Master)));
        assert!(
            matches!(who(Some(secret.as_str()), Some("m")), Ok(Caller::Key(k)) if k.name == "k")
        );
        assert!(matches!(
            who(Some(secret.as_str()), None),
            Ok(Caller::Key(_))
        ));
        assert!(matches!(who(None, None), Ok(Caller::Open)));
        assert!(matches!(who(Some("anything"), None), Ok(Caller::Open)));
        let code = |r: Result<Caller, ApiError>| r.unwrap_err().code;
        assert_eq!(code(who(Some("mg-unknown"), None)), "invalid_api_key");
        assert_eq!(code(who(Some("mg-unknown"), Some("m"))), "invalid_api_key");
        assert_eq!(code(who(None, Some("m"))), "missing_api_key");
        let late = identify(Some(&secret), Some("m"), &keys, 100, "");
        assert_eq!(
            (late.as_ref().unwrap_err().status, code(late)),
            (401, "expired_api_key")
        );
    }

    #[test]
    fn the_master_key_is_checked() {
        assert!(check_master(Some("k"), "k", "send one").is_ok());
        let wrong = check_master(Some("x"), "k", "send one").unwrap_err();
        assert_eq!((wrong.status, wrong.code), (401, "invalid_api_key"));
        let missing = check_master(None, "k", "send one").unwrap_err();
        assert_eq!(
            (missing.code, missing.message.as_str()),
            ("missing_api_key", "send one")
        );
    }
}
