//! Managed API keys black-box: creation (the secret once), use, user-path binding (narrowing
//! allowed, widening refused), expiry, revocation, scopes, and managers of groups writing
//! through every admin API.

mod common;

use common::*;
use serde_json::{json, Value};

const MASTER: &str = "master-key";

fn config(up: &Upstream) -> String {
    format!(
        "providers:\n{}virtual_models:\n  - source: up/m\n    user_paths: [\"/team\"]\n",
        provider_block("up", up, &["m", "n"])
    )
}

fn master() -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {MASTER}"))]
}

fn with<'a>(auth: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    auth.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn bearer(secret: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {secret}"))]
}

fn create_key(g: &Gateway, body: Value) -> Resp {
    g.call("POST", "/admin/api/v1/keys", Some(&body), &with(&master()))
}

fn secret_of(r: &Resp) -> String {
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["key"].as_str().unwrap().to_string()
}

fn chat_as(g: &Gateway, model: &str, headers: &[(&str, &str)]) -> Resp {
    g.post(
        "/v1/chat/completions",
        &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        headers,
    )
}

fn start(up: &Upstream) -> Gateway {
    Gateway::start(&config(up), &[("MODELGATE_MASTER_KEY", MASTER)])
}

#[test]
fn a_key_is_shown_once_used_listed_without_secret_and_revoked() {
    let up = Upstream::echo(&["m", "n"]);
    let g = start(&up);
    let created = create_key(
        &g,
        json!({"name": "ci", "user_path": "/team", "scopes": ["inference"]}),
    );
    let secret = secret_of(&created);
    assert!(secret.starts_with("mg-") && secret.len() > 40, "{secret}");
    assert_eq!(created.json()["user_path"], "/team");

    let ok = chat_as(&g, "up/m", &with(&bearer(&secret)));
    assert_eq!(ok.status, 200, "{}", ok.body);

    let list = g.call("GET", "/admin/api/v1/keys", None, &with(&master()));
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["data"][0]["name"], "ci");
    assert!(!list.body.contains(&secret[3..]), "{}", list.body);
    assert!(list.json()["data"][0].get("key").is_none());
    // Only the hash is stored.
    let db = std::fs::read(g.dir.path().join("store.db")).unwrap();
    assert!(
        !String::from_utf8_lossy(&db).contains(&secret),
        "the secret is stored"
    );

    let gone = g.call("DELETE", "/admin/api/v1/keys/ci", None, &with(&master()));
    assert_eq!(gone.status, 204, "{}", gone.body);
    let refused = chat_as(&g, "up/m", &with(&bearer(&secret)));
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"]["type"], "authentication_error");
    let again = g.call("DELETE", "/admin/api/v1/keys/ci", None, &with(&master()));
    assert_eq!(again.status, 404);
    // The master key keeps working.
    assert_eq!(chat_as(&g, "up/n", &with(&master())).status, 200);
    // An unknown key, and no key, are refused.
    assert_eq!(chat_as(&g, "up/n", &with(&bearer("mg-nope"))).status, 401);
    assert_eq!(chat_as(&g, "up/n", &[]).status, 401);
    assert_eq!(up.requests().len(), 2);
}

#[test]
fn a_key_carries_its_user_path_which_the_header_narrows_but_never_widens() {
    let up = Upstream::echo(&["m", "n"]);
    let g = start(&up);
    let team = secret_of(&create_key(
        &g,
        json!({"name": "team", "user_path": "/team/a"}),
    ));
    let other = secret_of(&create_key(
        &g,
        json!({"name": "other", "user_path": "/other"}),
    ));
    let h = bearer(&team);
    // The key's path is the caller's: the policy on up/m admits /team and under.
    assert_eq!(chat_as(&g, "up/m", &with(&h)).status, 200);
    let mut narrow = with(&h);
    narrow.push(("x-modelgate-user-path", "/team/a/b"));
    assert_eq!(chat_as(&g, "up/m", &narrow).status, 200);
    for wider in ["/team", "/", "/other", "/team/ab"] {
        let mut hs = with(&h);
        hs.push(("x-modelgate-user-path", wider));
        let r = chat_as(&g, "up/m", &hs);
        assert_eq!(r.status, 403, "{wider}: {}", r.body);
        assert_eq!(r.error_code(), "user_path_forbidden", "{wider}");
    }
    // A key elsewhere cannot reach the policy, even by naming the path.
    let o = bearer(&other);
    assert_eq!(
        chat_as(&g, "up/m", &with(&o)).error_code(),
        "model_access_denied"
    );
    let mut claim = with(&o);
    claim.push(("x-modelgate-user-path", "/team"));
    assert_eq!(
        chat_as(&g, "up/m", &claim).error_code(),
        "user_path_forbidden"
    );
    // Anthropic's x-api-key works too, and the error is Anthropic's envelope.
    let r = g.post(
        "/v1/messages",
        &json!({"model": "up/m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
        &[("x-api-key", other.as_str())],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["type"], "error");
}

#[test]
fn an_expired_key_is_refused() {
    let up = Upstream::echo(&["m", "n"]);
    let g = start(&up);
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 4;
    let secret = secret_of(&create_key(
        &g,
        json!({"name": "brief", "expires_at": soon}),
    ));
    assert_eq!(chat_as(&g, "up/n", &with(&bearer(&secret))).status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut last = 0;
    while std::time::Instant::now() < deadline {
        let r = chat_as(&g, "up/n", &with(&bearer(&secret)));
        last = r.status;
        if r.status == 401 {
            assert_eq!(r.error_code(), "expired_api_key");
            assert_eq!(r.json()["error"]["type"], "authentication_error");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(last, 401);
    // A time already past is refused at creation.
    let r = create_key(
        &g,
        json!({"name": "late", "expires_at": "2001-01-01T00:00:00Z"}),
    );
    assert_eq!(
        (r.status, r.json()["error"]["param"].clone()),
        (422, json!("expires_at"))
    );
}

#[test]
fn key_writes_are_validated_naming_the_field() {
    let up = Upstream::echo(&["m"]);
    let g = start(&up);
    for (body, field) in [
        (json!({"user_path": "/t"}), "name"),
        (json!({"name": "a b"}), "name"),
        (
            json!({"name": "k", "scopes": ["inference", "admin"]}),
            "scopes[1]",
        ),
        (json!({"name": "k", "user_path": "/a/../b"}), "user_path"),
        (json!({"name": "k", "expires_at": "tomorrow"}), "expires_at"),
        (
            json!({"name": "k", "limits": [{"rpm": 0}]}),
            "limits[0].rpm",
        ),
        (
            json!({"name": "k", "limits": [{"match": {"key": "x"}, "rpm": 1}]}),
            "limits[0].match",
        ),
        (json!({"name": "k", "scope": ["inference"]}), "scope"),
    ] {
        let r = create_key(&g, body.clone());
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert_eq!(r.json()["error"]["param"], field, "{body}: {}", r.body);
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{}",
            r.body
        );
    }
    secret_of(&create_key(&g, json!({"name": "k"})));
    assert_eq!(create_key(&g, json!({"name": "k"})).status, 409);
    // Keys are the master key's business.
    let inference = secret_of(&create_key(&g, json!({"name": "i"})));
    let r = g.call(
        "GET",
        "/admin/api/v1/keys",
        None,
        &with(&bearer(&inference)),
    );
    assert_eq!((r.status, r.error_code()), (403, "forbidden".into()));
}

#[test]
fn a_manager_writes_virtual_models_of_its_group_through_every_api_and_nothing_else() {
    let up = Upstream::echo(&["m", "n"]);
    let g = start(&up);
    let mgr = secret_of(&create_key(
        &g,
        json!({"name": "lead", "scopes": ["manage:team-a"]}),
    ));
    let h = bearer(&mgr);
    let hs = with(&h);
    let vm = |source: &str| json!({"source": source, "targets": [{"model": "up/n"}]});
    // REST.
    let r = g.call(
        "POST",
        "/admin/api/v1/virtual-models",
        Some(&vm("team-a/chat")),
        &hs,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = g.call(
        "POST",
        "/admin/api/v1/virtual-models",
        Some(&vm("team-b/chat")),
        &hs,
    );
    assert_eq!(
        (r.status, r.error_code()),
        (403, "forbidden".into()),
        "{}",
        r.body
    );
    let r = g.call(
        "POST",
        "/admin/api/v1/virtual-models",
        Some(&vm("chat")),
        &hs,
    );
    assert_eq!(r.status, 403);
    // A rename out of the group is refused, and the row stays.
    let r = g.call(
        "PATCH",
        "/admin/api/v1/virtual-models/team-a%2Fchat",
        Some(&json!({"source": "team-b/chat"})),
        &hs,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = g.call(
        "PATCH",
        "/admin/api/v1/virtual-models/team-a%2Fchat",
        Some(&json!({"description": "mine"})),
        &hs,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The master key's rows outside the group cannot be touched.
    let r = g.call(
        "POST",
        "/admin/api/v1/virtual-models",
        Some(&vm("team-b/x")),
        &with(&master()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = g.call(
        "DELETE",
        "/admin/api/v1/virtual-models/team-b%2Fx",
        None,
        &hs,
    );
    assert_eq!(r.status, 403);
    // GoModel's route.
    let r = g.call(
        "PUT",
        "/admin/virtual-models",
        Some(&json!({"source": "team-b/y", "target_model": "up/n"})),
        &hs,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = g.call(
        "PUT",
        "/admin/virtual-models",
        Some(&json!({"source": "team-a/y", "target_model": "up/n"})),
        &hs,
    );
    assert!(r.status < 300, "{}", r.body);
    // NeMo's workspaces are groups.
    let nemo = "/apis/inference-gateway/v2/workspaces";
    let body = json!({"name": "z", "default_model_entity": "up/n"});
    let r = g.call(
        "POST",
        &format!("{nemo}/team-a/virtual-models"),
        Some(&body),
        &hs,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["created_by"], "lead");
    let r = g.call(
        "POST",
        &format!("{nemo}/team-b/virtual-models"),
        Some(&body),
        &hs,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = g.call(
        "DELETE",
        &format!("{nemo}/team-a/virtual-models/z"),
        None,
        &hs,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    // Outside its groups a manager gets 403 before anything is looked up: not 404 for a
    // missing row, nor 409 for a config entry or a provider's passthrough.
    let outside = [
        (
            "DELETE",
            "/admin/api/v1/virtual-models/other%2Fmissing".to_string(),
            None,
        ),
        (
            "PUT",
            "/admin/api/v1/virtual-models/up%2Fm".to_string(),
            Some(vm("up/m")),
        ),
        (
            "PATCH",
            format!("{nemo}/up/virtual-models/n"),
            Some(json!({})),
        ),
        (
            "DELETE",
            "/admin/virtual-models".to_string(),
            Some(json!({"source": "other/missing"})),
        ),
    ];
    for (method, path, body) in outside {
        let r = g.call(method, &path, body.as_ref(), &hs);
        assert_eq!(
            (r.status, r.error_code()),
            (403, "forbidden".into()),
            "{method} {path}: {}",
            r.body
        );
    }
    // Nothing else: keys, status; and no inference without the scope.
    for path in ["/admin/api/v1/keys", "/admin/api/v1/status"] {
        let r = g.call("GET", path, None, &hs);
        assert_eq!(
            (r.status, r.error_code()),
            (403, "forbidden".into()),
            "{path}"
        );
    }
    let r = chat_as(&g, "team-a/chat", &hs);
    assert_eq!((r.status, r.error_code()), (403, "forbidden".into()));
    // What the manager wrote is served to callers.
    assert_eq!(chat_as(&g, "team-a/chat", &with(&master())).status, 200);
}

#[test]
fn usage_is_kept_per_key_user_path_and_model_in_hourly_rows() {
    // Whole answers report 3 + 2 tokens; streams report none.
    let up = Upstream::start(&["m", "n"], |s| {
        let model = s.json()["model"].as_str().unwrap_or("?").to_string();
        if s.json()["stream"] == true {
            let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]});
            return Reply::Stream(
                vec![
                    format!("data: {chunk}\n\n").into_bytes(),
                    b"data: [DONE]\n\n".to_vec(),
                ],
                None,
            );
        }
        Reply::Json(200, chat_reply(&model, "ok"))
    });
    let g = Gateway::start(
        &config(&up),
        &[
            ("MODELGATE_MASTER_KEY", MASTER),
            ("STORE_USAGE_FLUSH_SECONDS", "1"),
        ],
    );
    let secret = secret_of(&create_key(
        &g,
        json!({"name": "u", "user_path": "/team/u"}),
    ));
    for _ in 0..2 {
        assert_eq!(chat_as(&g, "up/m", &with(&bearer(&secret))).status, 200);
    }
    assert_eq!(chat_as(&g, "up/n", &with(&master())).status, 200);
    // An answered stream whose upstream reported no usage is a request with no tokens.
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "up/n", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        &with(&master()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let usage = |q: &str| {
        let r = g.call(
            "GET",
            &format!("/admin/api/v1/usage?{q}"),
            None,
            &with(&master()),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    // Written in batches: poll until the writer has flushed all three requests.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut by_key = usage("group_by=key");
    while by_key["totals"].as_array().map_or(0, |t| {
        t.iter()
            .map(|r| r["requests"].as_i64().unwrap_or(0))
            .sum::<i64>()
    }) < 4
    {
        assert!(
            std::time::Instant::now() < deadline,
            "usage not written: {by_key}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
        by_key = usage("group_by=key");
    }
    let totals = by_key["totals"].as_array().unwrap();
    let of = |name: &str| totals.iter().find(|t| t["key"] == name).cloned().unwrap();
    // The echo upstream reports 3 + 2 tokens per answer.
    assert_eq!(of("u")["requests"], 2);
    assert_eq!(of("u")["total_tokens"], 10);
    assert_eq!(of("")["requests"], 2);
    assert_eq!(of("")["total_tokens"], 5);
    assert!(by_key["data"][0]["hour"]
        .as_str()
        .unwrap()
        .ends_with(":00:00Z"));
    let by_path = usage("group_by=user_path");
    assert!(by_path["totals"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["user_path"] == "/team/u"));
    let by_model = usage("group_by=model&from=2020-01-01T00:00:00Z");
    let models: Vec<&str> = by_model["totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["up/m", "up/n"]);
    // A range before any request is empty.
    assert_eq!(usage("from=0&to=3600")["data"], json!([]));
    let bad = g.call(
        "GET",
        "/admin/api/v1/usage?group_by=team",
        None,
        &with(&master()),
    );
    assert_eq!(
        (bad.status, bad.json()["error"]["param"].clone()),
        (400, json!("group_by"))
    );
}
