//! Black-box tests of the admin API and store: the real binary, its SQLite file, and mock
//! upstreams on 127.0.0.1 that show which model a request reached.

mod common;

use common::*;
use serde_json::{json, Value};

const VMS: &str = "/admin/api/v1/virtual-models";

fn config(a: &Upstream, b: &Upstream) -> String {
    format!(
        "providers:\n{}{}virtual_models:\n  - source: cfg-alias\n    target: a/m1\n",
        provider_block("a", a, &["m1", "m2"]),
        provider_block("b", b, &["m3"])
    )
}

fn env_vms() -> (&'static str, &'static str) {
    (
        "VIRTUAL_MODELS",
        r#"[{"source":"env-alias","target":"b/m3"}]"#,
    )
}

fn start() -> (Upstream, Upstream, Gateway) {
    let a = Upstream::echo(&["m1", "m2"]);
    let b = Upstream::echo(&["m3"]);
    let g = Gateway::start(&config(&a, &b), &[env_vms()]);
    (a, b, g)
}

fn path(source: &str) -> String {
    let enc: String = source
        .bytes()
        .map(|c| match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (c as char).to_string(),
            _ => format!("%{c:02X}"),
        })
        .collect();
    format!("{VMS}/{enc}")
}

fn upstream_models(u: &Upstream) -> Vec<String> {
    u.requests()
        .iter()
        .map(|s| s.json()["model"].as_str().unwrap_or("").to_string())
        .collect()
}

fn entry<'a>(list: &'a Value, source: &str, origin: &str) -> Option<&'a Value> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == source && e["origin"] == origin)
}

#[test]
fn create_is_201_with_etag_and_live_on_the_next_request() {
    let (a, b, g) = start();
    assert_eq!(g.chat("team-fast").status, 404);
    let r = g.call(
        "POST",
        VMS,
        Some(&json!({"source": "team-fast", "target": "b/m3", "description": "for the team"})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let etag = r.header("etag").unwrap().to_string();
    assert_eq!(
        r.header("location"),
        Some("/admin/api/v1/virtual-models/team-fast")
    );
    let v = r.json();
    assert_eq!(v["origin"], "store");
    assert_eq!(v["managed"], false);
    assert_eq!(v["kind"], "redirect");
    assert_eq!(v["valid"], true);
    assert_eq!(format!("\"{}\"", v["etag"].as_str().unwrap()), etag);
    assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["description"], "for the team");

    let c = g.chat("team-fast");
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.header("x-modelgate-virtual-model"), Some("team-fast"));
    assert_eq!(upstream_models(&b), vec!["m3"]);
    assert!(a.requests().is_empty());

    let one = g.call("GET", &path("team-fast"), None, &[]);
    assert_eq!(one.status, 200);
    assert_eq!(one.header("etag"), Some(etag.as_str()));
    let list = g.call("GET", VMS, None, &[]).json();
    assert!(entry(&list, "team-fast", "store").is_some());
    let cfg = entry(&list, "cfg-alias", "config").unwrap();
    assert_eq!(cfg["managed"], true);
    assert_eq!(cfg["kind"], "redirect");
    assert!(cfg["location"]
        .as_str()
        .unwrap()
        .ends_with("config.yaml: virtual_models[0]"));
    assert_eq!(entry(&list, "env-alias", "env").unwrap()["managed"], true);
}

#[test]
fn post_onto_an_existing_source_is_409() {
    let (_a, _b, g) = start();
    let body = json!({"source": "dup", "target": "a/m1"});
    assert_eq!(g.call("POST", VMS, Some(&body), &[]).status, 201);
    let again = g.call("POST", VMS, Some(&body), &[]);
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (409, "already_exists")
    );
    // Sources are unique regardless of case.
    let upper = g.call(
        "POST",
        VMS,
        Some(&json!({"source": "DUP", "target": "a/m2"})),
        &[],
    );
    assert_eq!(upper.status, 409);
}

#[test]
fn put_creates_with_201_and_replaces_the_whole_entry_with_200() {
    let (a, _b, g) = start();
    let r = g.call(
        "PUT",
        &path("openai/smart"),
        Some(&json!({"target": "a/m1", "description": "first", "slug": "smart-v1"})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["source"], "openai/smart");
    let r = g.call(
        "PUT",
        &path("openai/smart"),
        Some(&json!({"target": "a/m2"})),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["target"], json!({"model": "a/m2"}));
    assert!(v.get("description").is_none(), "{v}");
    assert!(v.get("slug").is_none(), "{v}");
    assert_eq!(g.chat("openai/smart").status, 200);
    assert_eq!(upstream_models(&a), vec!["m2"]);
    // Unencoded slashes in the path name the same row.
    let same = g.call("GET", &format!("{VMS}/openai/smart"), None, &[]);
    assert_eq!(same.status, 200);
    let mismatch = g.call(
        "PUT",
        &path("openai/smart"),
        Some(&json!({"source": "other", "target": "a/m1"})),
        &[],
    );
    assert_eq!(mismatch.status, 422);
    assert_eq!(mismatch.json()["error"]["param"], "source");
}

#[test]
fn patch_keeps_absent_fields_clears_nulls_and_empties_lists() {
    let (_a, _b, g) = start();
    g.call(
        "POST",
        VMS,
        Some(
            &json!({"source": "p", "targets": ["a/m1", "a/m2"], "description": "d",
                     "user_paths": ["/team"], "model_types": ["chat"]}),
        ),
        &[],
    );
    let r = g.call(
        "PATCH",
        &path("p"),
        Some(&json!({"description": null, "user_paths": [], "strategy": "priority"})),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert!(v.get("description").is_none(), "{v}");
    assert_eq!(v["user_paths"], json!([]));
    assert_eq!(v["strategy"], "priority");
    assert_eq!(v["targets"], json!([{"model": "a/m1"}, {"model": "a/m2"}]));
    assert_eq!(v["model_types"], json!(["chat"]));
    // An empty user_paths list is no restriction, exactly like an absent one: callers with and
    // without a path get the redirect.
    let with_path = [("x-modelgate-user-path", "/elsewhere")];
    for headers in [&[][..], &with_path[..]] {
        let r = g.post(
            "/v1/chat/completions",
            &json!({"model": "p", "messages": [{"role": "user", "content": "hi"}]}),
            headers,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-modelgate-virtual-model"), Some("p"));
    }
    let r = g.call("PATCH", &path("p"), Some(&json!({"user_paths": null})), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(g.chat("p").status, 200);
}

#[test]
fn a_stale_if_match_is_409_and_the_current_one_passes() {
    let (_a, _b, g) = start();
    let r = g.call(
        "POST",
        VMS,
        Some(&json!({"source": "e", "target": "a/m1"})),
        &[],
    );
    let first = r.header("etag").unwrap().to_string();
    let r = g.call(
        "PATCH",
        &path("e"),
        Some(&json!({"description": "x"})),
        &[("if-match", &first)],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let second = r.header("etag").unwrap().to_string();
    assert_ne!(first, second);
    for (method, body) in [
        ("PATCH", Some(json!({"description": "y"}))),
        ("PUT", Some(json!({"target": "a/m2"}))),
        ("DELETE", None),
    ] {
        let stale = g.call(method, &path("e"), body.as_ref(), &[("if-match", &first)]);
        assert_eq!(
            (stale.status, stale.error_code().as_str()),
            (409, "etag_mismatch"),
            "{method}"
        );
    }
    assert_eq!(
        g.call("GET", &path("e"), None, &[]).json()["description"],
        "x"
    );
    let del = g.call("DELETE", &path("e"), None, &[("if-match", &second)]);
    assert_eq!(del.status, 204);
}

#[test]
fn validation_errors_are_422_naming_the_field_and_change_nothing() {
    let (_a, _b, g) = start();
    g.call(
        "POST",
        VMS,
        Some(&json!({"source": "v", "target": "a/m1"})),
        &[],
    );
    let cases = [
        (
            json!({"source": "v2", "targets": [{"model": "a/m1", "weight": -1}]}),
            "targets[0].weight",
        ),
        (
            json!({"source": "v2", "strategy": "fastest", "targets": ["a/m1"]}),
            "strategy",
        ),
        (
            json!({"source": "v2", "target": "cfg-alias"}),
            "target.model",
        ),
        (
            json!({"source": "v2", "target": {"provider": "zzz", "model": "m"}}),
            "target.provider",
        ),
        (
            json!({"source": "v2", "user_paths": ["/a/../b"], "target": "a/m1"}),
            "user_paths[0]",
        ),
        (json!({"source": "v2", "targts": ["a/m1"]}), "targts"),
        (json!({"target": "a/m1"}), "source"),
    ];
    for (body, field) in cases {
        let r = g.call("POST", VMS, Some(&body), &[]);
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert_eq!(r.json()["error"]["param"], field, "{body}: {}", r.body);
        assert!(!r.json()["error"]["message"].as_str().unwrap().is_empty());
    }
    let bad_put = g.call(
        "PUT",
        &path("v"),
        Some(&json!({"targets": [{"model": "a/m1"}, {"model": "a/m1"}]})),
        &[],
    );
    assert_eq!(bad_put.status, 422, "{}", bad_put.body);
    assert!(
        bad_put.body.contains("store (source \\\"v\\\")"),
        "{}",
        bad_put.body
    );
    // Nothing changed: the failed writes left the store and the routing as they were.
    let list = g.call("GET", VMS, None, &[]).json();
    assert!(entry(&list, "v2", "store").is_none());
    assert_eq!(
        entry(&list, "v", "store").unwrap()["target"],
        json!({"model": "a/m1"})
    );
    assert_eq!(g.chat("v").status, 200);
    let not_json = g.post_raw(VMS, b"{oops", &[]);
    assert_eq!(
        (not_json.status, not_json.error_code().as_str()),
        (400, "invalid_json")
    );
}

#[test]
fn missing_rows_are_404() {
    let (_a, _b, g) = start();
    assert_eq!(g.call("GET", &path("ghost"), None, &[]).status, 404);
    assert_eq!(
        g.call(
            "PATCH",
            &path("ghost"),
            Some(&json!({"description": "x"})),
            &[]
        )
        .status,
        404
    );
    assert_eq!(g.call("DELETE", &path("ghost"), None, &[]).status, 404);
    // If-Match on a row that does not exist: the row the client read is gone.
    let gone = g.call(
        "PUT",
        &path("ghost"),
        Some(&json!({"target": "a/m1"})),
        &[("if-match", "\"abc\"")],
    );
    assert_eq!(
        (gone.status, gone.error_code().as_str()),
        (409, "etag_mismatch")
    );
    let wrong_method = g.call("DELETE", VMS, None, &[]);
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("GET, POST"));
    let r = g.call("GET", "/admin/api/v1/nothing-here", None, &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

#[test]
fn config_and_env_rows_are_read_only_and_name_where_to_edit() {
    let (_a, _b, g) = start();
    for (source, location) in [
        ("cfg-alias", "config.yaml: virtual_models[0]"),
        ("env-alias", "VIRTUAL_MODELS[0]"),
    ] {
        let body = json!({"target": "a/m2"});
        for (method, b) in [
            ("PUT", Some(&body)),
            ("PATCH", Some(&body)),
            ("DELETE", None),
        ] {
            let r = g.call(method, &path(source), b, &[]);
            assert_eq!(
                (r.status, r.error_code().as_str()),
                (409, "managed_by_config"),
                "{method} {source}"
            );
            assert!(
                r.json()["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(location),
                "{}",
                r.body
            );
        }
        let post = g.call(
            "POST",
            VMS,
            Some(&json!({"source": source, "target": "a/m2"})),
            &[],
        );
        assert_eq!(
            (post.status, post.error_code().as_str()),
            (409, "managed_by_config")
        );
    }
    assert_eq!(
        g.chat("cfg-alias").header("x-modelgate-model"),
        Some("a/m1")
    );
}

#[test]
fn rename_moves_the_row_and_refuses_existing_sources() {
    let (_a, b, g) = start();
    g.call(
        "POST",
        VMS,
        Some(&json!({"source": "old", "target": "b/m3"})),
        &[],
    );
    g.call(
        "POST",
        VMS,
        Some(&json!({"source": "taken", "target": "a/m1"})),
        &[],
    );
    let created = g.call("GET", &path("old"), None, &[]).json()["created_at"].clone();
    let r = g.call("PATCH", &path("old"), Some(&json!({"source": "new"})), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["source"], "new");
    assert_eq!(r.json()["created_at"], created);
    assert_eq!(g.call("GET", &path("old"), None, &[]).status, 404);
    assert_eq!(g.chat("old").status, 404);
    assert_eq!(g.chat("new").status, 200);
    assert_eq!(upstream_models(&b), vec!["m3"]);
    let onto = g.call(
        "PATCH",
        &path("new"),
        Some(&json!({"source": "taken"})),
        &[],
    );
    assert_eq!(
        (onto.status, onto.error_code().as_str()),
        (409, "already_exists")
    );
    let onto_cfg = g.call(
        "PATCH",
        &path("new"),
        Some(&json!({"source": "cfg-alias"})),
        &[],
    );
    assert_eq!(
        (onto_cfg.status, onto_cfg.error_code().as_str()),
        (409, "managed_by_config")
    );
    assert_eq!(g.call("GET", &path("new"), None, &[]).status, 200);
}

#[test]
fn delete_is_204_and_the_name_is_gone_on_the_next_request() {
    let (_a, _b, g) = start();
    g.call(
        "POST",
        VMS,
        Some(&json!({"source": "bye", "target": "a/m1"})),
        &[],
    );
    assert_eq!(g.chat("bye").status, 200);
    let r = g.call("DELETE", &path("bye"), None, &[]);
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(g.chat("bye").status, 404);
}

#[test]
fn access_policies_from_the_store_gate_concrete_models() {
    let (_a, _b, g) = start();
    let r = g.call(
        "PUT",
        &path("a/m2"),
        Some(&json!({"user_paths": ["/team"]})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["kind"], "policy");
    let denied = g.chat("a/m2");
    assert_eq!(
        (denied.status, denied.error_code().as_str()),
        (403, "model_access_denied")
    );
    let ok = g.post(
        "/v1/chat/completions",
        &json!({"model": "a/m2", "messages": []}),
        &[("x-modelgate-user-path", "/team/x")],
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    let models = g.call("GET", "/admin/api/v1/models", None, &[]).json();
    let m2 = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "a/m2")
        .unwrap();
    assert_eq!(m2["access"], "restricted");
    assert_eq!(m2["policy"], "a/m2");
    assert_eq!(m2["available"], true);
}

#[test]
fn bodies_must_be_json() {
    let (_a, _b, g) = start();
    let r = Gateway::agent()
        .post(&g.url(VMS))
        .set("content-type", "text/plain")
        .send_string(r#"{"source":"x","target":"a/m1"}"#);
    let status = match r {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(status, 415);
    assert_eq!(g.call("GET", &path("x"), None, &[]).status, 404);
}

#[test]
fn gomodel_routes_speak_gomodels_bodies_and_codes() {
    let (a, _b, g) = start();
    let r = g.call(
        "PUT",
        "/admin/virtual-models",
        Some(
            &json!({"source": "smart", "target_model": "a/m1", "description": "primary",
                     "user_paths": [], "slowdown": 2}),
        ),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["source"], "smart");
    assert_eq!(v["kind"], "redirect");
    assert_eq!(v["targets"], json!([{"model": "a/m1"}]));
    assert_eq!(v["enabled"], true);
    assert_eq!(v["valid"], true);
    assert_eq!(v["resolved_model"], "a/m1");
    // An empty user_paths list is GoModel's "everyone", callers with a path included.
    assert_eq!(g.chat("smart").status, 200);
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}]}),
        &[("x-modelgate-user-path", "/team/x")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-modelgate-virtual-model"), Some("smart"));

    let lb = g.call(
        "PUT",
        "/admin/virtual-models",
        Some(&json!({"source": "lb", "targets": [{"provider": "a", "model": "m1", "weight": 2}, {"model": "a/m2"}],
                     "strategy": "failover", "enabled": false})),
        &[],
    );
    assert_eq!(lb.status, 200, "{}", lb.body);
    assert_eq!(lb.json()["strategy"], "failover");
    assert_eq!(lb.json()["enabled"], false);
    let rest = g.call("GET", &path("lb"), None, &[]).json();
    assert_eq!(rest["strategy"], "priority");
    assert_eq!(rest["enabled"], false);
    // Omitting enabled keeps it.
    let again = g.call(
        "PUT",
        "/admin/virtual-models",
        Some(&json!({"source": "lb", "target_model": "a/m2"})),
        &[],
    );
    assert_eq!(again.json()["enabled"], false);

    let renamed = g.call(
        "PUT",
        "/admin/virtual-models",
        Some(&json!({"source": "smart2", "old_source": "smart", "target_model": "a/m2"})),
        &[],
    );
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    assert_eq!(g.chat("smart").status, 404);
    assert_eq!(g.chat("smart2").status, 200);
    assert_eq!(upstream_models(&a), vec!["m1", "m1", "m2"]);

    let missing = g.call(
        "PUT",
        "/admin/virtual-models",
        Some(&json!({"source": "x", "old_source": "nope", "target_model": "a/m1"})),
        &[],
    );
    assert_eq!(missing.status, 404);
    let invalid = g.call(
        "PUT",
        "/admin/virtual-models",
        Some(&json!({"source": "bad", "target_model": "cfg-alias"})),
        &[],
    );
    assert_eq!(invalid.status, 400, "{}", invalid.body);
    assert_eq!(invalid.json()["error"]["type"], "invalid_request_error");
    let managed = g.call(
        "PUT",
        "/admin/virtual-models",
        Some(&json!({"source": "cfg-alias", "target_model": "a/m2"})),
        &[],
    );
    assert_eq!(managed.status, 400);
    assert_eq!(managed.error_code(), "managed_by_config");
    let no_source = g.call(
        "PUT",
        "/admin/virtual-models",
        Some(&json!({"target_model": "a/m1"})),
        &[],
    );
    assert_eq!(no_source.status, 400);

    let list = g.call("GET", "/admin/virtual-models", None, &[]).json();
    let list = list.as_array().unwrap();
    let cfg = list.iter().find(|v| v["source"] == "cfg-alias").unwrap();
    assert_eq!(cfg["managed"], true);
    assert!(list.iter().any(|v| v["source"] == "smart2"));

    let del = g.call(
        "DELETE",
        "/admin/virtual-models",
        Some(&json!({"source": "smart2"})),
        &[],
    );
    assert_eq!(del.status, 204);
    let gone = g.call(
        "DELETE",
        "/admin/virtual-models",
        Some(&json!({"source": "smart2"})),
        &[],
    );
    assert_eq!(gone.status, 404);
    let cfg_del = g.call(
        "DELETE",
        "/admin/virtual-models",
        Some(&json!({"source": "cfg-alias"})),
        &[],
    );
    assert_eq!(cfg_del.status, 400);

    // Weights mean here what they mean everywhere in modelgate: an explicit 0 is a fallback
    // only, a negative one is a validation error (400 on these routes).
    let neg = g.call(
        "PUT",
        "/admin/virtual-models",
        Some(&json!({"source": "neg", "targets": [{"model": "a/m1", "weight": -1}]})),
        &[],
    );
    assert_eq!(neg.status, 400, "{}", neg.body);
    assert!(neg.body.contains("targets[0].weight"), "{}", neg.body);
    assert_eq!(g.call("GET", &path("neg"), None, &[]).status, 404);
    let w0 = g.call(
        "PUT",
        "/admin/virtual-models",
        Some(&json!({"source": "w0", "targets": [{"model": "a/m1"}, {"model": "a/m2", "weight": 0}]})),
        &[],
    );
    assert_eq!(w0.status, 200, "{}", w0.body);
    assert_eq!(
        w0.json()["targets"],
        json!([{"model": "a/m1"}, {"model": "a/m2", "weight": 0.0}])
    );
    let before = upstream_models(&a).len();
    for _ in 0..4 {
        assert_eq!(g.chat("w0").status, 200);
    }
    assert_eq!(upstream_models(&a)[before..], ["m1", "m1", "m1", "m1"]);
}

#[test]
fn an_empty_user_paths_list_means_everyone_on_both_admin_apis() {
    let (_a, _b, g) = start();
    let with_path = [("x-modelgate-user-path", "/team/x")];
    let served_by_redirect = |source: &str| {
        [&[][..], &with_path[..]].iter().all(|headers| {
            let r = g.post(
                "/v1/chat/completions",
                &json!({"model": source, "messages": [{"role": "user", "content": "hi"}]}),
                headers,
            );
            r.status == 200 && r.header("x-modelgate-virtual-model") == Some(source)
        })
    };
    // REST: restricted, then PATCHed to [].
    let r = g.call(
        "POST",
        VMS,
        Some(&json!({"source": "rest", "target": "a/m1", "user_paths": ["/other"]})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(!served_by_redirect("rest"));
    let r = g.call(
        "PATCH",
        &path("rest"),
        Some(&json!({"user_paths": []})),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(served_by_redirect("rest"));
    // GoModel's route: restricted, then replaced with [].
    for (paths, open) in [(json!(["/other"]), false), (json!([]), true)] {
        let r = g.call(
            "PUT",
            "/admin/virtual-models",
            Some(&json!({"source": "gm", "target_model": "a/m1", "user_paths": paths})),
            &[],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(served_by_redirect("gm"), open, "user_paths {paths}");
    }
}

#[test]
fn status_reports_config_store_counts_and_version() {
    let (_a, _b, g) = start();
    g.call(
        "POST",
        VMS,
        Some(&json!({"source": "s1", "target": "a/m1"})),
        &[],
    );
    let r = g.call("GET", "/admin/api/v1/status", None, &[]);
    assert_eq!(r.status, 200);
    let s = r.json();
    assert!(s["config_path"].as_str().unwrap().ends_with("config.yaml"));
    assert!(s["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(s["last_reload"]["ok"], true);
    assert!(s["last_reload"]["at"].is_string());
    assert_eq!(s["last_reload"]["error"], Value::Null);
    assert_eq!(
        s["virtual_models"],
        json!({"config": 1, "env": 1, "store": 1})
    );
    assert_eq!(s["store"]["type"], "sqlite");
    assert!(s["store"]["path"].as_str().unwrap().ends_with("store.db"));
    assert_eq!(
        (&s["store"]["revision"], &s["store"]["connected"]),
        (&json!(1), &json!(true))
    );
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn without_a_master_key_only_loopback_host_names_are_served() {
    let (_a, _b, g) = start();
    assert_eq!(g.call("GET", "/admin/api/v1/status", None, &[]).status, 200);
    // A page on another name rebinding to 127.0.0.1 still sends its own Host.
    let r = g.call(
        "GET",
        "/admin/api/v1/status",
        None,
        &[("host", "evil.example")],
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "admin_loopback_only")
    );
    let page = g.call("GET", "/admin/dashboard", None, &[("host", "evil.example")]);
    assert_eq!(page.status, 403);
}

#[test]
fn with_a_master_key_the_api_needs_it_and_the_dashboard_asks_for_it() {
    let a = Upstream::echo(&["m1", "m2"]);
    let b = Upstream::echo(&["m3"]);
    let g = Gateway::start(&config(&a, &b), &[("MODELGATE_MASTER_KEY", "sekret")]);
    let none = g.call("GET", "/admin/api/v1/status", None, &[]);
    assert_eq!(
        (none.status, none.error_code().as_str()),
        (401, "missing_api_key")
    );
    assert_eq!(none.json()["error"]["type"], "authentication_error");
    let wrong = g.call("GET", VMS, None, &[("authorization", "Bearer nope")]);
    assert_eq!(
        (wrong.status, wrong.error_code().as_str()),
        (401, "invalid_api_key")
    );
    let write = g.call(
        "POST",
        VMS,
        Some(&json!({"source": "k", "target": "a/m1"})),
        &[],
    );
    assert_eq!(write.status, 401);
    let compat = g.call("GET", "/admin/virtual-models", None, &[]);
    assert_eq!(compat.status, 401);
    let ok = g.call("GET", VMS, None, &[("authorization", "Bearer sekret")]);
    assert_eq!(ok.status, 200);
    assert!(!ok.body.contains("sekret"));
    let page = g.call("GET", "/admin/dashboard", None, &[]);
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.header("content-security-policy").is_some());
    let js = g.call("GET", "/admin/dashboard/app.js", None, &[]);
    assert_eq!(js.status, 200);
    assert!(js.body.contains("sessionStorage"));
    let status = g.call(
        "GET",
        "/admin/api/v1/status",
        None,
        &[("authorization", "Bearer sekret")],
    );
    assert!(!status.body.contains("sekret"));
}

#[test]
fn rows_persist_across_a_restart() {
    let a = Upstream::echo(&["m1", "m2"]);
    let b = Upstream::echo(&["m3"]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state/admin.db");
    let db_env = db.to_str().unwrap();
    let etag;
    {
        let g = Gateway::start(&config(&a, &b), &[("SQLITE_PATH", db_env)]);
        let r = g.call(
            "POST",
            VMS,
            Some(&json!({"source": "kept", "target": "b/m3", "slug": "kept-v1"})),
            &[],
        );
        assert_eq!(r.status, 201, "{}", r.body);
        etag = r.header("etag").unwrap().to_string();
    }
    assert!(db.is_file());
    let g = Gateway::start(&config(&a, &b), &[("SQLITE_PATH", db_env)]);
    let one = g.call("GET", &path("kept"), None, &[]);
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["origin"], "store");
    assert_eq!(one.header("etag"), Some(etag.as_str()));
    let c = g.chat("kept-v1");
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.header("x-modelgate-virtual-model"), Some("kept"));
    let (code, out) = run_cli(&config(&a, &b), &["check"], &[("SQLITE_PATH", db_env)]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("kept") && l.contains("origin=store")),
        "{out}"
    );
}

#[test]
fn a_config_entry_hides_a_store_row_without_deleting_it() {
    let a = Upstream::echo(&["m1", "m2"]);
    let b = Upstream::echo(&["m3"]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let db_env = db.to_str().unwrap();
    {
        let g = Gateway::start(&config(&a, &b), &[("SQLITE_PATH", db_env)]);
        let r = g.call(
            "POST",
            VMS,
            Some(&json!({"source": "shared", "target": "b/m3"})),
            &[],
        );
        assert_eq!(r.status, 201);
    }
    let hiding = format!("{}  - source: shared\n    target: a/m2\n", config(&a, &b));
    let g = Gateway::start(&hiding, &[("SQLITE_PATH", db_env)]);
    assert_eq!(g.chat("shared").header("x-modelgate-model"), Some("a/m2"));
    let list = g.call("GET", VMS, None, &[]).json();
    let hidden = entry(&list, "shared", "store").unwrap();
    assert_eq!(hidden["overridden"], true);
    assert!(hidden["overridden_by"]
        .as_str()
        .unwrap()
        .ends_with("virtual_models[1]"));
    assert_eq!(
        entry(&list, "shared", "config").unwrap()["overridden"],
        false
    );
    let edit = g.call(
        "PATCH",
        &path("shared"),
        Some(&json!({"description": "x"})),
        &[],
    );
    assert_eq!(edit.status, 409);
    // The hidden row itself may be deleted; then the source is only the config's.
    assert_eq!(g.call("DELETE", &path("shared"), None, &[]).status, 204);
    let again = g.call("DELETE", &path("shared"), None, &[]);
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (409, "managed_by_config")
    );
}

#[test]
fn a_store_row_that_no_longer_validates_stops_start_up_naming_it() {
    let a = Upstream::echo(&["m1", "m2"]);
    let b = Upstream::echo(&["m3"]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let db_env = db.to_str().unwrap();
    {
        let g = Gateway::start(&config(&a, &b), &[("SQLITE_PATH", db_env)]);
        let r = g.call(
            "POST",
            VMS,
            Some(&json!({"source": "pinned", "target": {"provider": "b", "model": "m3"}})),
            &[],
        );
        assert_eq!(r.status, 201);
    }
    // Provider b is gone from the config.
    let without_b = format!(
        "providers:\n{}virtual_models: []\n",
        provider_block("a", &a, &["m1"])
    );
    let err = Gateway::try_start(&without_b, &[("SQLITE_PATH", db_env)])
        .err()
        .expect("start-up must fail");
    assert!(
        err.contains("store (source \"pinned\"): target.provider \"b\" is not declared"),
        "{err}"
    );
}

#[test]
fn check_ends_with_the_sqlite_store_line_and_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("admin.db");
    let db_env = db.display().to_string();
    let cfg = "providers:\n  p:\n    type: mock\n    models: [m1]\n";
    let (code, out) = run_cli(cfg, &["check"], &[("SQLITE_PATH", &db_env)]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("store: sqlite at {db_env} (no file yet")),
        "{out}"
    );
    assert!(!db.exists(), "check creates no store file");
    let store = modelgate::store::SqliteStore::open(&db).unwrap();
    let spec = serde_json::from_value(json!({"source": "s", "target": "p/m1"})).unwrap();
    modelgate::store::Store::apply(
        &store,
        &[modelgate::store::Change::Upsert(Box::new(
            modelgate::store::StoredRow {
                spec,
                created_at: 1,
                updated_at: 1,
                etag: "e".into(),
            },
        ))],
    )
    .unwrap();
    drop(store);
    let (code, out) = run_cli(cfg, &["check"], &[("SQLITE_PATH", &db_env)]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("store: sqlite at {db_env} (revision 1)")),
        "{out}"
    );
}
