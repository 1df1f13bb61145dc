//! Static checks of `packaging/`: what can be validated without a container engine, a systemd
//! host or a cluster. The Dockerfile's sources exist and its runtime stage is hardened; the
//! systemd unit passes `systemd-analyze verify` (when installed) and its command line is one the
//! binary accepts; the Kubernetes manifests parse, have the expected kinds, reference each other
//! consistently, and carry a config modelgate loads.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ------------------------------------------------------------------ Dockerfile

/// Instructions (keyword, arguments) with continuation lines joined and comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("packaging/docker/Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (kw, args) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((kw.to_ascii_uppercase(), args.trim().to_string()));
        current.clear();
    }
    out
}

/// The instructions of the last stage.
fn runtime_stage(all: &[(String, String)]) -> Vec<(String, String)> {
    let last_from = all.iter().rposition(|(k, _)| k == "FROM").unwrap();
    all[last_from..].to_vec()
}

fn args_of<'a>(stage: &'a [(String, String)], kw: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|(k, _)| k == kw)
        .map(|(_, a)| a.as_str())
        .collect()
}

#[test]
fn dockerfile_copies_paths_that_exist_and_are_in_the_build_context() {
    let ignored: BTreeSet<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let mut copies = 0;
    for (kw, args) in dockerfile() {
        if kw != "COPY" && kw != "ADD" {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        if words.iter().any(|w| w.starts_with("--from")) {
            continue;
        }
        let paths: Vec<&str> = words
            .iter()
            .copied()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let (_, sources) = paths.split_last().expect("COPY has a destination");
        for src in sources {
            assert!(
                root().join(src).exists(),
                "the Dockerfile copies {src}, which does not exist"
            );
            let first = src.trim_start_matches("./").split('/').next().unwrap();
            assert!(
                !ignored.contains(first),
                "the Dockerfile copies {src}, which .dockerignore excludes"
            );
            copies += 1;
        }
    }
    assert!(
        copies >= 4,
        "expected the manifests, sources and config to be copied"
    );
}

/// Paths cargo must find to read the workspace manifest: explicit targets (a missing
/// `[[bench]]` file fails even `cargo build -p modelgate`) and workspace members.
fn manifest_paths() -> Vec<String> {
    let value = |l: &str| {
        l.split_once('=')
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
    };
    let mut out = vec![
        "Cargo.toml".to_string(),
        "Cargo.lock".to_string(),
        "src".to_string(),
    ];
    // (section, name, path) of each `[[kind]]` table.
    let mut targets: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    let mut section = String::new();
    for line in read("Cargo.toml").lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
            if line.starts_with("[[") {
                targets.push((section.clone(), None, None));
            }
        } else if let Some(t) = targets.last_mut().filter(|t| t.0 == section) {
            if line.starts_with("name") {
                t.1 = value(line);
            } else if line.starts_with("path") {
                t.2 = value(line);
            }
        } else if section == "[workspace]" && line.starts_with("members") {
            let list = value(line).unwrap_or_default();
            out.extend(
                list.trim_matches(['[', ']'])
                    .split(',')
                    .map(|m| m.trim().trim_matches('"').to_string())
                    .filter(|m| !m.is_empty()),
            );
        }
    }
    for (kind, name, path) in targets {
        let dir = match kind.as_str() {
            "[[bench]]" => "benches",
            "[[test]]" => "tests",
            "[[example]]" => "examples",
            "[[bin]]" => "src/bin",
            _ => continue,
        };
        match (path, name) {
            (Some(p), _) => out.push(p),
            (None, Some(n)) => out.push(format!("{dir}/{n}.rs")),
            (None, None) => {}
        }
    }
    out
}

#[test]
fn dockerfile_copies_everything_cargo_needs_to_read_the_manifest() {
    let all = dockerfile();
    let start = all
        .iter()
        .position(|(k, a)| k == "FROM" && a.ends_with("AS build"))
        .expect("a build stage named `build`");
    let copied: BTreeSet<String> = all[start + 1..]
        .iter()
        .take_while(|(k, _)| k != "FROM")
        .filter(|(k, _)| k == "COPY")
        .flat_map(|(_, a)| {
            let words: Vec<&str> = a
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.trim_start_matches("./").trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for needed in manifest_paths() {
        assert!(
            root().join(&needed).exists(),
            "Cargo.toml names {needed}, which is missing"
        );
        let covered = copied
            .iter()
            .any(|c| needed == *c || needed.starts_with(&format!("{c}/")));
        assert!(
            covered,
            "cargo needs {needed} to read Cargo.toml, but the Dockerfile's build stage does not \
             copy it (it copies {copied:?})"
        );
    }
}

#[test]
fn dockerfile_runtime_stage_is_small_non_root_and_health_checked() {
    let all = dockerfile();
    let froms = args_of(&all, "FROM");
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(
        froms.last().unwrap().contains("slim"),
        "small runtime base: {froms:?}"
    );
    let build_cmds = args_of(&all, "RUN").join("\n");
    assert!(build_cmds.contains("cargo build --release --locked -p modelgate"));

    let rt = runtime_stage(&all);
    let user = args_of(&rt, "USER");
    let user = user.last().expect("the runtime stage sets USER");
    let name = user.split(':').next().unwrap();
    assert!(name != "root" && name != "0", "runs as root: {user}");

    let health = args_of(&rt, "HEALTHCHECK").join(" ");
    assert!(health.contains("/health"), "HEALTHCHECK: {health}");

    let env = args_of(&rt, "ENV").join(" ");
    assert!(
        env.contains("MODELGATE_CONFIG=/etc/modelgate/config.yaml"),
        "{env}"
    );
    assert!(env.contains("SQLITE_PATH=/var/lib/modelgate/"), "{env}");
    let copies = args_of(&rt, "COPY").join("\n");
    assert!(copies.contains("/etc/modelgate/config.yaml"), "{copies}");
    let volumes = args_of(&rt, "VOLUME").join(" ");
    assert!(volumes.contains("/var/lib/modelgate"), "{volumes}");
    assert!(args_of(&rt, "EXPOSE").contains(&"8080"));
    // The user owns the store directory it writes to.
    let run = args_of(&rt, "RUN").join(" ");
    assert!(run.contains("-o modelgate") && run.contains("/var/lib/modelgate"));
}

// ------------------------------------------------------------------ systemd

/// `[Section]` -> key -> values (keys may repeat).
fn unit() -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in read("packaging/systemd/modelgate.service").lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(s) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = t.split_once('=').expect("key=value");
        out.entry(section.clone())
            .or_default()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    out
}

#[test]
fn systemd_unit_reloads_on_sighup_reads_keys_from_a_file_and_is_hardened() {
    let u = unit();
    let svc = &u["Service"];
    let one = |k: &str| {
        svc.get(k)
            .and_then(|v| v.last())
            .unwrap_or_else(|| panic!("[Service] has no {k}"))
            .as_str()
    };
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert!(one("EnvironmentFile").contains("/etc/modelgate/"));
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ] {
        assert_eq!(one(k), v, "{k}");
    }
    assert!(one("StateDirectory") == "modelgate");
    assert!(one("Environment").starts_with("SQLITE_PATH=/var/lib/modelgate/"));
    // systemd must wait longer than the default drain (GRACE_PERIOD_SECONDS=30).
    let stop: u64 = one("TimeoutStopSec").trim_end_matches('s').parse().unwrap();
    assert!(stop > 30);
    assert_eq!(u["Install"]["WantedBy"], ["multi-user.target"]);
}

#[test]
fn systemd_exec_start_is_a_command_line_the_binary_accepts() {
    let exec = unit()["Service"]["ExecStart"][0].clone();
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/modelgate"));
    let args: Vec<String> = words
        .map(|w| match w {
            // Same flags, run as `check` on the example config.
            "/etc/modelgate/config.yaml" => {
                root().join("config.example.yaml").display().to_string()
            }
            "serve" => "check".to_string(),
            other => other.to_string(),
        })
        .collect();
    assert!(
        args.iter().any(|a| a == "check"),
        "ExecStart runs serve: {exec}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = common::command(dir.path()).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{exec}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed (the other unit checks still ran)");
        return;
    };
    assert!(probe.status.success());
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let unit_path = dir.path().join("modelgate.service");
    let text = read("packaging/systemd/modelgate.service")
        .replace("/usr/local/bin/modelgate", common::bin());
    std::fs::write(&unit_path, text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit_path)
        .output()
        .unwrap();
    // It reports unknown keys and bad values as warnings with exit 0: any output is a defect.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

// ------------------------------------------------------------------ Kubernetes

/// Every document of every manifest, by kind (one of each is expected), and the file names.
fn manifests() -> (BTreeMap<String, Value>, BTreeSet<String>) {
    let dir = root().join("packaging/kubernetes");
    let mut by_kind = BTreeMap::new();
    let mut files = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&p).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            let kind = v["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: a document without kind"))
                .to_string();
            assert!(
                v["apiVersion"].is_string(),
                "{name}: {kind} has no apiVersion"
            );
            assert!(
                by_kind.insert(kind.clone(), v).is_none(),
                "{kind} declared twice"
            );
        }
        files.insert(name);
    }
    (by_kind, files)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

#[test]
fn kubernetes_manifests_have_the_expected_kinds_and_agree_with_each_other() {
    let (k, files) = manifests();
    let kinds: Vec<&str> = k.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Deployment",
            "Kustomization",
            "Secret",
            "Service"
        ]
    );
    let listed: BTreeSet<String> = k["Kustomization"]["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| s(r).to_string())
        .collect();
    let mut others = files.clone();
    others.remove("kustomization.yaml");
    assert_eq!(listed, others, "kustomization.yaml lists every manifest");

    let dep = &k["Deployment"];
    let pod = &dep["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(dep["spec"]["selector"]["matchLabels"], *labels);
    assert_eq!(k["Service"]["spec"]["selector"], *labels);

    let ann = &pod["metadata"]["annotations"];
    assert_eq!(s(&ann["prometheus.io/scrape"]), "true");
    assert_eq!(s(&ann["prometheus.io/path"]), "/metrics");

    let c = &pod["spec"]["containers"][0];
    let port = &c["ports"][0];
    assert_eq!(
        s(&ann["prometheus.io/port"]),
        port["containerPort"].as_u64().unwrap().to_string()
    );
    assert_eq!(k["Service"]["spec"]["ports"][0]["targetPort"], port["name"]);
    assert_eq!(s(&c["readinessProbe"]["httpGet"]["path"]), "/health/ready");
    assert_eq!(s(&c["livenessProbe"]["httpGet"]["path"]), "/health");

    // Keys come from the Secret.
    assert_eq!(
        c["envFrom"][0]["secretRef"]["name"],
        k["Secret"]["metadata"]["name"]
    );

    // The ConfigMap is mounted as a directory (a subPath mount never sees updates), and
    // MODELGATE_CONFIG names its config.yaml.
    let volumes = pod["spec"]["volumes"].as_sequence().unwrap();
    let config_volume = volumes
        .iter()
        .find(|v| v["configMap"]["name"] == k["ConfigMap"]["metadata"]["name"])
        .expect("a volume from the ConfigMap");
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == config_volume["name"])
        .expect("the ConfigMap volume is mounted");
    assert!(
        mount.get("subPath").is_none(),
        "subPath mounts miss ConfigMap updates"
    );
    let env: BTreeMap<&str, &str> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| (s(&e["name"]), s(&e["value"])))
        .collect();
    assert_eq!(
        env["MODELGATE_CONFIG"],
        format!("{}/config.yaml", s(&mount["mountPath"]))
    );
    assert!(k["ConfigMap"]["data"]["config.yaml"].is_string());

    // The image's user (packaging/docker/Dockerfile) is the pod's user.
    let uid = pod["spec"]["securityContext"]["runAsUser"]
        .as_u64()
        .unwrap();
    assert!(read("packaging/docker/Dockerfile").contains(&format!("--uid {uid}")));
    assert_eq!(
        pod["spec"]["securityContext"]["runAsNonRoot"],
        Value::Bool(true)
    );
    // A read-only root needs a writable /tmp (Pingora's pid file) and store directory.
    if c["securityContext"]["readOnlyRootFilesystem"] == Value::Bool(true) {
        let mounts: Vec<&str> = c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|m| s(&m["mountPath"]))
            .collect();
        assert!(mounts.contains(&"/tmp"), "{mounts:?}");
        let store = Path::new(env["SQLITE_PATH"]).parent().unwrap();
        assert!(mounts.contains(&store.to_str().unwrap()), "{mounts:?}");
    }
}

#[test]
fn kubernetes_config_map_holds_a_config_modelgate_loads() {
    let (k, _) = manifests();
    let text = s(&k["ConfigMap"]["data"]["config.yaml"]).to_string();
    // The Secret's (empty) keys, as the container would see them.
    let env: Vec<(String, String)> = k["Secret"]["stringData"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (s(k).to_string(), s(v).to_string()))
        .collect();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (code, out) = common::run_cli(&text, &["check"], &env_refs);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("smart"), "{out}");
}
