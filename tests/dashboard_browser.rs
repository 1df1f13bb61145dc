//! The dashboard in a real browser: headless Chromium driven through chromedriver (WebDriver)
//! against the real gateway and a mock upstream on 127.0.0.1. The test signs in with the
//! master key, sees a config row's badge and that it cannot be edited, creates a virtual model
//! in the UI (after seeing a validation error inline), sends a request to it through the
//! gateway, edits, renames and deletes it. Screenshots go to target/dashboard-screenshots/.
//!
//! Chromium and chromedriver must be installed (`scripts/setup.sh` does it); without them the
//! test fails and says so. `MODELGATE_CHROMIUM` and `MODELGATE_CHROMEDRIVER` override the paths.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

const KEY: &str = "dash-key-7";

fn tool(var: &str, default: &str) -> PathBuf {
    let p = PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_string()));
    assert!(
        p.is_file(),
        "{} is missing: install the Debian packages chromium and chromium-driver (scripts/setup.sh does), or set {var}; this test never skips",
        p.display(),
    );
    p
}

/// chromedriver on a free port; killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let bin = tool("MODELGATE_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut d = Driver { child, port };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return d;
            }
            if let Ok(Some(s)) = d.child.try_wait() {
                panic!("chromedriver exited with {s}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = d.child.kill();
        panic!("chromedriver did not listen on {port}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let chromium = tool("MODELGATE_CHROMIUM", "/usr/bin/chromium");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1360,900",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    // Console lines are kept for `console_errors`.
    caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    // chromedriver listens on 127.0.0.1 in plain HTTP: no TLS stack needed. Its first session
    // request can be reset while it is still starting up on a busy machine: a few tries.
    let mut last = None;
    for _ in 0..4 {
        match ClientBuilder::new(HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
        {
            Ok(client) => return client,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("a Chromium session through chromedriver: {last:?}")
}

fn shots_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(name), png).unwrap();
}

async fn css(c: &Client, sel: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(sel))
        .await
        .unwrap_or_else(|e| panic!("{sel} did not appear: {e}"))
}

/// Polls until the element's text contains `want` (bounded), and returns the text.
async fn text_eventually(c: &Client, sel: &str, want: &str) -> String {
    let mut last = String::new();
    for _ in 0..150 {
        if let Ok(e) = c.find(Locator::Css(sel)).await {
            if let Ok(t) = e.text().await {
                if t.contains(want) {
                    return t;
                }
                last = t;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{sel} never showed {want:?}; last text: {last:?}");
}

/// Polls (bounded) until the `value` of the element at `sel` is `want`.
async fn value_eventually(c: &Client, sel: &str, want: &str) {
    let mut last = String::new();
    for _ in 0..150 {
        last = css(c, sel)
            .await
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default();
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{sel}'s value never became {want:?}; last: {last:?}");
}

/// Polls until nothing matches `sel` (bounded).
async fn gone_eventually(c: &Client, sel: &str) {
    for _ in 0..150 {
        if c.find(Locator::Css(sel)).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{sel} is still there");
}

async fn fill(c: &Client, sel: &str, value: &str) {
    let e = css(c, sel).await;
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn the_dashboard_manages_virtual_models_in_a_real_browser() {
    let up = Upstream::echo(&["m1", "m2"]);
    let config = format!(
        "providers:\n{}virtual_models:\n  - source: cfg-alias\n    target: a/m1\n    description: from the file\n  - source: cfg-mw\n    target: a/m2\n    post_response_middleware:\n      - {{name: log, config_type: log_config, config: {{level: info}}}}\n",
        provider_block("a", &up, &["m1", "m2"])
    );
    let g = Gateway::start(&config, &[("MODELGATE_MASTER_KEY", KEY)]);
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;

    // The gateway has a master key: the page asks for it.
    c.goto(&g.url("/admin/dashboard")).await.unwrap();
    let key_input = css(&c, "#login-key").await;
    assert!(key_input.is_displayed().await.unwrap());
    shot(&c, "01-sign-in.png").await;
    key_input.send_keys(KEY).await.unwrap();
    css(&c, "#login-submit").await.click().await.unwrap();

    // A config row: Config badge, no edit controls.
    let cfg_row = css(&c, "#vm-table tr[data-source='cfg-alias']").await;
    let badge = cfg_row.find(Locator::Css(".badge-config")).await.unwrap();
    assert_eq!(badge.text().await.unwrap(), "Config");
    assert!(cfg_row.find(Locator::Css("[data-action]")).await.is_err());
    assert!(cfg_row.text().await.unwrap().contains("Read-only"));
    text_eventually(&c, "#model-table", "a/m2").await;
    shot(&c, "02-models.png").await;

    // Middleware: a count in the list, the pipelines in the detail view (read-only rows too).
    let none = text_eventually(
        &c,
        "#vm-table tr[data-source='cfg-alias'] td.middleware",
        "\u{2014}",
    )
    .await;
    assert_eq!(none, "\u{2014}");
    text_eventually(
        &c,
        "#vm-table tr[data-source='cfg-mw'] td.middleware",
        "1 step",
    )
    .await;
    css(&c, "#vm-table tr[data-source='cfg-mw'] [data-pipelines]")
        .await
        .click()
        .await
        .unwrap();
    let detail = text_eventually(&c, "#mw-body", "log_config").await;
    assert!(
        detail.contains("Request") && detail.contains("\"level\": \"info\""),
        "{detail}"
    );
    assert!(detail.contains("Post-response"), "{detail}");
    shot(&c, "02b-middleware.png").await;
    css(&c, "#mw-dialog [data-close]")
        .await
        .click()
        .await
        .unwrap();

    // New virtual model: first a mistake the API rejects, shown inline.
    css(&c, "#new-vm").await.click().await.unwrap();
    fill(&c, "#vm-form input[name=source]", "ui-smart").await;
    fill(
        &c,
        "#vm-form input[name=description]",
        "made in the browser",
    )
    .await;
    fill(
        &c,
        "#targets .target-row:nth-child(1) input[name=model]",
        "cfg-alias",
    )
    .await;
    css(&c, "#save-vm").await.click().await.unwrap();
    let err = text_eventually(&c, "#vm-form-error", "another virtual model").await;
    assert!(
        err.contains("target.model") || err.contains("targets[0].model"),
        "{err}"
    );
    shot(&c, "03-validation-error.png").await;

    // Fixed: two targets, the second fallback-only (weight 0).
    fill(
        &c,
        "#targets .target-row:nth-child(1) input[name=model]",
        "a/m2",
    )
    .await;
    css(&c, "#add-target").await.click().await.unwrap();
    fill(
        &c,
        "#targets .target-row:nth-child(2) input[name=model]",
        "a/m1",
    )
    .await;
    fill(
        &c,
        "#targets .target-row:nth-child(2) input[name=weight]",
        "0",
    )
    .await;
    shot(&c, "04-new-virtual-model.png").await;
    css(&c, "#save-vm").await.click().await.unwrap();

    let row = css(&c, "#vm-table tr[data-source='ui-smart']").await;
    let row_text = text_eventually(&c, "#vm-table tr[data-source='ui-smart']", "Store").await;
    assert!(row_text.contains("a/m2"), "{row_text}");
    assert!(row.find(Locator::Css("[data-action=edit]")).await.is_ok());
    shot(&c, "05-created.png").await;

    // The new model serves requests through the gateway at once.
    let r = g.post(
        "/v1/chat/completions",
        &json!({"model": "ui-smart", "messages": [{"role": "user", "content": "hi"}]}),
        &[("authorization", &format!("Bearer {KEY}"))],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-modelgate-virtual-model"), Some("ui-smart"));
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].json()["model"], "m2");

    // Edit: restrict it to a team; the list shows it.
    row.find(Locator::Css("[data-action=edit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    css(&c, "#vm-form input[name=access][value=restricted] + span")
        .await
        .click()
        .await
        .unwrap();
    fill(&c, "#vm-form textarea[name=user_paths]", "/team/alpha").await;
    css(&c, "#save-vm").await.click().await.unwrap();
    let edited = text_eventually(&c, "#vm-table tr[data-source='ui-smart']", "Restricted").await;
    assert!(edited.contains("/team/alpha"), "{edited}");
    shot(&c, "06-edited.png").await;
    let denied = g.post(
        "/v1/chat/completions",
        &json!({"model": "ui-smart", "messages": []}),
        &[("authorization", &format!("Bearer {KEY}"))],
    );
    // Out of scope: the name falls through to the literal model, which does not exist.
    assert_eq!(denied.status, 404, "{}", denied.body);

    // Rename, then delete, through the dialogs.
    let row = css(&c, "#vm-table tr[data-source='ui-smart']").await;
    row.find(Locator::Css("[data-action=rename]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    fill(&c, "#rename-form input[name=new_source]", "ui-renamed").await;
    css(&c, "#rename-submit").await.click().await.unwrap();
    let renamed = css(&c, "#vm-table tr[data-source='ui-renamed']").await;
    assert!(c
        .find(Locator::Css("#vm-table tr[data-source='ui-smart']"))
        .await
        .is_err());
    renamed
        .find(Locator::Css("[data-action=delete]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_eventually(&c, "#confirm-title", "ui-renamed").await;
    shot(&c, "07-delete.png").await;
    css(&c, "#confirm-ok").await.click().await.unwrap();
    text_eventually(&c, "#toast", "Deleted ui-renamed").await;
    gone_eventually(&c, "#vm-table tr[data-source='ui-renamed']").await;
    let list = g.call(
        "GET",
        "/admin/api/v1/virtual-models",
        None,
        &[("authorization", &format!("Bearer {KEY}"))],
    );
    assert!(!list.body.contains("ui-renamed") && !list.body.contains("ui-smart"));

    c.close().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn the_playground_streams_an_answer_from_a_virtual_model() {
    // The first target fails; the second is the built-in mock, priced, which streams.
    let down = Upstream::start(&["m1"], |_| {
        Reply::Json(
            500,
            json!({"error": {"message": "down", "type": "server_error"}}),
        )
    });
    let config = format!(
        "providers:\n{}  demo:\n    type: mock\n    models:\n      - {{id: chatty, pricing: {{input_per_mtok: 2.0, output_per_mtok: 8.0}}}}\nvirtual_models:\n  - source: pg-smart\n    strategy: priority\n    targets: [a/m1, demo/chatty]\n",
        provider_block("a", &down, &["m1"])
    );
    let g = Gateway::start(&config, &[("MODELGATE_MASTER_KEY", KEY)]);
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    c.goto(&g.url("/admin/dashboard")).await.unwrap();
    css(&c, "#login-key").await.send_keys(KEY).await.unwrap();
    css(&c, "#login-submit").await.click().await.unwrap();

    // "Try" on the virtual model's row opens the playground with it chosen.
    css(&c, "#vm-table tr[data-source='pg-smart'] [data-try]")
        .await
        .click()
        .await
        .unwrap();
    let playground = css(&c, "#playground").await;
    assert!(playground.is_displayed().await.unwrap());
    let label = css(&c, "#playground label:has(> select#pg-model) > span").await;
    assert_eq!(label.text().await.unwrap(), "Model");
    value_eventually(&c, "#pg-model", "pg-smart").await;
    // Every model the key may use is listed: the virtual model and the concrete ones.
    let options = text_eventually(&c, "#pg-model", "demo/chatty").await;
    assert!(options.contains("a/m1"), "{options}");
    assert!(css(&c, "#pg-stream").await.is_selected().await.unwrap());

    fill(&c, "#pg-system", "Be brief.").await;
    fill(&c, "#pg-message", "hello playground").await;
    let send = css(&c, "#pg-send").await;
    assert_eq!(send.text().await.unwrap(), "Send");
    send.click().await.unwrap();

    let answer = text_eventually(&c, "#pg-answer", "You said: hello playground").await;
    assert!(
        answer.starts_with("Hello from the modelgate mock provider"),
        "{answer}"
    );
    text_eventually(&c, "#pg-served", "demo/chatty").await;
    // Two tries on the failing target, then the mock.
    text_eventually(&c, "#pg-attempts", "3").await;
    let tokens = text_eventually(&c, "#pg-tokens", " out").await;
    assert!(tokens.contains(" in · "), "{tokens}");
    let cost = text_eventually(&c, "#pg-cost", "$").await;
    assert!(cost.starts_with("$0.0000"), "{cost}");
    text_eventually(&c, "#pg-ttft", "ms").await;
    shot(&c, "08-playground.png").await;

    // The page called the gateway's own endpoint, streaming by default.
    let sent = down.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].path, "/v1/chat/completions");
    let body = sent[0].json();
    assert_eq!(body["stream"], true);
    assert_eq!(body["messages"][0]["content"], "Be brief.");
    assert_eq!(body["messages"][1]["content"], "hello playground");
    assert_eq!(sent[0].header("authorization"), Some("Bearer sk-test-a"));

    // A second message carries the conversation so far; "New chat" starts over.
    fill(&c, "#pg-message", "and again").await;
    css(&c, "#pg-send").await.click().await.unwrap();
    text_eventually(&c, "#pg-answer", "You said: and again").await;
    let history = text_eventually(&c, "#pg-history", "hello playground").await;
    assert!(history.contains("You said: hello playground"), "{history}");
    shot(&c, "09-playground-conversation.png").await;
    let sent = down.requests();
    assert_eq!(sent.len(), 4);
    let roles: Vec<String> = sent[2].json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(sent[2].json()["messages"][3]["content"], "and again");
    css(&c, "#pg-new").await.click().await.unwrap();
    assert!(!css(&c, "#pg-history").await.is_displayed().await.unwrap());

    // Back to the models page.
    css(&c, "#nav-models").await.click().await.unwrap();
    let vm_table = css(&c, "#vm-table").await;
    assert!(vm_table.is_displayed().await.unwrap());
    assert!(!css(&c, "#playground").await.is_displayed().await.unwrap());
    c.close().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn the_dashboard_creates_a_key_shows_its_secret_once_and_revokes_it() {
    let up = Upstream::echo(&["m1"]);
    let config = format!("providers:\n{}", provider_block("a", &up, &["m1"]));
    let g = Gateway::start(
        &config,
        &[
            ("MODELGATE_MASTER_KEY", KEY),
            ("STORE_USAGE_FLUSH_SECONDS", "1"),
        ],
    );
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    c.goto(&g.url("/admin/dashboard")).await.unwrap();
    css(&c, "#login-key").await.send_keys(KEY).await.unwrap();
    css(&c, "#login-submit").await.click().await.unwrap();

    css(&c, "#new-key").await.click().await.unwrap();
    fill(&c, "#key-form input[name=name]", "ui-bot").await;
    fill(&c, "#key-form input[name=user_path]", "/team/ui").await;
    fill(&c, "#key-form input[name=rpm]", "30").await;
    css(&c, "#key-form button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    let shown = text_eventually(&c, "#key-secret", "mg-").await;
    let secret = shown
        .split_whitespace()
        .find(|w| w.starts_with("mg-"))
        .unwrap()
        .to_string();
    let row = text_eventually(&c, "#key-table", "ui-bot").await;
    assert!(row.contains("/team/ui") && row.contains("30 rpm"), "{row}");
    assert!(!row.contains(&secret), "the list shows the secret");
    shot(&c, "08-keys.png").await;

    // The secret works, and its usage reaches the usage card.
    let r = g.post(
        "/v1/chat/completions",
        &serde_json::json!({"model": "a/m1", "messages": [{"role": "user", "content": "hi"}]}),
        &[("authorization", &format!("Bearer {secret}"))],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    for _ in 0..100 {
        c.execute(
            "document.getElementById('usage-range').dispatchEvent(new Event('change'))",
            vec![],
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        if let Ok(t) = css(&c, "#usage-table").await.text().await {
            if t.contains("a/m1") {
                break;
            }
        }
    }
    text_eventually(&c, "#usage-table", "a/m1").await;
    css(&c, "#usage-chart rect").await;
    shot(&c, "09-usage.png").await;

    css(&c, "#key-table button.danger")
        .await
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    text_eventually(&c, "#key-empty", "No API keys").await;
    let r = g.post(
        "/v1/chat/completions",
        &serde_json::json!({"model": "a/m1", "messages": [{"role": "user", "content": "hi"}]}),
        &[("authorization", &format!("Bearer {secret}"))],
    );
    assert_eq!(r.status, 401);
    c.close().await.unwrap();
}

/// The browser's console lines at level SEVERE so far (chromedriver's log endpoint): failed
/// loads (a 404 favicon, a refused API call) and script errors.
async fn console_errors(c: &Client, driver: &Driver) -> Vec<String> {
    use std::io::{Read, Write};
    let sid = c.session_id().await.unwrap().expect("a session id");
    let body = r#"{"type":"browser"}"#;
    let mut s = TcpStream::connect(("127.0.0.1", driver.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /session/{sid}/se/log HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let json = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // A chunked answer: the JSON lies between the first line (its size) and the last chunk.
    let json = json
        .find('{')
        .and_then(|a| json.rfind('}').map(|b| &json[a..=b]))
        .unwrap_or("{}");
    let v: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("chromedriver's log answer {out:?}: {e}"));
    v["value"]
        .as_array()
        .unwrap_or_else(|| panic!("no log entries in {out}"))
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn signing_in_by_a_playground_link_or_as_a_manager_leaves_no_error() {
    let config = "providers:\n  demo:\n    type: mock\n    models: [chatty]\n";
    let g = Gateway::start(config, &[("MODELGATE_MASTER_KEY", KEY)]);
    let auth = format!("Bearer {KEY}");
    let master = [("authorization", auth.as_str())];
    // A store row with an empty user_paths list: open to everyone, as an absent list is.
    let r = g.call(
        "POST",
        "/admin/api/v1/virtual-models",
        Some(&json!({"source": "grp/open", "target": "demo/chatty", "user_paths": []})),
        &master,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = g.call(
        "POST",
        "/admin/api/v1/keys",
        Some(&json!({"name": "lead", "scopes": ["inference", "manage:grp"]})),
        &master,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let manager = r.json()["key"].as_str().unwrap().to_string();
    // TrueFoundry's spelling of a strategy, and a one-target priority entry.
    for body in [
        json!({"source": "grp/tf", "routing_config": {"type": "latency-based-routing"},
               "load_balance_targets": [{"target": "demo/chatty"}]}),
        json!({"source": "grp/one", "strategy": "priority", "targets": [{"model": "demo/chatty"}]}),
    ] {
        let r = g.call("POST", "/admin/api/v1/virtual-models", Some(&body), &master);
        assert_eq!(r.status, 201, "{}", r.body);
    }

    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let mut caps_client = browser(&driver, profile.path()).await;
    let c = &mut caps_client;
    // A playground link opened before signing in: after the sign-in, the model is chosen and
    // no error is left over from the list the page could not load without the key.
    c.goto(&g.url("/admin/dashboard#playground?model=grp/open"))
        .await
        .unwrap();
    css(c, "#login-key").await.send_keys(KEY).await.unwrap();
    css(c, "#login-submit").await.click().await.unwrap();
    value_eventually(c, "#pg-model", "grp/open").await;
    assert!(!css(c, "#pg-error").await.is_displayed().await.unwrap());
    // The page asked for nothing before the key but one status call (its 401 shows the
    // sign-in), and has an icon: no other failed load.
    let errors = console_errors(c, &driver).await;
    assert!(errors.len() <= 1, "{errors:#?}");
    assert!(
        errors
            .iter()
            .all(|e| e.contains("/admin/api/v1/status") && e.contains("401")),
        "{errors:#?}"
    );

    // The empty list shows as Enabled.
    css(c, "#nav-models").await.click().await.unwrap();
    let badge = text_eventually(
        c,
        "#vm-table tr[data-source='grp/open'] .badge.state-enabled",
        "Enabled",
    )
    .await;
    assert_eq!(badge, "Enabled");
    // TrueFoundry's routing type reads as the strategy it is.
    let strategy = text_eventually(
        c,
        "#vm-table tr[data-source='grp/tf'] td:nth-child(3)",
        "latency",
    )
    .await;
    assert_eq!(strategy, "latency");
    // Saving a one-target entry unchanged keeps its strategy.
    css(
        c,
        "#vm-table tr[data-source='grp/one'] [data-action='edit']",
    )
    .await
    .click()
    .await
    .unwrap();
    css(c, "#save-vm").await.click().await.unwrap();
    gone_eventually(c, "#vm-dialog[open]").await;
    let one = g.call(
        "GET",
        "/admin/api/v1/virtual-models/grp%2Fone",
        None,
        &master,
    );
    assert_eq!(one.json()["strategy"], "priority", "{}", one.body);

    // A manager key signs in too: its virtual models show, without the master key's cards.
    css(c, "#sign-out").await.click().await.unwrap();
    css(c, "#login-key")
        .await
        .send_keys(&manager)
        .await
        .unwrap();
    css(c, "#login-submit").await.click().await.unwrap();
    text_eventually(c, "#vm-table tr[data-source='grp/open']", "grp/open").await;
    assert!(!css(c, "#vm-notice").await.is_displayed().await.unwrap());
    assert!(!css(c, "#login").await.is_displayed().await.unwrap());
    shot(c, "10-manager-signed-in.png").await;
    caps_client.close().await.unwrap();
}
