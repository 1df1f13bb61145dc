//! The dashboard's files, embedded in the binary so it works offline (no CDN, no build step):
//! plain HTML, CSS and JavaScript that talk to the REST API with the master key the user gives
//! (kept in the tab's sessionStorage only).
//!
//! The page never receives a secret from the gateway; its Content-Security-Policy allows only
//! its own files and same-origin API calls.

use super::Response;

const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The file at `rest` (the path after `/admin/dashboard`).
pub fn asset(rest: &str) -> Response {
    let (content_type, body) = match rest {
        "" | "/" | "/index.html" => ("text/html; charset=utf-8", INDEX),
        "/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/style.css" => ("text/css; charset=utf-8", STYLE),
        _ => return Response::error(&super::not_found(format!("no dashboard file {rest:?}"))),
    };
    Response {
        status: 200,
        content_type,
        body: body.as_bytes().to_vec(),
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
        let r = asset("");
        assert_eq!(r.status, 200);
        assert!(r.content_type.starts_with("text/html"));
        assert!(String::from_utf8_lossy(&r.body).contains("app.js"));
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| *k == "content-security-policy" && v.contains("script-src 'self'")));
        assert_eq!(
            asset("/app.js").content_type,
            "text/javascript; charset=utf-8"
        );
        assert_eq!(asset("/nope.js").status, 404);
    }
}
