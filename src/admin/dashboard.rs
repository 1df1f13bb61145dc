//! The dashboard's files, embedded in the binary so it works offline (no CDN, no build step):
//! plain HTML, CSS and JavaScript that talk to the REST API with the master key the user gives
//! (kept in the tab's sessionStorage only).
//!
//! The page never receives a secret from the gateway; its Content-Security-Policy allows only
//! its own files and same-origin API calls.

use super::Response;

const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const PLAYGROUND_JS: &str = include_str!("dashboard/playground.js");
const KEYS_JS: &str = include_str!("dashboard/keys.js");
const STYLE: &str = include_str!("dashboard/style.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The file at `rest` (the path after `/admin/dashboard`). Under a base path (`/gw`), the
/// page's links and the script's API root carry it, since the browser sees the prefixed URLs.
pub fn asset(rest: &str, base_path: Option<&str>) -> Response {
    let (content_type, body) = match rest {
        "" | "/" | "/index.html" => ("text/html; charset=utf-8", INDEX),
        "/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/playground.js" => ("text/javascript; charset=utf-8", PLAYGROUND_JS),
        "/keys.js" => ("text/javascript; charset=utf-8", KEYS_JS),
        "/style.css" => ("text/css; charset=utf-8", STYLE),
        _ => return Response::error(&super::not_found(format!("no dashboard file {rest:?}"))),
    };
    let body = match base_path {
        None => body.as_bytes().to_vec(),
        Some(base) => body
            .replace("\"/admin/", &format!("\"{base}/admin/"))
            .replace("'/admin/", &format!("'{base}/admin/"))
            .into_bytes(),
    };
    Response {
        status: 200,
        content_type,
        body,
        headers: vec![
            ("content-security-policy", CSP.to_string()),
            ("x-content-type-options", "nosniff".to_string()),
            ("referrer-policy", "no-referrer".to_string()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_served_with_their_types_and_a_strict_policy() {
        let r = asset("", None);
        assert_eq!(r.status, 200);
        assert!(r.content_type.starts_with("text/html"));
        assert!(String::from_utf8_lossy(&r.body).contains("app.js"));
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| *k == "content-security-policy" && v.contains("script-src 'self'")));
        assert_eq!(
            asset("/app.js", None).content_type,
            "text/javascript; charset=utf-8"
        );
        assert_eq!(asset("/nope.js", None).status, 404);
    }

    #[test]
    fn under_a_base_path_links_and_the_api_root_carry_it() {
        let page = String::from_utf8(asset("", Some("/gw")).body).unwrap();
        assert!(page.contains("\"/gw/admin/dashboard/app.js\""), "{page}");
        assert!(!page.contains("\"/admin/"), "{page}");
        let js = String::from_utf8(asset("/app.js", Some("/gw")).body).unwrap();
        assert!(js.contains("'/gw/admin/api/v1'"));
        assert!(!js.contains("'/admin/"));
    }
}
