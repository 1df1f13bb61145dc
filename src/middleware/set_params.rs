//! `set-params`: top-level request parameters forced, defaulted or removed.
//!
//! `set` wins over the client, `defaults` fill keys the client left out, `remove` deletes keys.
//! Works on the body in the client's dialect, whatever it is. `stream` is refused at build time:
//! the gateway decides from the client's own request whether it answers with a stream.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::body::Body;
use super::build::{parse_config, FieldProblem};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    set: Map<String, Value>,
    #[serde(default)]
    defaults: Map<String, Value>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Debug)]
pub(super) struct SetParams {
    set: Vec<(String, Value)>,
    defaults: Vec<(String, Value)>,
    remove: Vec<String>,
}

impl SetParams {
    pub fn compile(config: &Value) -> Result<SetParams, Vec<FieldProblem>> {
        let c: Config = parse_config(config)?;
        let mut problems = Vec::new();
        let stream = |field: String| {
            FieldProblem::invalid(
                field,
                "\"stream\" cannot be changed by middleware: whether the answer streams follows the client's request",
            )
        };
        for key in c.set.keys().filter(|k| *k == "stream") {
            problems.push(stream(format!("set.{key}")));
        }
        for key in c.defaults.keys().filter(|k| *k == "stream") {
            problems.push(stream(format!("defaults.{key}")));
        }
        for (i, key) in c.remove.iter().enumerate() {
            if key == "stream" {
                problems.push(stream(format!("remove[{i}]")));
            } else if key == "model" {
                problems.push(FieldProblem::invalid(
                    format!("remove[{i}]"),
                    "\"model\" cannot be removed: every request needs one (use set.model to change it)",
                ));
            } else if c.set.contains_key(key) {
                problems.push(FieldProblem::invalid(
                    format!("remove[{i}]"),
                    format!("\"{key}\" is both set and removed; keep one"),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(SetParams {
            set: c.set.into_iter().collect(),
            defaults: c.defaults.into_iter().collect(),
            remove: c.remove,
        })
    }

    /// Applies to a JSON object body; any other body is left as it is (the proxy refuses it).
    pub fn apply(&self, body: &mut Body) {
        for key in &self.remove {
            body.remove(key);
        }
        for (key, value) in &self.defaults {
            if !body.contains_key(key) {
                body.insert(key, value.clone());
            }
        }
        for (key, value) in &self.set {
            body.insert(key, value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(config: Value, body: Value) -> Value {
        let mut body = Body::parse(serde_json::to_vec(&body).unwrap_or_default()).expect("object");
        SetParams::compile(&config)
            .expect("valid config")
            .apply(&mut body);
        serde_json::from_slice(&body.to_vec()).expect("json")
    }

    #[test]
    fn set_wins_defaults_fill_and_remove_deletes() {
        let body = run(
            json!({"set": {"temperature": 0.2}, "defaults": {"max_tokens": 100, "top_p": 1},
                   "remove": ["user"]}),
            json!({"model": "m", "temperature": 1.0, "top_p": 0.5, "user": "u"}),
        );
        assert_eq!(
            body,
            json!({"model": "m", "temperature": 0.2, "top_p": 0.5, "max_tokens": 100})
        );
    }

    #[test]
    fn set_may_change_the_model() {
        let body = run(
            json!({"set": {"model": "openai/gpt-4o"}}),
            json!({"model": "m"}),
        );
        assert_eq!(body["model"], "openai/gpt-4o");
    }

    #[test]
    fn stream_model_removal_and_contradictions_are_refused() {
        let problems = SetParams::compile(
            &json!({"set": {"stream": true, "x": 1}, "remove": ["model", "x", "stream"]}),
        )
        .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["set.stream", "remove[0]", "remove[1]", "remove[2]"]
        );
    }

    #[test]
    fn unknown_and_ill_typed_keys_name_their_path() {
        let problems = SetParams::compile(&json!({"sett": {}})).unwrap_err();
        assert_eq!(problems[0].field, "sett");
        assert!(problems[0]
            .problem
            .to_string()
            .contains("unknown field `sett`"));
        let problems = SetParams::compile(&json!({"remove": ["a", 3]})).unwrap_err();
        assert_eq!(problems[0].field, "remove[1]");
    }
}
