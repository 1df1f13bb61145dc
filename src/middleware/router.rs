//! `router`: picks the request's `model` from rules on the request itself.
//!
//! The first rule whose every condition holds sets `model`; when none holds, `default` does if
//! given, else `model` stays. Conditions: input size in characters (the client text `text`
//! finds), whether tools are offered, whether images are attached, and equality of keys of the
//! `X-Modelgate-Metadata` JSON object. The proxy resolves the final `model` like a client's.
//! Facts are computed only when a rule needs them, once per run.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::body::Body;
use super::build::{parse_config, FieldProblem};
use super::{text, RequestFacts};
use crate::routing::model::Operation;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    rules: Vec<RuleConfig>,
    #[serde(default)]
    default: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    #[serde(default)]
    when: When,
    model: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct When {
    #[serde(default)]
    min_input_chars: Option<u64>,
    #[serde(default)]
    max_input_chars: Option<u64>,
    #[serde(default)]
    has_tools: Option<bool>,
    #[serde(default)]
    has_images: Option<bool>,
    #[serde(default)]
    metadata: Map<String, Value>,
}

#[derive(Debug)]
struct Rule {
    when: When,
    model: String,
}

#[derive(Debug)]
pub(super) struct Router {
    rules: Vec<Rule>,
    default: Option<String>,
}

/// The request's facts, each computed on first use.
struct Facts<'a> {
    body: &'a Body,
    operation: Operation,
    metadata_raw: Option<&'a [u8]>,
    input_chars: Option<u64>,
    has_images: Option<bool>,
    metadata: Option<Map<String, Value>>,
}

impl Facts<'_> {
    fn input_chars(&mut self) -> u64 {
        *self
            .input_chars
            .get_or_insert_with(|| text::input_chars(self.body, self.operation))
    }

    fn has_images(&mut self) -> bool {
        *self
            .has_images
            .get_or_insert_with(|| text::has_images(self.body, self.operation))
    }

    /// The metadata object; a header that is not a JSON object counts as no metadata.
    fn metadata(&mut self) -> &Map<String, Value> {
        let raw = self.metadata_raw;
        self.metadata.get_or_insert_with(|| {
            raw.and_then(|b| serde_json::from_slice::<Map<String, Value>>(b).ok())
                .unwrap_or_default()
        })
    }
}

impl When {
    fn holds(&self, facts: &mut Facts<'_>) -> bool {
        if let Some(min) = self.min_input_chars {
            if facts.input_chars() < min {
                return false;
            }
        }
        if let Some(max) = self.max_input_chars {
            if facts.input_chars() > max {
                return false;
            }
        }
        if let Some(want) = self.has_tools {
            if text::has_tools(facts.body) != want {
                return false;
            }
        }
        if let Some(want) = self.has_images {
            if facts.has_images() != want {
                return false;
            }
        }
        if !self.metadata.is_empty() {
            let metadata = facts.metadata();
            if !self
                .metadata
                .iter()
                .all(|(k, v)| metadata.get(k) == Some(v))
            {
                return false;
            }
        }
        true
    }
}

impl Router {
    pub fn compile(config: &Value) -> Result<Router, Vec<FieldProblem>> {
        let c: Config = parse_config(config)?;
        let mut problems = Vec::new();
        if c.rules.is_empty() && c.default.is_none() {
            problems.push(FieldProblem::invalid(
                "",
                "a router needs rules, a default, or both",
            ));
        }
        for (i, rule) in c.rules.iter().enumerate() {
            if rule.model.trim().is_empty() {
                problems.push(FieldProblem::invalid(
                    format!("rules[{i}].model"),
                    "the model is empty",
                ));
            }
            if let (Some(min), Some(max)) = (rule.when.min_input_chars, rule.when.max_input_chars) {
                if min > max {
                    problems.push(FieldProblem::invalid(
                        format!("rules[{i}].when"),
                        format!("min_input_chars {min} is above max_input_chars {max}; the rule could never hold"),
                    ));
                }
            }
        }
        if c.default.as_deref().is_some_and(|d| d.trim().is_empty()) {
            problems.push(FieldProblem::invalid("default", "the model is empty"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Router {
            rules: c
                .rules
                .into_iter()
                .map(|r| Rule {
                    when: r.when,
                    model: r.model,
                })
                .collect(),
            default: c.default,
        })
    }

    /// Every model this router may pick.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .map(|r| r.model.as_str())
            .chain(self.default.as_deref())
    }

    /// The model the rules pick for this request, if any.
    pub fn pick(&self, body: &Body, facts: &RequestFacts<'_>) -> Option<&str> {
        let mut f = Facts {
            body,
            operation: facts.operation,
            metadata_raw: facts.metadata,
            input_chars: None,
            has_images: None,
            metadata: None,
        };
        self.rules
            .iter()
            .find(|r| r.when.holds(&mut f))
            .map(|r| r.model.as_str())
            .or(self.default.as_deref())
    }

    pub fn apply(&self, body: &mut Body, facts: &RequestFacts<'_>) {
        let Some(model) = self.pick(body, facts) else {
            return;
        };
        body.insert("model", Value::String(model.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn router() -> Router {
        Router::compile(&json!({
            "rules": [
                {"when": {"metadata": {"tier": "free"}}, "model": "cheap"},
                {"when": {"has_images": true}, "model": "vision"},
                {"when": {"has_tools": true, "max_input_chars": 100}, "model": "tools-small"},
                {"when": {"min_input_chars": 20}, "model": "long"}
            ],
            "default": "fallback"
        }))
        .expect("valid config")
    }

    /// A body as the proxy reads it: from the client's bytes.
    fn raw(v: &Value) -> Body {
        Body::parse(serde_json::to_vec(v).unwrap_or_default()).expect("an object")
    }

    fn pick(body: Value, op: Operation, metadata: Option<&str>) -> Option<String> {
        let facts = RequestFacts {
            operation: op,
            metadata: metadata.map(str::as_bytes),
        };
        router().pick(&raw(&body), &facts).map(str::to_string)
    }

    fn chat(content: Value) -> Value {
        json!({"model": "m", "messages": [{"role": "user", "content": content}]})
    }

    #[test]
    fn the_first_rule_that_holds_wins() {
        let body = chat(json!([{"type": "image_url", "image_url": {"url": "u"}}]));
        assert_eq!(
            pick(body.clone(), Operation::Chat, None).as_deref(),
            Some("vision")
        );
        assert_eq!(
            pick(body, Operation::Chat, Some(r#"{"tier": "free"}"#)).as_deref(),
            Some("cheap")
        );
    }

    #[test]
    fn every_condition_of_a_rule_must_hold() {
        let mut body = chat(json!("x".repeat(150)));
        body["tools"] = json!([{"type": "function"}]);
        // Tools, but over 100 chars: the tools rule fails, the long rule holds.
        assert_eq!(pick(body, Operation::Chat, None).as_deref(), Some("long"));
        let mut body = chat(json!("short"));
        body["tools"] = json!([{"type": "function"}]);
        assert_eq!(
            pick(body, Operation::Chat, None).as_deref(),
            Some("tools-small")
        );
    }

    #[test]
    fn none_holding_takes_the_default_or_keeps_the_model() {
        assert_eq!(
            pick(chat(json!("hi")), Operation::Chat, Some("not json")).as_deref(),
            Some("fallback")
        );
        let r = Router::compile(&json!({"rules": [{"when": {"has_tools": true}, "model": "t"}]}))
            .expect("valid config");
        let mut body = raw(&chat(json!("hi")));
        r.apply(
            &mut body,
            &RequestFacts {
                operation: Operation::Chat,
                metadata: None,
            },
        );
        assert_eq!(body.to_value()["model"], "m");
    }

    #[test]
    fn apply_writes_model_in_anthropic_bodies_too() {
        let mut body = raw(
            &json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}),
        );
        router().apply(
            &mut body,
            &RequestFacts {
                operation: Operation::Messages,
                metadata: None,
            },
        );
        assert_eq!(body.to_value()["model"], "vision");
    }

    #[test]
    fn config_mistakes_are_named() {
        let problems =
            Router::compile(&json!({"rules": [{"when": {"has_tool": true}, "model": "x"}]}))
                .unwrap_err();
        assert_eq!(problems[0].field, "rules[0].when.has_tool");
        assert!(problems[0]
            .problem
            .to_string()
            .contains("unknown field `has_tool`"));
        let problems = Router::compile(&json!({"rules": [{"when": {"min_input_chars": 9, "max_input_chars": 1}, "model": ""}]})).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["rules[0].model", "rules[0].when"]);
        assert!(Router::compile(&json!({})).is_err());
    }
}
