//! Black-box tests of callers and access (SPEC section 4): the master key, user paths and
//! access policies, against the real binary and mock upstreams on 127.0.0.1.

mod common;

use common::*;
use serde_json::json;

fn two(a: &Upstream, b: &Upstream, vms: &str) -> String {
    format!(
        "providers:\n{}{}virtual_models:\n{vms}",
        provider_block("a", a, &["m1", "m2"]),
        provider_block("b", b, &["m3"])
    )
}

fn chat_as(g: &Gateway, model: &str, headers: &[(&str, &str)]) -> Resp {
    g.post(
        "/v1/chat/completions",
        &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        headers,
    )
}

fn listed(g: &Gateway, headers: &[(&str, &str)]) -> Vec<String> {
    let mut r = Gateway::agent().get(&g.url("/v1/models"));
    for (k, v) in headers {
        r = r.set(k, v);
    }
    let v: serde_json::Value = r.call().unwrap().into_json().unwrap();
    let mut ids: Vec<String> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn the_master_key_is_required_once_set() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&[]);
    let g = Gateway::start(&two(&a, &b, "  []\n"), &[("MODELGATE_MASTER_KEY", "k-123")]);
    let none = chat_as(&g, "a/m1", &[]);
    assert_eq!(
        (none.status, none.error_code().as_str()),
        (401, "missing_api_key")
    );
    assert_eq!(none.json()["error"]["type"], "authentication_error");
    let wrong = chat_as(&g, "a/m1", &[("authorization", "Bearer k-124")]);
    assert_eq!(
        (wrong.status, wrong.error_code().as_str()),
        (401, "invalid_api_key")
    );
    let ok = chat_as(&g, "a/m1", &[("authorization", "Bearer k-123")]);
    assert_eq!(ok.status, 200, "{}", ok.body);
    // The key is the gateway's, never forwarded.
    assert_eq!(
        a.requests()[0].header("authorization"),
        Some("Bearer sk-test-a")
    );
    // x-api-key counts on the Anthropic route only.
    let elsewhere = chat_as(&g, "a/m1", &[("x-api-key", "k-123")]);
    assert_eq!(elsewhere.status, 401);
    let messages = g.post(
        "/v1/messages",
        &json!({"model": "a/m1", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        &[("x-api-key", "k-123")],
    );
    assert_ne!(messages.status, 401, "{}", messages.body);
    let bad_messages = g.post(
        "/v1/messages",
        &json!({"model": "a/m1"}),
        &[("x-api-key", "nope")],
    );
    assert_eq!(bad_messages.status, 401);
    assert_eq!(bad_messages.json()["type"], "error");
    // The routes under it are the Anthropic API's too: its key, its error shape.
    let unknown = g.post(
        "/v1/messages/batches",
        &json!({"model": "a/m1"}),
        &[("x-api-key", "k-123")],
    );
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert_eq!(unknown.json()["type"], "error");
    assert_eq!(unknown.json()["error"]["type"], "not_found_error");
    // Liveness stays open.
    assert_eq!(g.get("/health").0, 200);
    assert_eq!(g.get("/v1/models").0, 401);
}

#[test]
fn gomodels_master_key_variable_is_accepted() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&[]);
    let g = Gateway::start(&two(&a, &b, "  []\n"), &[("GOMODEL_MASTER_KEY", "gm-key")]);
    assert_eq!(chat_as(&g, "a/m1", &[]).status, 401);
    assert_eq!(
        chat_as(&g, "a/m1", &[("authorization", "Bearer gm-key")]).status,
        200
    );
}

#[test]
fn policies_match_whole_segments_and_the_most_specific_wins() {
    let a = Upstream::echo(&["m1", "m2"]);
    let b = Upstream::echo(&["m3"]);
    let vms = "  - source: a/\n    user_paths: [/team]\n  - source: a/m2\n    user_paths: [/]\n  - source: m3\n    enabled: false\n";
    let g = Gateway::start(&two(&a, &b, vms), &[]);
    let up = |p: &'static str| [("x-modelgate-user-path", p)];
    // Provider policy: /team covers /team and /team/x, not /team-x, nor callers without a path.
    assert_eq!(chat_as(&g, "a/m1", &up("/team")).status, 200);
    assert_eq!(chat_as(&g, "a/m1", &up("team//x/")).status, 200);
    let sibling = chat_as(&g, "a/m1", &up("/team-x"));
    assert_eq!(
        (sibling.status, sibling.error_code().as_str()),
        (403, "model_access_denied")
    );
    assert_eq!(chat_as(&g, "a/m1", &[]).status, 403);
    // The exact policy beats the provider one; "/" covers callers without a path too.
    assert_eq!(chat_as(&g, "a/m2", &[]).status, 200);
    assert_eq!(chat_as(&g, "a/m2", &up("/elsewhere")).status, 200);
    // A disabled bare-id policy turns the model off for everyone.
    let off = chat_as(&g, "b/m3", &up("/team"));
    assert_eq!(
        (off.status, off.error_code().as_str()),
        (403, "model_access_denied")
    );
    assert!(b.requests().is_empty());
    // Denied and disabled models are absent from that caller's listing.
    assert_eq!(listed(&g, &up("/team")), vec!["a/m1", "a/m2"]);
    assert_eq!(listed(&g, &[]), vec!["a/m2"]);
}

#[test]
fn an_empty_user_paths_list_in_the_config_is_no_restriction() {
    let a = Upstream::echo(&["m1", "m2"]);
    let b = Upstream::echo(&["m3"]);
    // A redirect and an access policy, each with `user_paths: []`.
    let vms =
        "  - {source: smart, target: a/m1, user_paths: []}\n  - {source: b/m3, user_paths: []}\n";
    let g = Gateway::start(&two(&a, &b, vms), &[]);
    for headers in [&[][..], &[("x-modelgate-user-path", "/team/x")][..]] {
        let r = chat_as(&g, "smart", headers);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-modelgate-virtual-model"), Some("smart"));
        assert_eq!(chat_as(&g, "b/m3", headers).status, 200);
    }
}

#[test]
fn user_path_header_spellings_and_errors() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&[]);
    let vms = "  - source: a/m1\n    user_paths: [/team]\n";
    let g = Gateway::start(&two(&a, &b, vms), &[]);
    assert_eq!(
        chat_as(&g, "a/m1", &[("x-gomodel-user-path", "/team")]).status,
        200
    );
    for bad in ["/a/../team", "/team/./x", "/team:x"] {
        let r = chat_as(&g, "a/m1", &[("x-modelgate-user-path", bad)]);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_user_path"),
            "{bad}"
        );
    }
    let custom = Gateway::start(&two(&a, &b, vms), &[("USER_PATH_HEADER", "X-Team-Path")]);
    assert_eq!(
        chat_as(&custom, "a/m1", &[("x-team-path", "/team/a")]).status,
        200
    );
    assert_eq!(
        chat_as(&custom, "a/m1", &[("x-team-path", "/other")]).status,
        403
    );
    // With a configured name the default spellings are not read: a client cannot give itself
    // a path past the proxy that sets the configured header.
    for spelling in ["x-modelgate-user-path", "x-gomodel-user-path"] {
        assert_eq!(
            chat_as(&custom, "a/m1", &[(spelling, "/team")]).status,
            403,
            "{spelling}"
        );
    }
    // No spelling of the caller's path reaches the upstream.
    assert_eq!(
        chat_as(&g, "a/m1", &[("x-gomodel-user-path", "/team")]).status,
        200
    );
    let seen = a.requests();
    assert!(!seen.is_empty());
    for name in [
        "x-team-path",
        "x-modelgate-user-path",
        "x-gomodel-user-path",
    ] {
        assert!(seen.iter().all(|s| s.header(name).is_none()), "{name}");
    }
}

#[test]
fn models_can_be_off_by_default() {
    let a = Upstream::echo(&["m1", "m2"]);
    let b = Upstream::echo(&[]);
    let vms = "  - source: a/m1\n";
    let g = Gateway::start(&two(&a, &b, vms), &[("MODELS_ENABLED_BY_DEFAULT", "false")]);
    assert_eq!(chat_as(&g, "a/m1", &[]).status, 200);
    let off = chat_as(&g, "a/m2", &[]);
    assert_eq!(
        (off.status, off.error_code().as_str()),
        (403, "model_access_denied")
    );
    assert_eq!(listed(&g, &[]), vec!["a/m1"]);
}
