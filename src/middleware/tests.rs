//! The pipeline as the proxy sees it: building from calls (every validation rule and its
//! message) and running each phase.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;

fn call(name: &str, config: Value) -> MiddlewareCall {
    MiddlewareCall {
        name: name.into(),
        config_type: None,
        config: Some(config),
        config_id: None,
    }
}

fn by_id(name: &str, id: &str) -> MiddlewareCall {
    MiddlewareCall {
        name: name.into(),
        config_type: None,
        config: None,
        config_id: Some(id.into()),
    }
}

/// A body as the proxy reads it: from the client's bytes.
fn raw(v: Value) -> Body {
    Body::parse(serde_json::to_vec(&v).unwrap_or_default()).expect("an object")
}

fn no_configs() -> BTreeMap<String, MiddlewareConfigEntry> {
    BTreeMap::new()
}

fn errors(
    request: &[MiddlewareCall],
    response: &[MiddlewareCall],
    post: &[MiddlewareCall],
) -> Vec<String> {
    match Pipelines::build(request, response, post, &no_configs()) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn an_unknown_name_lists_the_known_ones() {
    let e = errors(&[call("guardrail", json!({}))], &[], &[]);
    assert_eq!(
        e,
        [
            r#"request_middleware[0].name: middleware "guardrail" is unknown; use "set-params", "system-prompt", "guard", "router", "redact", "headers", "webhook" or "log""#
        ]
    );
}

#[test]
fn a_middleware_in_the_wrong_phase_says_where_it_belongs() {
    let e = errors(
        &[],
        &[call("guard", json!({"deny": ["x"]}))],
        &[call("redact", json!({}))],
    );
    assert_eq!(
        e,
        [
            r#"response_middleware[0].name: "guard" is a request middleware; move it to request_middleware"#,
            r#"post_response_middleware[0].name: "redact" is a response middleware; move it to response_middleware"#,
        ]
    );
}

#[test]
fn config_type_must_be_the_middlewares() {
    let mut c = call("log", json!({}));
    c.config_type = Some("guard_config".into());
    let e = errors(&[], &[], &[c]);
    assert_eq!(
        e,
        [
            r#"post_response_middleware[0].config_type: config_type "guard_config" is not the one of "log"; use "log_config" (or leave config_type out)"#
        ]
    );
    let mut c = call("log", json!({}));
    c.config_type = Some("log_config".into());
    assert!(errors(&[], &[], &[c]).is_empty());
}

#[test]
fn exactly_one_of_config_and_config_id() {
    let mut both = call("log", json!({}));
    both.config_id = Some("team/log".into());
    let mut neither = call("log", json!({}));
    neither.config = None;
    let e = errors(&[], &[], &[both, neither]);
    assert_eq!(
        e,
        [
            "post_response_middleware[0]: give either config or config_id, not both",
            "post_response_middleware[1]: give its configuration, inline as config or by reference as config_id",
        ]
    );
}

#[test]
fn config_ids_resolve_into_middleware_configs() {
    let mut configs = BTreeMap::new();
    configs.insert(
        "team/strict".to_string(),
        MiddlewareConfigEntry {
            config_type: "guard_config".into(),
            config: json!({"deny": ["(?i)password"], "message": "no secrets"}),
        },
    );
    configs.insert(
        "team/bad".to_string(),
        MiddlewareConfigEntry {
            config_type: "guard_config".into(),
            config: json!({"deny": ["(unclosed"]}),
        },
    );
    let p = Pipelines::build(&[by_id("guard", "team/strict")], &[], &[], &configs).expect("valid");
    let mut body =
        raw(json!({"model": "m", "messages": [{"role": "user", "content": "my PASSWORD is"}]}));
    let facts = RequestFacts {
        operation: Operation::Chat,
        metadata: None,
    };
    assert_eq!(
        p.run_request(&mut body, &facts).map_err(|b| b.message),
        Err("no secrets".to_string())
    );

    let e: Vec<String> = Pipelines::build(
        &[
            by_id("guard", "team/bad"),
            by_id("guard", "team/none"),
            by_id("router", "team/strict"),
        ],
        &[],
        &[],
        &configs,
    )
    .unwrap_err()
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(e.len(), 3);
    assert!(e[0].starts_with(r#"request_middleware[0]: middleware_configs["team/bad"].config.deny[0]: invalid regular expression "(unclosed""#), "{}", e[0]);
    assert_eq!(
        e[1],
        r#"request_middleware[1].config_id: config_id "team/none" is not in middleware_configs (known: "team/bad", "team/strict")"#
    );
    assert_eq!(
        e[2],
        r#"request_middleware[2]: middleware_configs["team/strict"].config_type: config_type "guard_config" is not the one of "router"; use "router_config" (or leave config_type out)"#
    );
}

#[test]
fn config_errors_carry_the_path_of_the_bad_key() {
    let e = errors(
        &[
            call("set-params", json!({"set": {}, "defualts": {}})),
            call(
                "router",
                json!({"rules": [{"when": {"has_tools": "yes"}, "model": "x"}]}),
            ),
        ],
        &[],
        &[],
    );
    assert_eq!(e.len(), 2);
    assert!(
        e[0].starts_with("request_middleware[0].config.defualts: unknown field `defualts`"),
        "{}",
        e[0]
    );
    assert!(
        e[1].starts_with("request_middleware[1].config.rules[0].when.has_tools: invalid type"),
        "{}",
        e[1]
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let e = errors(
        &[
            call("nope", json!({})),
            call("guard", json!({"deny": ["("]})),
        ],
        &[call("headers", json!({"set": {"content-length": "1"}}))],
        &[],
    );
    assert_eq!(e.len(), 3);
}

#[test]
fn an_empty_pipeline_is_empty() {
    let p = Pipelines::build(&[], &[], &[], &no_configs()).expect("valid");
    assert!(p.is_empty() && !p.has_request() && !p.has_response() && !p.has_post());
    assert!(p.stream_redactor(Operation::Chat).is_none());
}

#[test]
fn the_request_phase_runs_in_list_order() {
    let p = Pipelines::build(
        &[
            call("set-params", json!({"set": {"temperature": 0}, "defaults": {"max_tokens": 50}})),
            call("system-prompt", json!({"text": "Be brief. Call me at 555-1234."})),
            // Runs after system-prompt, so it also rewrites the prompt just added.
            call("guard", json!({"redact": [{"pattern": r"\d{3}-\d{4}", "replacement": "[PHONE]"}]})),
            call("router", json!({"rules": [{"when": {"metadata": {"tier": "pro"}}, "model": "openai/gpt-4o"}]})),
        ],
        &[],
        &[],
        &no_configs(),
    )
    .expect("valid");
    let mut body = raw(
        json!({"model": "smart", "max_tokens": 9, "messages": [{"role": "user", "content": "hi 555-0000"}]}),
    );
    let facts = RequestFacts {
        operation: Operation::Chat,
        metadata: Some(br#"{"tier":"pro"}"#),
    };
    assert_eq!(p.run_request(&mut body, &facts), Ok(()));
    assert_eq!(
        serde_json::from_slice::<Value>(&body.to_vec()).expect("json"),
        json!({"model": "openai/gpt-4o", "max_tokens": 9, "temperature": 0, "messages": [
            {"role": "system", "content": "Be brief. Call me at [PHONE]."},
            {"role": "user", "content": "hi [PHONE]"}
        ]})
    );
    assert_eq!(
        p.describe()[0].1,
        ["set-params", "system-prompt", "guard", "router"]
    );
    assert_eq!(p.router_models(), ["openai/gpt-4o"]);
}

#[test]
fn a_block_stops_the_pipeline_and_says_where() {
    let p = Pipelines::build(
        &[
            call("guard", json!({"max_input_chars": 3})),
            call("set-params", json!({"set": {"model": "never"}})),
        ],
        &[],
        &[],
        &no_configs(),
    )
    .expect("valid");
    let mut body = raw(json!({"model": "m", "system": "long system text", "messages": []}));
    let facts = RequestFacts {
        operation: Operation::Messages,
        metadata: None,
    };
    let blocked = p.run_request(&mut body, &facts).unwrap_err();
    assert_eq!(blocked.index, 0);
    assert_eq!(blocked.reason, BlockReason::TooLong { chars: 16, max: 3 });
    assert_eq!(body.to_value()["model"], "m");
}

#[test]
fn response_phase_headers_and_redaction() {
    let p = Pipelines::build(
        &[],
        &[
            call("headers", json!({"set": {"x-filtered": "yes"}})),
            call("redact", json!({"patterns": [{"pattern": "secret"}]})),
        ],
        &[],
        &no_configs(),
    )
    .expect("valid");
    assert!(p.redacts());
    let mut headers = http::HeaderMap::new();
    p.apply_headers(&mut headers);
    assert_eq!(
        headers.get("x-filtered").map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );
    let mut body = json!({"content": [{"type": "text", "text": "a secret"}]});
    p.redact_body(&mut body, Operation::Messages);
    assert_eq!(body["content"][0]["text"], "a [REDACTED]");
    assert!(p.stream_redactor(Operation::Messages).is_some());
    assert!(p.stream_redactor(Operation::Embedding).is_none());
}

#[test]
fn known_names_are_derived_from_the_enum() {
    for kind in Kind::ALL {
        assert_eq!(Kind::parse(kind.name()), Some(kind));
        assert!(Kind::known_names().contains(kind.name()));
    }
}

#[test]
fn config_entries_are_checked_on_their_own() {
    let mut configs = BTreeMap::new();
    configs.insert(
        "team/odd".to_string(),
        MiddlewareConfigEntry {
            config_type: "guardrail_config".into(),
            config: json!({}),
        },
    );
    configs.insert(
        "team/prompt".to_string(),
        MiddlewareConfigEntry {
            config_type: "system_prompt_config".into(),
            config: json!({"txt": "x"}),
        },
    );
    configs.insert(
        "team/ok".to_string(),
        MiddlewareConfigEntry {
            config_type: "log_config".into(),
            config: json!({"level": "debug"}),
        },
    );
    let e: Vec<String> = check_config_entries(&configs)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(e.len(), 2);
    assert!(e[0].starts_with(r#"middleware_configs["team/odd"].config_type: config_type "guardrail_config" is unknown; use one of "set_params_config""#), "{}", e[0]);
    assert!(
        e[1].starts_with(r#"middleware_configs["team/prompt"].config.txt: unknown field `txt`"#),
        "{}",
        e[1]
    );
}
