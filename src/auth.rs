//! Reading a caller's key, shared by the client API and the admin surface: one parser for
//! `Authorization: Bearer <key>` (scheme in any case, as RFC 9110 says), one constant-time
//! comparison with the master key. Nothing here reads a request or the network.

use crate::api_error::ApiError;

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
