//! The one place the config file's text becomes a document tree.
//!
//! Three readers, fastest first, each building the same tree:
//! - a file whose first non-blank character is `{` is read with the JSON parser: JSON is YAML,
//!   a generated config is usually written as JSON, and the JSON parser builds the tree several
//!   times faster than `serde_yaml` (BENCHMARKS.md, "100,000 virtual models");
//! - otherwise `block_yaml` reads the YAML most configs are written in (block and one-line flow
//!   collections, one-line scalars, comments) about five times faster than `serde_yaml`;
//! - whatever neither takes (anchors, block scalars, tags, multi-line scalars, and every
//!   malformed file) goes to `serde_yaml`, whose tree it is and whose error (with line and
//!   column) is the one reported.

use serde_yaml::Value;

/// The document in `text`; an empty or `null` document is an empty mapping. The error names
/// the file (`label`) and, from the YAML parser, the line and column.
pub fn parse(text: &str, label: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Mapping(Default::default()));
    }
    let value = match json(text).or_else(|| super::block_yaml::parse(text)) {
        Some(v) => v,
        None => serde_yaml::from_str(text).map_err(|e| format!("{label}: invalid YAML: {e}"))?,
    };
    Ok(match value {
        Value::Null => Value::Mapping(Default::default()),
        other => other,
    })
}

/// The document read as JSON, when it is a JSON object; None sends it to the YAML parser.
fn json(text: &str) -> Option<Value> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both parsers, each on its own (`parse` may pick either).
    fn both(text: &str) -> (Value, Value) {
        let from_json = json(text).expect("the text is JSON");
        let from_yaml: Value = serde_yaml::from_str(text).expect("the text is YAML");
        (from_json, from_yaml)
    }

    #[test]
    fn json_and_yaml_parsers_build_the_same_tree() {
        for text in [
            r#"{"server": {"port": 8080, "base_path": "/v1"}, "log": {"level": "info"}}"#,
            r#"{"virtual_models": [{"source": "a", "strategy": "round_robin",
                "targets": [{"model": "p/m", "weight": 2}, {"model": "p/n", "weight": 0.5}]}]}"#,
            r#"{"a": null, "b": true, "c": false, "d": -3, "e": 1.5e3, "f": 18446744073709551615,
                "g": "8080", "h": "", "i": [], "j": {}, "k": "x\ny\u00e9\"", "l": "${PORT:-1}"}"#,
            r#"{"nested": [[1, [2, {"x": [3]}]], {"y": {"z": null}}]}"#,
        ] {
            let (from_json, from_yaml) = both(text);
            assert_eq!(from_json, from_yaml, "{text}");
            assert_eq!(parse(text, "c.json").unwrap(), from_yaml, "{text}");
        }
    }

    #[test]
    fn the_example_config_as_json_parses_to_the_same_tree() {
        let yaml = include_str!("../../config.example.yaml");
        let from_yaml: Value = serde_yaml::from_str(yaml).unwrap();
        let text = serde_json::to_string_pretty(&from_yaml).unwrap();
        let from_json = json(&text).expect("JSON parser");
        assert_eq!(from_json, from_yaml);
    }

    #[test]
    fn yaml_flow_mappings_and_comments_fall_back_to_the_yaml_parser() {
        for text in [
            "{server: {port: 1}}",
            "{\"server\": {\"port\": 1}} # a comment",
            "{'server': {'port': 1}}",
        ] {
            assert!(json(text).is_none(), "{text}");
            let v = parse(text, "c.yaml").unwrap();
            assert_eq!(v["server"]["port"], Value::from(1), "{text}");
        }
    }

    #[test]
    fn duplicate_keys_are_rejected_by_either_parser() {
        let text = r#"{"server": {"port": 1}, "server": {"port": 2}}"#;
        assert!(json(text).is_none());
        let err = parse(text, "c.json").unwrap_err();
        assert!(
            err.starts_with("c.json: invalid YAML: ") && err.contains("duplicate"),
            "{err}"
        );
    }

    #[test]
    fn broken_json_reports_the_yaml_error_with_its_line() {
        let err = parse("{\"server\": {\"port\": 1}\n", "c.json").unwrap_err();
        assert!(err.starts_with("c.json: invalid YAML: "), "{err}");
        assert!(err.contains("line "), "{err}");
    }

    #[test]
    fn yaml_outside_the_fast_subset_is_read_by_serde_yaml() {
        let text = "base: &b {port: 1}\nserver: *b\nnote: |\n  two\n  lines\n";
        assert!(super::super::block_yaml::parse(text).is_none());
        let v = parse(text, "c.yaml").unwrap();
        assert_eq!(v["server"]["port"], Value::from(1));
        assert_eq!(v["note"], Value::from("two\nlines\n"));
    }

    #[test]
    fn yaml_in_the_fast_subset_builds_serde_yaml_tree() {
        let yaml = include_str!("../../config.example.yaml");
        let fast = super::super::block_yaml::parse(yaml).expect("the example is in the subset");
        let from_yaml: Value = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(fast, from_yaml);
        assert_eq!(parse(yaml, "config.example.yaml").unwrap(), from_yaml);
    }

    #[test]
    fn malformed_yaml_reports_the_yaml_error() {
        for (text, names) in [
            ("server:\n  port: 1\n bad: [\n", "line 3"),
            ("a: 'open\n", "line 1"),
            ("a: 1\na: 2\n", "duplicate entry with key \"a\""),
        ] {
            let err = parse(text, "c.yaml").unwrap_err();
            assert!(err.starts_with("c.yaml: invalid YAML: "), "{err}");
            assert!(err.contains(names), "{text:?}: {err}");
        }
    }

    #[test]
    fn empty_and_null_documents_are_empty_mappings() {
        for text in ["", "  \n", "null\n", "~\n"] {
            assert_eq!(
                parse(text, "c.yaml").unwrap(),
                Value::Mapping(Default::default()),
                "{text:?}"
            );
        }
    }
}
