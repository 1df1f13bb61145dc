//! Who may use the admin surface. With a master key: `Authorization: Bearer <key>`, compared in
//! constant time (the dashboard's own files load without it and then ask for it). Without one:
//! callers on this machine only, reached through a loopback host name (so a web page elsewhere
//! cannot reach the API by rebinding its DNS name to 127.0.0.1).
//!
//! This module decides; it never reads or writes the network itself.

use std::net::IpAddr;

use super::Request;
use crate::api_error::ApiError;

/// Whether `req` may proceed.
pub fn authorize(master: Option<&str>, req: &Request) -> Result<(), ApiError> {
    let dashboard_file = req.path.starts_with("/admin/dashboard") || req.path == "/admin";
    match master {
        Some(key) => {
            if dashboard_file {
                return Ok(());
            }
            check_bearer(key, req.authorization.as_deref())
        }
        None => {
            if !req.peer_loopback {
                return Err(ApiError::new(
                    403,
                    "permission_error",
                    "admin_loopback_only",
                    "the admin API answers only callers on this machine while no master key is set; set MODELGATE_MASTER_KEY to use it remotely",
                ));
            }
            if let Some(h) = req.host.as_deref() {
                if !is_loopback_host(h) {
                    return Err(ApiError::new(
                        403,
                        "permission_error",
                        "admin_loopback_only",
                        format!("the admin API answers only through a loopback host name (localhost, 127.0.0.1, [::1]) while no master key is set, not {h:?}"),
                    ));
                }
            }
            Ok(())
        }
    }
}

fn check_bearer(key: &str, header: Option<&str>) -> Result<(), ApiError> {
    crate::auth::check_master(
        header.and_then(crate::auth::bearer_token),
        key,
        "the admin API needs the master key: send Authorization: Bearer <key>",
    )
}

/// `localhost`, `*.localhost`, or a loopback IP, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim();
    let name = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        match h.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => h,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, auth: Option<&str>, loopback: bool, host: Option<&str>) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            authorization: auth.map(str::to_string),
            peer_loopback: loopback,
            host: host.map(str::to_string),
            ..Request::default()
        }
    }

    #[test]
    fn master_key_is_required_and_compared() {
        let api = "/admin/api/v1/status";
        let e = authorize(Some("k1"), &req(api, None, true, None)).unwrap_err();
        assert_eq!((e.status, e.code), (401, "missing_api_key"));
        let e = authorize(Some("k1"), &req(api, Some("Bearer k2"), true, None)).unwrap_err();
        assert_eq!((e.status, e.code), (401, "invalid_api_key"));
        assert!(authorize(Some("k1"), &req(api, Some("Bearer k1"), false, None)).is_ok());
        assert!(authorize(Some("k1"), &req(api, Some("bearer  k1 "), false, None)).is_ok());
        // The dashboard's files load without the key; it asks for it.
        assert!(authorize(Some("k1"), &req("/admin/dashboard", None, false, None)).is_ok());
    }

    #[test]
    fn without_a_key_only_loopback_callers_and_hosts() {
        let api = "/admin/api/v1/status";
        assert!(authorize(None, &req(api, None, true, Some("127.0.0.1:8080"))).is_ok());
        let e = authorize(None, &req(api, None, false, Some("127.0.0.1:8080"))).unwrap_err();
        assert_eq!((e.status, e.code), (403, "admin_loopback_only"));
        let e = authorize(None, &req(api, None, true, Some("evil.example:8080"))).unwrap_err();
        assert_eq!(e.status, 403);
        let e = authorize(None, &req("/admin/dashboard", None, false, None)).unwrap_err();
        assert_eq!(e.status, 403);
    }

    #[test]
    fn loopback_host_names() {
        for h in [
            "localhost",
            "localhost:8080",
            "127.0.0.1",
            "127.0.0.2:1",
            "[::1]:8080",
            "app.localhost",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:80",
            "[::2]:1",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
