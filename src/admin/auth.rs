//! Who may use the admin surface. With a master key: `Authorization: Bearer <key>`, compared in
//! constant time (the dashboard's own files load without it and then ask for it). A managed key
//! with a `manage:GROUP` scope is a manager: `admin::scope` limits it to the virtual models of
//! its groups. Without a master key: callers on this machine only, reached through a loopback
//! host name (so a web page elsewhere cannot reach the API by rebinding its DNS name to
//! 127.0.0.1), or a manager key.
//!
//! This module decides; it never reads or writes the network itself.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::Request;
use crate::api_error::ApiError;
use crate::auth::Caller;
use crate::keys::{KeyTable, ManagedKey};

/// What an authorized admin caller may do.
#[derive(Debug, Clone, Default)]
pub enum Access {
    /// Everything: the master key, or a loopback caller while none is set.
    #[default]
    Full,
    /// The virtual models of the key's `manage:` groups, and nothing else.
    Manager(Arc<ManagedKey>),
}

/// Whether `req` may proceed, and with what access.
pub fn authorize(
    master: Option<&str>,
    keys: &ArcSwap<KeyTable>,
    req: &Request,
) -> Result<Access, ApiError> {
    let dashboard_file = req.path.starts_with("/admin/dashboard") || req.path == "/admin";
    if master.is_some() && dashboard_file {
        return Ok(Access::Full);
    }
    let token = req
        .authorization
        .as_deref()
        .and_then(crate::auth::bearer_token);
    let missing = "the admin API needs the master key: send Authorization: Bearer <key>";
    // Without a master key, only a managed key changes what a caller is: anything else is
    // judged by where it comes from.
    let presented_key = token.is_some_and(|t| t.starts_with(crate::keys::PREFIX));
    if master.is_some() || presented_key {
        let now = crate::wall_clock::now_secs() as i64;
        match crate::auth::identify(token, master, keys, now, missing)? {
            Caller::Master => return Ok(Access::Full),
            Caller::Key(k) => return manager(k),
            Caller::Open => {}
        }
    }
    loopback_only(req)?;
    Ok(Access::Full)
}

/// A managed key on the admin surface: a manager when it has a `manage:` scope, else 403.
fn manager(k: Arc<ManagedKey>) -> Result<Access, ApiError> {
    if k.managed_groups().next().is_some() {
        return Ok(Access::Manager(k));
    }
    Err(crate::auth::forbidden(format!(
        "API key {:?} has no manage:GROUP scope; the admin API needs the master key or a manager key",
        k.name
    )))
}

fn loopback_only(req: &Request) -> Result<(), ApiError> {
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

    fn authorize(master: Option<&str>, req: &Request) -> Result<Access, ApiError> {
        super::authorize(master, &ArcSwap::from_pointee(KeyTable::default()), req)
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
