//! Crash safety of the admin store: the real gateway takes admin writes in a loop (renames,
//! whole replacements, create/delete churn) and is killed with SIGKILL at random moments, 20
//! times over the same SQLite file. After each kill the file must open cleanly, pass SQLite's
//! integrity check, and hold whole rows only: every row decodes, its GoModel columns agree with
//! its entry, its fields agree with each other, and a rename (two statements in one
//! transaction) has happened wholly or not at all.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::*;
use modelgate::store::{columns, SqliteStore, Store};
use serde_json::json;

const ROUNDS: usize = 20;

const CONFIG: &str =
    "providers:\n  demo:\n    type: mock\n    models: [m1, m2, m3]\nvirtual_models: []\n";

/// The entry generation `n` writes: its fields all derive from `n`.
fn generation(source: &str, n: u64) -> serde_json::Value {
    let targets: Vec<_> = (0..(n % 3 + 1))
        .map(|i| json!({"model": format!("demo/m{}", i + 1), "weight": n}))
        .collect();
    json!({"source": source, "targets": targets, "description": format!("gen {n}"),
           "user_paths": [format!("/g{n}")]})
}

fn writer(port: u16, stop: Arc<AtomicBool>, done: Arc<AtomicUsize>, first: mpsc::Sender<()>) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let url = |p: &str| format!("http://127.0.0.1:{port}/admin/api/v1/virtual-models{p}");
    let send = |method: &str, p: &str, body: Option<serde_json::Value>| -> bool {
        let r = agent.request(method, &url(p));
        let res = match body {
            Some(b) => r.send_json(b),
            None => r.call(),
        };
        match res {
            Ok(_) => true,
            // A rule the write broke (a rename onto a row that a killed write left) is fine.
            Err(ureq::Error::Status(code, _)) => code < 500,
            Err(_) => false,
        }
    };
    let mut n: u64 = fastrand::u64(1..1_000_000);
    let mut signalled = false;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        let ok = send(
            "PUT",
            &format!("/gen-{}", n % 4),
            Some(generation(&format!("gen-{}", n % 4), n)),
        ) && send("PATCH", "/swap-a", Some(json!({"source": "swap-b"})))
            && send("PATCH", "/swap-b", Some(json!({"source": "swap-a"})))
            && if n % 2 == 0 {
                send("POST", "", Some(generation("churn", n)))
            } else {
                send("DELETE", "/churn", None)
            };
        if !ok {
            return;
        }
        done.fetch_add(1, Ordering::AcqRel);
        if !signalled {
            signalled = true;
            let _ = first.send(());
        }
    }
}

/// Checks one row: decodes, GoModel columns agree with its entry, fields agree with each other.
fn check_rows(db: &std::path::Path) -> Vec<String> {
    let store = SqliteStore::open(db).expect("the store opens after a kill");
    assert_eq!(store.integrity_check().unwrap(), "ok");
    let rows = store.list().expect("every row decodes");
    let conn = rusqlite::Connection::open(db).unwrap();
    for r in &rows {
        let (targets, user_paths, description, enabled): (String, String, String, i64) = conn
            .query_row(
                "SELECT targets, user_paths, description, enabled FROM virtual_models WHERE source = ?1",
                [r.source()],
                |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?)),
            )
            .unwrap();
        let c = columns::from_spec(&r.spec);
        assert_eq!(
            (c.targets, c.user_paths, c.description, c.enabled as i64),
            (targets, user_paths, description, enabled),
            "row {:?}: columns disagree with its entry",
            r.source()
        );
        if r.source().starts_with("gen-") || r.source() == "churn" {
            let d = r.spec.description.as_deref().unwrap_or("");
            let n: u64 = d
                .strip_prefix("gen ")
                .and_then(|x| x.parse().ok())
                .unwrap_or_else(|| panic!("row {:?} has a torn description {d:?}", r.source()));
            let want = generation(r.source(), n);
            let got = serde_json::to_value(&r.spec).unwrap();
            assert_eq!(
                got["user_paths"],
                want["user_paths"],
                "row {:?}",
                r.source()
            );
            let got_t = got["targets"].as_array().unwrap();
            assert_eq!(got_t.len(), want["targets"].as_array().unwrap().len());
            assert!(got_t.iter().all(|t| t["weight"].as_f64() == Some(n as f64)));
        }
    }
    rows.iter().map(|r| r.source().to_string()).collect()
}

#[test]
fn killed_at_random_points_the_store_keeps_whole_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let db_env = db.to_str().unwrap().to_string();
    {
        let g = Gateway::start(CONFIG, &[("SQLITE_PATH", &db_env)]);
        let r = g.call(
            "POST",
            "/admin/api/v1/virtual-models",
            Some(&json!({"source": "swap-a", "target": "demo/m1"})),
            &[],
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let total = Arc::new(AtomicUsize::new(0));
    for round in 0..ROUNDS {
        let mut g = Gateway::start(CONFIG, &[("SQLITE_PATH", &db_env)]);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let w = {
            let (port, stop, done) = (g.port, stop.clone(), total.clone());
            std::thread::spawn(move || writer(port, stop, done, tx))
        };
        // Let some writes land, then kill at a random moment in the stream of writes.
        let started = rx.recv_timeout(Duration::from_secs(20)).is_ok();
        assert!(started, "round {round}: no write succeeded: {}", g.logs());
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..120)));
        g.child.kill().unwrap();
        g.child.wait().unwrap();
        stop.store(true, Ordering::Release);
        w.join().unwrap();
        let sources = check_rows(&db);
        let swaps = sources.iter().filter(|s| s.starts_with("swap-")).count();
        assert_eq!(swaps, 1, "round {round}: a rename was torn: {sources:?}");
    }
    eprintln!(
        "{} write rounds (4 writes each) across {ROUNDS} kills",
        total.load(Ordering::Acquire)
    );
    assert!(
        total.load(Ordering::Acquire) >= ROUNDS,
        "too few writes to mean anything"
    );
}
