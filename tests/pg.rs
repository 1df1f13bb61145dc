//! Fleet mode on a real PostgreSQL server (127.0.0.1:5432, user postgres, trust auth; the
//! README's test command starts one where none runs). Every test creates its own database with
//! a random name and drops it afterwards, and starts real gateway binaries on it: a write
//! through one is live on the others, racing writers get one winner, a database out of reach
//! keeps requests served and refuses writes until it is back, migrations race safely, and
//! `store copy` moves rows both ways. A missing server fails these tests; none is skipped.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use modelgate::store::{Change, SqliteStore, Store, StoredRow};
use serde_json::{json, Value};

const VMS: &str = "/admin/api/v1/virtual-models";

/// Runs SQL through `psql` as the superuser and returns its unaligned output.
fn psql(db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "-d", db])
        .args(["-v", "ON_ERROR_STOP=1", "-tAqc", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .unwrap_or_else(|e| {
            panic!("psql could not run ({e}): install PostgreSQL with scripts/setup.sh")
        });
    assert!(
        out.status.success(),
        "psql {sql:?} failed (is PostgreSQL listening on 127.0.0.1:5432 with trust auth? scripts/setup.sh starts one): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A database of this test's own, dropped (connections and all) when the test ends.
struct Db {
    name: String,
}

impl Db {
    fn new() -> Db {
        let name = format!("mg_test_{:016x}", fastrand::u64(..));
        psql("postgres", &format!("CREATE DATABASE {name}"));
        Db { name }
    }

    fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:5432/{}", self.name)
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("STORAGE_TYPE", "postgresql".into()),
            ("POSTGRES_URL", self.url()),
        ]
    }

    fn sql(&self, sql: &str) -> String {
        psql(&self.name, sql)
    }

    /// Makes the database unreachable for the gateways without touching the shared server:
    /// no new connections, and the open ones terminated.
    fn cut(&self) {
        psql(
            "postgres",
            &format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", self.name),
        );
        psql(
            "postgres",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{}'",
                self.name
            ),
        );
    }

    fn restore(&self) {
        psql(
            "postgres",
            &format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", self.name),
        );
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

fn config(up: &Upstream) -> String {
    format!(
        "providers:\n{}virtual_models: []\n",
        provider_block("up", up, &["m1", "m2"])
    )
}

fn start(db: &Db, up: &Upstream, extra: &[(&str, &str)]) -> Gateway {
    let env = db.env();
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    Gateway::start(&config(up), &all)
}

/// Waits (at most 10 s) until `ok` holds; panics naming `what` otherwise.
fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not within 10 s");
}

/// The upstream model a chat for `model` is served by on `g`, or its status when not 200.
fn served(g: &Gateway, model: &str) -> Result<String, u16> {
    let r = g.chat(model);
    if r.status != 200 {
        return Err(r.status);
    }
    Ok(r.json()["model"].as_str().unwrap_or("").to_string())
}

/// Client threads asking `model` on a gateway port in a loop until stopped; every answer must
/// be a 200 served by one of the configured targets.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(ports: &[u16], clients_each: usize, model: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for &port in ports {
            for _ in 0..clients_each {
                let (stop, ok) = (stop.clone(), ok.clone());
                threads.push(std::thread::spawn(move || {
                    let agent = Gateway::agent();
                    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
                    let body =
                        json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::Acquire) {
                        match agent.post(&url).send_json(body.clone()) {
                            Ok(r) if r.status() == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => failures.push(format!("{port}: status {}", r.status())),
                            Err(e) => failures.push(format!("{port}: {e}")),
                        }
                    }
                    failures
                }));
            }
        }
        Load { stop, ok, threads }
    }

    /// Stops the clients; returns how many requests succeeded and every failure.
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Release);
        let failures = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

fn status(g: &Gateway) -> Value {
    g.call("GET", "/admin/api/v1/status", None, &[]).json()
}

#[test]
fn a_write_through_one_instance_is_live_on_the_others() {
    let db = Db::new();
    let up = Upstream::echo(&["m1", "m2"]);
    let (a, b, c) = (
        start(&db, &up, &[]),
        start(&db, &up, &[]),
        start(&db, &up, &[]),
    );
    assert_eq!(served(&b, "fleet"), Err(404));

    let r = a.call(
        "POST",
        VMS,
        Some(&json!({"source": "fleet", "target": "up/m1"})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    for g in [&b, &c] {
        eventually("the created model is live on every instance", || {
            served(g, "fleet") == Ok("m1".into())
        });
    }

    let r = b.call(
        "PATCH",
        &format!("{VMS}/fleet"),
        Some(&json!({"target": "up/m2"})),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    for g in [&a, &c] {
        eventually("the update is live on every instance", || {
            served(g, "fleet") == Ok("m2".into())
        });
    }

    assert_eq!(
        c.call("DELETE", &format!("{VMS}/fleet"), None, &[]).status,
        204
    );
    for g in [&a, &b] {
        eventually("the deleted model is gone on every instance", || {
            served(g, "fleet") == Err(404)
        });
    }
    let revisions: Vec<Value> = [&a, &b, &c]
        .iter()
        .map(|g| status(g)["store"]["revision"].clone())
        .collect();
    assert_eq!(revisions, vec![json!(3), json!(3), json!(3)]);
}

#[test]
fn a_fleet_under_load_takes_100_writes_without_failing_a_request() {
    let db = Db::new();
    let up = Upstream::echo(&["m1", "m2"]);
    let gs = [
        start(&db, &up, &[]),
        start(&db, &up, &[]),
        start(&db, &up, &[]),
    ];
    let r = gs[0].call(
        "POST",
        VMS,
        Some(&json!({"source": "steady", "target": "up/m1"})),
        &[],
    );
    assert_eq!(r.status, 201);
    for g in &gs {
        eventually("steady is live", || served(g, "steady").is_ok());
    }
    let ports: Vec<u16> = gs.iter().map(|g| g.port).collect();
    let load = Load::start(&ports, 4, "steady");
    for i in 0..100 {
        let g = &gs[i % 2];
        let r = if i % 3 == 0 {
            let target = if i % 2 == 0 { "up/m2" } else { "up/m1" };
            g.call(
                "PATCH",
                &format!("{VMS}/steady"),
                Some(&json!({"target": target})),
                &[],
            )
        } else {
            let source = format!("churn-{}", i % 7);
            g.call(
                "PUT",
                &format!("{VMS}/{source}"),
                Some(&json!({"source": source, "target": "up/m1", "description": i.to_string()})),
                &[],
            )
        };
        assert!(
            r.status == 200 || r.status == 201,
            "write {i}: {} {}",
            r.status,
            r.body
        );
    }
    for g in &gs {
        eventually("every instance ends on the last revision", || {
            status(g)["store"]["revision"] == 101
        });
    }
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 0);
}

#[test]
fn a_key_created_or_revoked_through_one_instance_is_live_on_the_others() {
    let db = Db::new();
    let up = Upstream::echo(&["m1", "m2"]);
    let (a, b) = (start(&db, &up, &[]), start(&db, &up, &[]));
    let r = a.call(
        "POST",
        "/admin/api/v1/keys",
        Some(&json!({"name": "fleet", "user_path": "/t"})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let auth = format!("Bearer {}", r.json()["key"].as_str().unwrap());
    let on_b = || {
        b.post(
            "/v1/chat/completions",
            &json!({"model": "up/m1", "messages": [{"role": "user", "content": "hi"}]}),
            &[("authorization", auth.as_str())],
        )
        .status
    };
    eventually("the key works on B", || on_b() == 200);
    // Only its hash is in the shared database.
    let stored = db.sql("SELECT hash FROM modelgate_api_keys WHERE name = 'fleet'");
    assert_eq!(stored.len(), 64);
    assert!(!auth.contains(&stored));
    assert_eq!(
        a.call("DELETE", "/admin/api/v1/keys/fleet", None, &[])
            .status,
        204
    );
    eventually("the revoked key is refused on B", || on_b() == 401);
}

#[test]
fn two_instances_racing_on_one_etag_give_exactly_one_winner() {
    let db = Db::new();
    let up = Upstream::echo(&["m1", "m2"]);
    let gs = Arc::new([start(&db, &up, &[]), start(&db, &up, &[])]);
    let r = gs[0].call(
        "POST",
        VMS,
        Some(&json!({"source": "race", "target": "up/m1"})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let mut etag = r.header("etag").unwrap().to_string();
    for round in 0..100 {
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = (0..2)
            .map(|i| {
                let (gs, barrier, etag) = (gs.clone(), barrier.clone(), etag.clone());
                std::thread::spawn(move || {
                    let body = json!({"source": "race", "target": "up/m1", "description": format!("{round}-{i}")});
                    barrier.wait();
                    gs[i].call("PUT", &format!("{VMS}/race"), Some(&body), &[("if-match", &etag)])
                })
            })
            .collect();
        let results: Vec<Resp> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        let winners: Vec<&Resp> = results.iter().filter(|r| r.status == 200).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {:?}",
            results.iter().map(|r| &r.body).collect::<Vec<_>>()
        );
        let loser = results.iter().find(|r| r.status != 200).unwrap();
        assert_eq!(
            (loser.status, loser.error_code().as_str()),
            (409, "etag_mismatch"),
            "round {round}"
        );
        etag = winners[0].header("etag").unwrap().to_string();
    }
    // 1 create + 100 winning writes, and the row holds the last winner's etag.
    assert_eq!(
        db.sql("SELECT revision FROM modelgate_store_revision"),
        "101"
    );
    assert_eq!(
        format!(
            "\"{}\"",
            db.sql("SELECT etag FROM virtual_models WHERE source = 'race'")
        ),
        etag
    );
}

#[test]
fn rename_and_create_conflicts_are_decided_against_the_database() {
    let db = Db::new();
    let up = Upstream::echo(&["m1", "m2"]);
    let (a, b) = (start(&db, &up, &[]), start(&db, &up, &[]));
    let mk = |g: &Gateway, s: &str| {
        g.call(
            "POST",
            VMS,
            Some(&json!({"source": s, "target": "up/m1"})),
            &[],
        )
    };
    assert_eq!(mk(&a, "x").status, 201);
    // B has not necessarily rebuilt yet: the conflict comes from the rows in the database.
    let r = mk(&b, "x");
    assert_eq!((r.status, r.error_code().as_str()), (409, "already_exists"));
    assert_eq!(mk(&b, "y").status, 201);
    let r = a.call(
        "PATCH",
        &format!("{VMS}/x"),
        Some(&json!({"source": "y"})),
        &[],
    );
    assert_eq!((r.status, r.error_code().as_str()), (409, "already_exists"));
}

#[test]
fn a_missed_notification_is_healed_by_the_revision_poll() {
    let db = Db::new();
    let up = Upstream::echo(&["m1", "m2"]);
    let g = start(&db, &up, &[("STORE_POLL_SECONDS", "1")]);
    // Another writer that changes the rows and the revision but sends no NOTIFY.
    db.sql(
        "BEGIN;
         INSERT INTO virtual_models (source, targets, created_at, updated_at, spec, etag)
           VALUES ('quiet', '[]', 1, 1, '{\"source\":\"quiet\",\"target\":\"up/m2\"}', 'q1');
         UPDATE modelgate_store_revision SET revision = revision + 1;
         COMMIT;",
    );
    eventually("the poll finds the new revision", || {
        served(&g, "quiet") == Ok("m2".into())
    });
    assert_eq!(status(&g)["store"]["revision"], 1);
}

#[test]
fn a_database_out_of_reach_keeps_requests_served_refuses_writes_and_recovers() {
    let db = Db::new();
    let up = Upstream::echo(&["m1", "m2"]);
    let (a, b) = (start(&db, &up, &[]), start(&db, &up, &[]));
    let r = a.call(
        "POST",
        VMS,
        Some(&json!({"source": "fleet", "target": "up/m1"})),
        &[],
    );
    assert_eq!(r.status, 201);
    eventually("live on B", || served(&b, "fleet") == Ok("m1".into()));
    let load = Load::start(&[a.port, b.port], 2, "fleet");

    db.cut();
    for g in [&a, &b] {
        eventually("the lost connection is reported", || {
            status(g)["store"]["connected"] == false
        });
        let s = status(g);
        assert!(
            s["store"]["last_error"]
                .as_str()
                .unwrap()
                .contains("unavailable"),
            "{s}"
        );
        let metrics = g.get("/metrics").1;
        assert!(
            metrics.contains("\nmodelgate_store_connected 0\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("\nmodelgate_store_revision 1\n"),
            "{metrics}"
        );
        for _ in 0..5 {
            assert_eq!(served(g, "fleet"), Ok("m1".into()));
        }
    }
    let r = a.call(
        "POST",
        VMS,
        Some(&json!({"source": "later", "target": "up/m2"})),
        &[],
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "store_unavailable"),
        "{}",
        r.body
    );
    assert_eq!(r.json()["error"]["type"], "service_unavailable");
    let r = b.call("DELETE", &format!("{VMS}/fleet"), None, &[]);
    assert_eq!(r.status, 503);
    let r = b.call("GET", VMS, None, &[]);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "store_unavailable")
    );
    assert_eq!(served(&b, "fleet"), Ok("m1".into()));
    // A config change still applies meanwhile, keeping the store rows the gateway has.
    let edited = config(&up).replace(
        "virtual_models: []",
        "virtual_models:\n  - source: cfgvm\n    target: up/m2",
    );
    std::fs::write(&a.config, edited).unwrap();
    eventually("the config reload applies during the outage", || {
        served(&a, "cfgvm") == Ok("m2".into())
    });
    assert_eq!(served(&a, "fleet"), Ok("m1".into()));

    db.restore();
    eventually("writes are taken again", || {
        a.call(
            "POST",
            VMS,
            Some(&json!({"source": "later", "target": "up/m2"})),
            &[],
        )
        .status
            == 201
    });
    eventually("the write after the outage is live on B", || {
        served(&b, "later") == Ok("m2".into())
    });
    for g in [&a, &b] {
        eventually("connected again", || {
            status(g)["store"]["connected"] == true
        });
        // The outage is over: its error is no longer the store's state.
        assert_eq!(status(g)["store"]["last_error"], serde_json::Value::Null);
    }
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "requests failed during the outage: {failures:?}"
    );
    assert!(ok > 0);
}

#[test]
fn three_instances_migrate_one_fresh_database_at_once() {
    let db = Arc::new(Db::new());
    let up = Arc::new(Upstream::echo(&["m1", "m2"]));
    let barrier = Arc::new(Barrier::new(3));
    let starters: Vec<_> = (0..3)
        .map(|_| {
            let (db, up, barrier) = (db.clone(), up.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                start(&db, &up, &[])
            })
        })
        .collect();
    let gs: Vec<Gateway> = starters.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        db.sql("SELECT string_agg(version::text, ',' ORDER BY version) FROM modelgate_schema_migrations"),
        "1,2,3,4"
    );
    assert_eq!(db.sql("SELECT count(*) FROM modelgate_store_revision"), "1");
    let r = gs[2].call(
        "POST",
        VMS,
        Some(&json!({"source": "m", "target": "up/m1"})),
        &[],
    );
    assert_eq!(r.status, 201);
    eventually("live on the first", || {
        served(&gs[0], "m") == Ok("m1".into())
    });
}

fn row(source: &str, etag: &str, created: i64, updated: i64) -> StoredRow {
    StoredRow {
        spec: serde_json::from_value(
            json!({"source": source, "target": "up/m1", "description": "copied"}),
        )
        .unwrap(),
        created_at: created,
        updated_at: updated,
        etag: etag.into(),
    }
}

#[test]
fn store_copy_moves_rows_both_ways_keeping_etags_and_times() {
    let db = Db::new();
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("from.db");
    let sqlite = SqliteStore::open(&from).unwrap();
    sqlite
        .apply(&[
            Change::Upsert(Box::new(row("alpha", "e-alpha", 100, 200))),
            Change::Upsert(Box::new(row("beta", "e-beta", 300, 400))),
        ])
        .unwrap();
    sqlite
        .add_usage(&[modelgate::store::UsageRow {
            hour: 3600,
            key: "ci".into(),
            user_path: "/t".into(),
            virtual_model: "alpha".into(),
            model: "p/m".into(),
            requests: 3,
            input_tokens: 30,
            output_tokens: 6,
            cost_usd: 0.25,
        }])
        .unwrap();
    let rows = sqlite.list().unwrap();
    drop(sqlite);
    let from_arg = format!("sqlite:{}", from.display());

    let (code, out) = run_cli(
        "",
        &["store", "copy", "--from", &from_arg, "--to", &db.url()],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("copied 2 virtual models, 0 API keys and 1 usage rows"),
        "{out}"
    );
    assert_eq!(
        db.sql("SELECT hour || ' ' || requests || ' ' || input_tokens FROM modelgate_usage"),
        "3600 3 30"
    );
    assert_eq!(
        db.sql("SELECT string_agg(source || ' ' || etag || ' ' || created_at || ' ' || updated_at, ',' ORDER BY source) FROM virtual_models"),
        "alpha e-alpha 100 200,beta e-beta 300 400"
    );

    let (code, out) = run_cli(
        "",
        &["store", "copy", "--from", &from_arg, "--to", &db.url()],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("already holds 2 virtual models, 0 API keys and 1 usage rows; pass --replace"),
        "{out}"
    );
    let (code, out) = run_cli(
        "",
        &[
            "store",
            "copy",
            "--from",
            &from_arg,
            "--to",
            &db.url(),
            "--replace",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    // Replaced, not added to.
    assert_eq!(
        db.sql("SELECT hour || ' ' || requests || ' ' || input_tokens FROM modelgate_usage"),
        "3600 3 30"
    );

    let back = dir.path().join("back.db");
    let back_arg = format!("sqlite:{}", back.display());
    let (code, out) = run_cli(
        "",
        &["store", "copy", "--from", &db.url(), "--to", &back_arg],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(SqliteStore::open(&back).unwrap().list().unwrap(), rows);

    // A gateway on the copied database serves the rows.
    let up = Upstream::echo(&["m1", "m2"]);
    let g = start(&db, &up, &[]);
    assert_eq!(served(&g, "beta"), Ok("m1".into()));
}

#[test]
fn bad_store_settings_and_urls_are_clear_errors() {
    let (code, out) = run_cli(
        "",
        &[
            "store",
            "copy",
            "--from",
            "sqlite:x.db",
            "--to",
            "mysql://root:pw@h/db",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        out.contains(
            "--to \"mysql://root:***@h/db\" is neither sqlite:PATH nor a postgresql:// URL"
        ),
        "{out}"
    );
    let (code, out) = run_cli(
        "",
        &[
            "store",
            "copy",
            "--from",
            "sqlite:absent.db",
            "--to",
            "sqlite:b.db",
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("--from sqlite:absent.db: no such file"),
        "{out}"
    );
    let (code, out) = run_cli("", &["check"], &[("STORAGE_TYPE", "postgresql")]);
    assert_eq!(code, 1);
    assert!(
        out.contains("STORAGE_TYPE is postgresql but no database is named; set POSTGRES_URL"),
        "{out}"
    );
    let (code, out) = run_cli(
        "",
        &["check"],
        &[
            ("STORAGE_TYPE", "postgresql"),
            ("POSTGRES_URL", "postgresql://u:pw@h:port/db"),
        ],
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("POSTGRES_URL \"postgresql://u:***@h:port/db\" is not a valid URL"),
        "{out}"
    );
    // A database that does not exist stops start-up with the reason.
    let (code, out) = run_cli(
        "",
        &["check"],
        &[
            ("STORAGE_TYPE", "postgresql"),
            (
                "POSTGRES_URL",
                "postgresql://postgres@127.0.0.1:5432/mg_no_such_db",
            ),
        ],
    );
    assert_eq!(code, 1);
    assert!(out.contains("is unavailable: cannot connect"), "{out}");
    assert!(out.contains("mg_no_such_db"), "{out}");
}

#[test]
fn check_names_the_store_and_its_revision() {
    let db = Db::new();
    let up = Upstream::echo(&["m1", "m2"]);
    {
        let g = start(&db, &up, &[]);
        let r = g.call(
            "POST",
            VMS,
            Some(&json!({"source": "c", "target": "up/m1"})),
            &[],
        );
        assert_eq!(r.status, 201);
        let s = status(&g)["store"].clone();
        assert_eq!(s["type"], "postgresql");
        assert_eq!(s["url"], json!(db.url()));
        assert_eq!(
            (s["revision"].clone(), s["connected"].clone()),
            (json!(1), json!(true))
        );
    }
    let env = db.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (code, out) = run_cli(&config(&up), &["check"], &env);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("store: postgresql at {} (revision 1)", db.url())),
        "{out}"
    );
}

/// Propagation latency, run by hand (BENCHMARKS.md):
/// `cargo test --test pg -- --ignored --nocapture propagation_latency`.
/// 200 writes through A; for each, the time from sending the write to A until a request to B is
/// served by the new target (B is asked in a loop meanwhile).
#[test]
#[ignore]
fn propagation_latency() {
    let db = Db::new();
    let up = Upstream::echo(&["m1", "m2"]);
    let (a, b) = (start(&db, &up, &[]), start(&db, &up, &[]));
    let r = a.call(
        "POST",
        VMS,
        Some(&json!({"source": "p", "target": "up/m1"})),
        &[],
    );
    assert_eq!(r.status, 201);
    eventually("live on B", || served(&b, "p") == Ok("m1".into()));
    let mut samples = Vec::new();
    let mut writes = Vec::new();
    for i in 0..200 {
        let want = if i % 2 == 0 { "m2" } else { "m1" };
        let t = Instant::now();
        let r = a.call(
            "PATCH",
            &format!("{VMS}/p"),
            Some(&json!({"target": format!("up/{want}")})),
            &[],
        );
        assert_eq!(r.status, 200);
        let acked = t.elapsed();
        let deadline = t + Duration::from_secs(5);
        while served(&b, "p").as_deref() != Ok(want) {
            assert!(
                Instant::now() < deadline,
                "write {i} not live on B within 5 s"
            );
        }
        samples.push(t.elapsed());
        writes.push(acked);
    }
    writes.sort();
    samples.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    println!(
        "write answered by A over {} writes: p50 {:?}, p99 {:?}, max {:?}",
        writes.len(),
        pct(&writes, 0.50),
        pct(&writes, 0.99),
        writes[writes.len() - 1]
    );
    println!(
        "live on B over {} writes: p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        pct(&samples, 0.50),
        pct(&samples, 0.99),
        samples[samples.len() - 1]
    );
}

/// Recovery after an outage, run by hand (BENCHMARKS.md):
/// `cargo test --test pg -- --ignored --nocapture outage_recovery`.
/// Ten times: the database is cut for 10 s under load (2 clients per gateway), then restored;
/// measured from the restore until a write through A is taken and until B serves it. Every
/// client request must succeed throughout.
#[test]
#[ignore]
fn outage_recovery() {
    let db = Db::new();
    let up = Upstream::echo(&["m1", "m2"]);
    let (a, b) = (start(&db, &up, &[]), start(&db, &up, &[]));
    let r = a.call(
        "POST",
        VMS,
        Some(&json!({"source": "fleet", "target": "up/m1"})),
        &[],
    );
    assert_eq!(r.status, 201);
    eventually("live on B", || served(&b, "fleet") == Ok("m1".into()));
    let load = Load::start(&[a.port, b.port], 2, "fleet");
    let mut taken = Vec::new();
    let mut live = Vec::new();
    for i in 0..10 {
        db.cut();
        std::thread::sleep(Duration::from_secs(10));
        let source = format!("after-{i}");
        let body = json!({"source": source, "target": "up/m2"});
        assert_eq!(a.call("POST", VMS, Some(&body), &[]).status, 503);
        db.restore();
        let t = Instant::now();
        eventually("a write is taken again", || {
            a.call("POST", VMS, Some(&body), &[]).status == 201
        });
        taken.push(t.elapsed());
        eventually("the write is live on B", || {
            served(&b, &source) == Ok("m2".into())
        });
        live.push(t.elapsed());
    }
    let (ok, failures) = load.finish();
    assert!(failures.is_empty(), "{failures:?}");
    taken.sort();
    live.sort();
    println!(
        "{ok} client requests, none failed; after the restore: write taken p50 {:?} max {:?}; live on B p50 {:?} max {:?}",
        taken[taken.len() / 2],
        taken[taken.len() - 1],
        live[live.len() / 2],
        live[live.len() - 1]
    );
}
