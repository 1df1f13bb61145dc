//! `headers`: response headers set or removed on what the client receives.
//!
//! Names and values are parsed when the pipeline is built; applying is a few map operations.
//! Framing headers (`content-length`, `transfer-encoding`, `connection`) belong to the proxy and
//! are refused. `HeaderSink` lets the proxy pass Pingora's response header (which keeps the
//! header case it will write) and tests a plain `http::HeaderMap`.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use super::build::{parse_config, FieldProblem};

/// Headers the proxy owns: changing them would break the response's framing.
const OWNED: [&str; 5] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// A response header map the `headers` middleware can edit.
pub trait HeaderSink {
    /// Replaces every value of `name` with `value`; `written` is the name as configured.
    fn set_header(&mut self, name: &HeaderName, written: &str, value: &HeaderValue);
    fn remove_header(&mut self, name: &HeaderName);
}

impl HeaderSink for HeaderMap {
    fn set_header(&mut self, name: &HeaderName, _written: &str, value: &HeaderValue) {
        self.insert(name.clone(), value.clone());
    }

    fn remove_header(&mut self, name: &HeaderName) {
        self.remove(name);
    }
}

impl HeaderSink for pingora::http::ResponseHeader {
    fn set_header(&mut self, _name: &HeaderName, written: &str, value: &HeaderValue) {
        // The configured spelling is what goes on the wire; it was checked to be a valid
        // name, so the insert cannot fail.
        let _ = self.insert_header(written.to_string(), value.clone());
    }

    fn remove_header(&mut self, name: &HeaderName) {
        pingora::http::ResponseHeader::remove_header(self, name);
    }
}

#[derive(Debug)]
pub(super) struct Headers {
    set: Vec<(HeaderName, String, HeaderValue)>,
    remove: Vec<HeaderName>,
}

fn owned(name: &HeaderName) -> bool {
    OWNED.contains(&name.as_str())
}

impl Headers {
    pub fn compile(config: &Value) -> Result<Headers, Vec<FieldProblem>> {
        let c: Config = parse_config(config)?;
        let mut problems = Vec::new();
        let mut set = Vec::new();
        let mut remove = Vec::new();
        for (written, value) in &c.set {
            let field = format!("set.{written}");
            let name = match HeaderName::from_bytes(written.as_bytes()) {
                Ok(name) if owned(&name) => {
                    problems.push(FieldProblem::invalid(
                        field,
                        format!("\"{written}\" is set by the gateway itself and cannot be changed"),
                    ));
                    continue;
                }
                Ok(name) => name,
                Err(_) => {
                    problems.push(FieldProblem::invalid(
                        field,
                        format!("\"{written}\" is not a valid header name"),
                    ));
                    continue;
                }
            };
            match HeaderValue::from_str(value) {
                Ok(v) => set.push((name, written.clone(), v)),
                Err(_) => problems.push(FieldProblem::invalid(
                    field,
                    "the value is not a valid header value (visible ASCII, no line breaks)",
                )),
            }
        }
        for (i, written) in c.remove.iter().enumerate() {
            let field = format!("remove[{i}]");
            match HeaderName::from_bytes(written.as_bytes()) {
                Ok(name) if owned(&name) => problems.push(FieldProblem::invalid(
                    field,
                    format!("\"{written}\" is set by the gateway itself and cannot be removed"),
                )),
                Ok(name) => remove.push(name),
                Err(_) => problems.push(FieldProblem::invalid(
                    field,
                    format!("\"{written}\" is not a valid header name"),
                )),
            }
        }
        if set.is_empty() && remove.is_empty() && problems.is_empty() {
            problems.push(FieldProblem::invalid("", "give set, remove or both"));
        }
        if problems.is_empty() {
            Ok(Headers { set, remove })
        } else {
            Err(problems)
        }
    }

    /// Removes first, then sets, so a header both removed and set ends up set.
    pub fn apply<H: HeaderSink + ?Sized>(&self, headers: &mut H) {
        for name in &self.remove {
            headers.remove_header(name);
        }
        for (name, written, value) in &self.set {
            headers.set_header(name, written, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sets_and_removes_on_a_header_map() {
        let h = Headers::compile(
            &json!({"set": {"X-Team": "search"}, "remove": ["server", "x-request-id"]}),
        )
        .expect("valid config");
        let mut map = HeaderMap::new();
        map.insert("server", HeaderValue::from_static("upstream"));
        map.insert("x-team", HeaderValue::from_static("old"));
        map.insert("content-type", HeaderValue::from_static("application/json"));
        h.apply(&mut map);
        assert!(map.get("server").is_none());
        assert_eq!(
            map.get("x-team").map(|v| v.as_bytes()),
            Some(&b"search"[..])
        );
        assert!(map.get("content-type").is_some());
    }

    #[test]
    fn sets_on_pingoras_response_header_in_the_configured_case() {
        let h = Headers::compile(&json!({"set": {"X-Team": "search"}, "remove": ["Server"]}))
            .expect("valid config");
        let mut resp = pingora::http::ResponseHeader::build(200, None).expect("a response header");
        resp.insert_header("server", "upstream").expect("insert");
        h.apply(&mut resp);
        assert!(resp.headers.get("server").is_none());
        assert_eq!(
            resp.headers.get("x-team").map(|v| v.as_bytes()),
            Some(&b"search"[..])
        );
    }

    #[test]
    fn bad_names_values_and_framing_headers_are_refused() {
        let problems = Headers::compile(&json!({
            "set": {"bad name": "x", "x-ok": "line\nbreak", "Content-Length": "1"},
            "remove": ["transfer-encoding"]
        }))
        .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "set.Content-Length",
                "set.bad name",
                "set.x-ok",
                "remove[0]"
            ]
        );
        assert!(Headers::compile(&json!({})).is_err());
    }
}
