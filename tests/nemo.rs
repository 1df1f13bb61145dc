//! Black-box tests of NeMo's workspace VirtualModel API and inference base URL: the real binary,
//! its SQLite store, and mock upstreams on 127.0.0.1 that show which model a request reached.

mod common;

use common::*;
use serde_json::{json, Value};

const WS: &str = "/apis/inference-gateway/v2/workspaces";
const REST: &str = "/admin/api/v1/virtual-models";

fn config(a: &Upstream, b: &Upstream) -> String {
    format!(
        "providers:\n{}{}middleware_configs:\n  default/log-info:\n    config_type: log_config\n    config: {{level: info}}\nvirtual_models:\n  - source: cfgws/pinned\n    target: a/m1\n",
        provider_block("a", a, &["m1", "m2"]),
        provider_block("b", b, &["m3"])
    )
}

fn start() -> (Upstream, Upstream, Gateway) {
    let a = Upstream::echo(&["m1", "m2"]);
    let b = Upstream::echo(&["m3"]);
    let g = Gateway::start(&config(&a, &b), &[]);
    (a, b, g)
}

fn vms(workspace: &str) -> String {
    format!("{WS}/{workspace}/virtual-models")
}

fn vm(workspace: &str, name: &str) -> String {
    format!("{WS}/{workspace}/virtual-models/{name}")
}

fn last_model(u: &Upstream) -> String {
    u.requests()
        .last()
        .map(|s| s.json()["model"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

fn names(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            format!(
                "{}/{}",
                v["workspace"].as_str().unwrap(),
                v["name"].as_str().unwrap()
            )
        })
        .collect()
}

fn models(v: &Value) -> Vec<String> {
    v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn create_is_201_callable_and_shown_in_the_rest_view() {
    let (a, b, g) = start();
    let r = g.call(
        "POST",
        &vms("team"),
        Some(&json!({
            "name": "fast",
            "project": "p1",
            "default_model_entity": "b/m3",
            "models": [{"model": "a/m1", "backend_format": "OPENAI_CHAT"}],
            "post_response_middleware": [{"name": "log", "config_type": "log_config", "config_id": "default/log-info"}]
        })),
        &[("x-modelgate-user-path", "/alice")],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    assert_eq!(v["workspace"], "team");
    assert_eq!(v["parent"], "team");
    assert_eq!(v["name"], "fast");
    assert_eq!(v["project"], "p1");
    assert_eq!(v["id"], v["entity_id"]);
    assert!(v["id"].as_str().is_some_and(|s| s.len() == 36), "{v}");
    assert_eq!(v["default_model_entity"], "b/m3");
    assert_eq!(models(&v), ["b/m3", "a/m1"]);
    assert_eq!(v["models"][1]["backend_format"], "OPENAI_CHAT");
    assert_eq!(v["autoprovisioned"], false);
    assert_eq!(v["created_by"], "/alice");
    assert_eq!(v["updated_by"], "/alice");
    assert_eq!(
        v["post_response_middleware"][0]["config_id"],
        "default/log-info"
    );
    assert_eq!(v["response_middleware"], json!([]));
    assert_eq!(v["override_proxy"], Value::Null);
    assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(r.header("etag").is_some());

    // Callable as workspace/name: the default first.
    let c = g.chat("team/fast");
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(last_model(&b), "m3");
    assert!(a.requests().is_empty());

    // The same entry in the REST view, in the priority strategy.
    let (s, body) = g.get(&format!("{REST}/team%2Ffast"));
    assert_eq!(s, 200, "{body}");
    let rest: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rest["origin"], "store");
    assert_eq!(rest["strategy"], "priority");
    assert_eq!(rest["id"], v["id"]);
    assert_eq!(rest["post_response_middleware"][0]["name"], "log");

    let got = g.call("GET", &vm("team", "fast"), None, &[]);
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["id"], v["id"]);

    let again = g.call(
        "POST",
        &vms("team"),
        Some(&json!({"name": "fast", "default_model_entity": "a/m2"})),
        &[],
    );
    assert_eq!(again.status, 409, "{}", again.body);
}

#[test]
fn create_refuses_what_the_gateway_cannot_honour_with_422() {
    let (_a, _b, g) = start();
    let post = |body: Value| g.call("POST", &vms("team"), Some(&body), &[]);
    let r = post(json!({"default_model_entity": "a/m1"}));
    assert_eq!(
        (r.status, r.json()["error"]["param"].clone()),
        (422, json!("name"))
    );
    let r = post(json!({"name": "x"}));
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["param"], "default_model_entity");
    let r =
        post(json!({"name": "x", "default_model_entity": "a/m1", "override_proxy": "custom.v1"}));
    assert_eq!(
        (r.status, r.json()["error"]["param"].clone()),
        (422, json!("override_proxy"))
    );
    let r = post(json!({"name": "x", "models": [{"model": "a/m1", "backend_format": "GRPC"}]}));
    assert_eq!(r.json()["error"]["param"], "models[0].backend_format");
    let r = post(json!({"name": "x", "default_model_entity": "a/m1", "modles": []}));
    assert_eq!(
        (r.status, r.json()["error"]["param"].clone()),
        (422, json!("modles"))
    );
    let r = post(json!({"name": "x", "default_model_entity": "a/m1",
        "response_middleware": [{"name": "redact", "config_type": "redact_config", "config_id": "default/none"}]}));
    assert_eq!(r.status, 422, "{}", r.body);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("store (source \"team/x\"): response_middleware[0].config_id \"default/none\" names no entry of middleware_configs (declared: default/log-info)"),
        "{msg}"
    );
    assert_eq!(
        r.json()["error"]["param"],
        "response_middleware[0].config_id"
    );
    let r = post(json!({"name": "x", "default_model_entity": "a/m1",
        "request_middleware": [{"name": "log", "config_type": "log_config", "config": {}, "config_id": "default/log-info"}]}));
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json()["error"]["param"],
        "request_middleware[0].config_id"
    );
    let r = post(json!({"name": "two words", "default_model_entity": "a/m1"}));
    assert_eq!(
        (r.status, r.json()["error"]["param"].clone()),
        (422, json!("name"))
    );
    let r = post(json!({"name": "x", "models": [{"model": " "}]}));
    assert_eq!(r.json()["error"]["param"], "models[0].model");
    // Nothing was written.
    assert_eq!(g.call("GET", &vm("team", "x"), None, &[]).status, 404);
}

#[test]
fn misuse_of_the_routes_gets_a_clear_error() {
    let (_a, _b, g) = start();
    let body = json!({"name": "x", "default_model_entity": "a/m1"});
    // "-" only lists.
    let r = g.call("GET", &vm("-", "x"), None, &[]);
    assert_eq!(r.status, 422);
    assert!(r.body.contains("only lists"), "{}", r.body);
    assert_eq!(g.call("POST", &vms("-"), Some(&body), &[]).status, 422);
    let r = g.call("PUT", &vm("w", "x"), Some(&body), &[]);
    assert_eq!(
        (r.status, r.header("allow")),
        (405, Some("GET, PATCH, DELETE"))
    );
    let r = g.call("GET", &format!("{}?filter[name]=x", vms("w")), None, &[]);
    assert_eq!(
        (r.status, r.json()["error"]["param"].clone()),
        (422, json!("filter"))
    );
    let r = g.call("GET", &format!("{}?page=0", vms("w")), None, &[]);
    assert_eq!(
        (r.status, r.json()["error"]["param"].clone()),
        (422, json!("page"))
    );
    let r = g.post_raw(&vms("w"), b"{nope", &[]);
    assert_eq!(r.status, 400);
    let r = g.call(
        "POST",
        &vms("w"),
        Some(&body),
        &[("x-modelgate-user-path", "/a/../b")],
    );
    assert_eq!(
        (r.status, r.error_code()),
        (400, "invalid_user_path".to_string())
    );
}

#[test]
fn list_pages_sorts_and_spans_workspaces() {
    let (_a, _b, g) = start();
    for name in ["c", "a", "b"] {
        let r = g.call(
            "POST",
            &vms("w"),
            Some(&json!({"name": name, "default_model_entity": "a/m1"})),
            &[],
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let list = |q: &str| {
        let (s, body) = g.get(&format!("{}{q}", vms("w")));
        assert_eq!(s, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let all = list("");
    assert_eq!(all["sort"], "-created_at");
    // Newest first, also within one second (the times shown are whole seconds).
    assert_eq!(names(&all), ["w/b", "w/a", "w/c"]);
    assert_eq!(names(&list("?sort=created_at")), ["w/c", "w/a", "w/b"]);
    assert_eq!(all["pagination"]["page_size"], 20);
    assert_eq!(all["pagination"]["total_results"], 3);
    assert_eq!(names(&list("?sort=name")), ["w/a", "w/b", "w/c"]);
    assert_eq!(names(&list("?sort=-name")), ["w/c", "w/b", "w/a"]);
    let p1 = list("?sort=name&page_size=2");
    assert_eq!(names(&p1), ["w/a", "w/b"]);
    assert_eq!(
        p1["pagination"],
        json!({"page": 1, "page_size": 2, "current_page_size": 2, "total_pages": 2, "total_results": 3})
    );
    let p2 = list("?sort=name&page_size=2&page=2");
    assert_eq!(names(&p2), ["w/c"]);
    assert_eq!(p2["pagination"]["current_page_size"], 1);
    let (s, body) = g.get(&format!("{}?sort=size", vms("w")));
    assert_eq!(s, 422);
    assert!(
        body.contains("created_at, updated_at, name, workspace"),
        "{body}"
    );

    // "-" spans every workspace: store rows, the config entry, the providers' passthroughs.
    let (_, body) = g.get(&format!("{}?sort=name&page_size=200", vms("-")));
    let every = names(&serde_json::from_str(&body).unwrap());
    for n in ["w/a", "cfgws/pinned", "a/m1", "a/m2", "b/m3"] {
        assert!(every.contains(&n.to_string()), "{n} missing from {every:?}");
    }
    let (_, body) = g.get(&format!(
        "{}?exclude_autoprovisioned=true&page_size=200",
        vms("-")
    ));
    let mine = names(&serde_json::from_str(&body).unwrap());
    assert_eq!(mine.len(), 4, "{mine:?}");
    assert!(!mine.contains(&"a/m1".to_string()));

    // A provider's workspace holds its models as passthroughs.
    let (_, body) = g.get(&format!("{}?sort=name", vms("a")));
    let a: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(names(&a), ["a/m1", "a/m2"]);
    assert_eq!(a["data"][0]["autoprovisioned"], true);
    assert_eq!(a["data"][0]["default_model_entity"], "a/m1");
    assert_eq!(a["data"][0]["request_middleware"], json!([]));
}

#[test]
fn patch_keeps_absent_fields_clears_nulls_and_empties_lists() {
    let (a, b, g) = start();
    let r = g.call(
        "POST",
        &vms("w"),
        Some(&json!({"name": "p", "project": "proj", "default_model_entity": "a/m1",
            "models": [{"model": "b/m3"}],
            "request_middleware": [{"name": "system-prompt", "config_type": "system_prompt_config", "config": {"text": "Be brief."}}]})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].clone();
    let patch = |body: Value, headers: &[(&str, &str)]| {
        g.call("PATCH", &vm("w", "p"), Some(&body), headers)
    };

    let v = patch(json!({}), &[("x-modelgate-user-path", "/bob")]);
    assert_eq!(v.status, 200, "{}", v.body);
    let v = v.json();
    assert_eq!(
        (v["project"].clone(), v["default_model_entity"].clone()),
        (json!("proj"), json!("a/m1"))
    );
    assert_eq!(v["request_middleware"][0]["name"], "system-prompt");
    assert_eq!(v["updated_by"], "/bob");
    assert_eq!(v["id"], id);

    let v = patch(json!({"project": null, "request_middleware": []}), &[]).json();
    assert_eq!(v["project"], Value::Null);
    assert_eq!(v["request_middleware"], json!([]));
    assert_eq!(models(&v), ["a/m1", "b/m3"]);

    // null clears the default; the other models serve in their order.
    let v = patch(json!({"default_model_entity": null}), &[]).json();
    assert_eq!(v["default_model_entity"], Value::Null);
    assert_eq!(models(&v), ["b/m3"]);
    let got = g.call("GET", &vm("w", "p"), None, &[]).json();
    assert_eq!(got["default_model_entity"], Value::Null);
    assert_eq!(g.chat("w/p").status, 200);
    assert_eq!(last_model(&b), "m3");
    // Changing the models keeps it without a default.
    let v = patch(
        json!({"models": [{"model": "b/m3"}, {"model": "a/m1"}]}),
        &[],
    )
    .json();
    assert_eq!(v["default_model_entity"], Value::Null);
    assert_eq!(models(&v), ["b/m3", "a/m1"]);
    // Clearing what is left is refused: a virtual model needs a model to send requests to.
    let one = g.call(
        "POST",
        &vms("w"),
        Some(&json!({"name": "only", "default_model_entity": "a/m1"})),
        &[],
    );
    assert_eq!(one.status, 201, "{}", one.body);
    let r = g.call(
        "PATCH",
        &vm("w", "only"),
        Some(&json!({"default_model_entity": null})),
        &[],
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.json()["error"]["param"], "default_model_entity");

    let v = patch(
        json!({"default_model_entity": "a/m2", "models": [{"model": "b/m3"}]}),
        &[],
    )
    .json();
    assert_eq!(models(&v), ["a/m2", "b/m3"]);
    assert_eq!(g.chat("w/p").status, 200);
    assert_eq!(last_model(&a), "m2");
    let v = patch(json!({"models": []}), &[]).json();
    assert_eq!(models(&v), ["a/m2"]);
    // A new default replaces the old one.
    let v = patch(json!({"default_model_entity": "b/m3"}), &[]).json();
    assert_eq!(models(&v), ["b/m3"]);

    assert_eq!(patch(json!({"override_proxy": null}), &[]).status, 200);
    let r = patch(json!({"override_proxy": "x.y"}), &[]);
    assert_eq!(r.status, 422);
    let r = patch(json!({"name": "other"}), &[]);
    assert_eq!(r.status, 422);

    // If-Match: the current etag passes, a stale one is 409.
    let got = g.call("GET", &vm("w", "p"), None, &[]);
    let etag = got.header("etag").unwrap().to_string();
    assert_eq!(
        patch(json!({"project": "x"}), &[("if-match", &etag)]).status,
        200
    );
    let stale = patch(json!({"project": "y"}), &[("if-match", &etag)]);
    assert_eq!(stale.status, 409, "{}", stale.body);
    assert_eq!(
        g.call("GET", &vm("w", "p"), None, &[]).json()["project"],
        "x"
    );

    assert_eq!(
        g.call("PATCH", &vm("w", "nope"), Some(&json!({})), &[])
            .status,
        404
    );

    // A rename through the REST API keeps the id.
    let r = g.call(
        "PATCH",
        &format!("{REST}/w%2Fp"),
        Some(&json!({"source": "w/renamed"})),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = g.call("GET", &vm("w", "renamed"), None, &[]);
    assert_eq!(v.status, 200);
    assert_eq!(v.json()["id"], id);
    assert_eq!(g.call("GET", &vm("w", "p"), None, &[]).status, 404);
}

#[test]
fn config_entries_and_passthroughs_are_read_only() {
    let (a, _b, g) = start();
    let v = g.call("GET", &vm("cfgws", "pinned"), None, &[]);
    assert_eq!(v.status, 200, "{}", v.body);
    assert_eq!(v.json()["default_model_entity"], "a/m1");
    for method in ["PATCH", "DELETE"] {
        let r = g.call(method, &vm("cfgws", "pinned"), Some(&json!({})), &[]);
        assert_eq!(r.status, 409, "{method}: {}", r.body);
        assert_eq!(r.error_code(), "managed_by_config");
        assert!(r.body.contains("virtual_models[0]"), "{}", r.body);
    }
    let post = g.call(
        "POST",
        &vms("cfgws"),
        Some(&json!({"name": "pinned", "default_model_entity": "a/m2"})),
        &[],
    );
    assert_eq!(post.status, 409);

    // A passthrough: listed, read-only, shadowed by a POST of the same name.
    let p = g.call("GET", &vm("a", "m1"), None, &[]);
    assert_eq!(p.status, 200);
    assert_eq!(p.json()["autoprovisioned"], true);
    for method in ["PATCH", "DELETE"] {
        let r = g.call(method, &vm("a", "m1"), Some(&json!({})), &[]);
        assert_eq!(r.status, 409, "{method}: {}", r.body);
        assert_eq!(r.error_code(), "autoprovisioned");
        assert!(r.body.contains("POST a virtual model named"), "{}", r.body);
    }
    // a/m1 is the config entry's target: once shadowed, the entry still reaches the concrete
    // model, and callers naming a/m1 reach the shadow's.
    let r = g.call(
        "POST",
        &vms("a"),
        Some(&json!({"name": "m1", "default_model_entity": "a/m2"})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["autoprovisioned"], false);
    assert_eq!(g.chat("a/m1").status, 200);
    assert_eq!(last_model(&a), "m2");
    let pinned = g.chat("cfgws/pinned");
    assert_eq!(pinned.status, 200, "{}", pinned.body);
    assert_eq!(pinned.header("x-modelgate-model"), Some("a/m1"));
    assert_eq!(last_model(&a), "m1");
    assert_eq!(g.call("DELETE", &vm("a", "m1"), None, &[]).status, 204);
    assert_eq!(
        g.call("GET", &vm("a", "m1"), None, &[]).json()["autoprovisioned"],
        true
    );
    assert_eq!(g.chat("a/m1").status, 200);
    assert_eq!(last_model(&a), "m1");
}

#[test]
fn rest_entries_show_here_and_a_delete_here_removes_them_everywhere() {
    let (_a, b, g) = start();
    let r = g.call(
        "POST",
        REST,
        Some(&json!({"source": "rest/x", "target": "b/m3", "description": "d"})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = g.call("GET", &vm("rest", "x"), None, &[]);
    assert_eq!(v.status, 200);
    assert_eq!(v.json()["default_model_entity"], "b/m3");
    // A NeMo PATCH keeps what only the REST API can say.
    let p = g.call(
        "PATCH",
        &vm("rest", "x"),
        Some(&json!({"project": "q"})),
        &[],
    );
    assert_eq!(p.status, 200, "{}", p.body);
    let (_, body) = g.get(&format!("{REST}/rest%2Fx"));
    let rest: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (rest["description"].clone(), rest["project"].clone()),
        (json!("d"), json!("q"))
    );
    assert_eq!(g.chat("rest/x").status, 200);
    assert_eq!(last_model(&b), "m3");

    assert_eq!(g.call("DELETE", &vm("rest", "x"), None, &[]).status, 204);
    assert_eq!(g.get(&format!("{REST}/rest%2Fx")).0, 404);
    assert_eq!(g.call("GET", &vm("rest", "x"), None, &[]).status, 404);
    assert_eq!(g.call("DELETE", &vm("rest", "x"), None, &[]).status, 404);
    assert_eq!(g.chat("rest/x").status, 404);
}

#[test]
fn the_api_takes_the_admin_key() {
    let a = Upstream::echo(&["m1", "m2"]);
    let b = Upstream::echo(&["m3"]);
    let g = Gateway::start(&config(&a, &b), &[("MODELGATE_MASTER_KEY", "sekret")]);
    assert_eq!(g.call("GET", &vms("-"), None, &[]).status, 401);
    let post = g.call(
        "POST",
        &vms("w"),
        Some(&json!({"name": "k", "default_model_entity": "a/m1"})),
        &[],
    );
    assert_eq!(post.status, 401);
    let auth = [("authorization", "Bearer sekret")];
    assert_eq!(g.call("GET", &vms("-"), None, &auth).status, 200);
    let post = g.call(
        "POST",
        &vms("w"),
        Some(&json!({"name": "k", "default_model_entity": "a/m1"})),
        &auth,
    );
    assert_eq!(post.status, 201, "{}", post.body);
}

#[test]
fn the_nemo_inference_base_url_serves_the_plain_api() {
    let (_a, b, g) = start();
    let r = g.call(
        "POST",
        &vms("team"),
        Some(&json!({"name": "fast", "default_model_entity": "b/m3"})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let base = format!("{WS}/team/openai/-/v1");
    let c = g.post(
        &format!("{base}/chat/completions"),
        &json!({"model": "team/fast", "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    );
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.header("x-modelgate-virtual-model"), Some("team/fast"));
    assert_eq!(last_model(&b), "m3");
    let (s, body) = g.get(&format!("{base}/models"));
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("\"team/fast\""), "{body}");
}

#[test]
fn a_config_id_naming_no_middleware_config_stops_start_up() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&["m3"]);
    let cfg = format!(
        "{}  - source: w/bad\n    target: a/m1\n    post_response_middleware:\n      - {{name: log, config_type: log_config, config_id: default/missing}}\n",
        config(&a, &b)
    );
    let e = Gateway::try_start(&cfg, &[])
        .err()
        .expect("start-up must fail");
    assert!(
        e.contains("virtual_models[1] (source \"w/bad\"): post_response_middleware[0].config_id \"default/missing\" names no entry of middleware_configs"),
        "{e}"
    );
}

#[test]
fn check_reports_a_middleware_call_with_both_config_and_config_id() {
    let a = Upstream::echo(&["m1"]);
    let b = Upstream::echo(&["m3"]);
    let env = r#"[{"source": "w/env", "target": "a/m1", "request_middleware": [{"name": "log", "config_type": "log_config", "config": {}, "config_id": "default/log-info"}]}]"#;
    let (code, out) = run_cli(&config(&a, &b), &["check"], &[("VIRTUAL_MODELS", env)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("VIRTUAL_MODELS[0] (source \"w/env\"): request_middleware[0].config_id: config and config_id are both set; give exactly one of them"),
        "{out}"
    );
}
