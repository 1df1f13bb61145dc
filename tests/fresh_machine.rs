//! What a new user meets on a clean clone: the README's two commands exist as written, the
//! example config serves with keys (its real providers, pointed at local mocks), and
//! `.env.template` lists every environment variable the code and the example config read.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::{Gateway, Reply, Upstream};
use serde_json::json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn readme_commands_exist_and_are_executable() {
    use std::os::unix::fs::PermissionsExt;
    let readme = read("README.md");
    let block = readme
        .split("## Two commands on a fresh machine")
        .nth(1)
        .and_then(|s| s.split("```sh").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("README has a fresh-machine code block");
    let commands: Vec<&str> = block
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(commands, ["scripts/serve.sh", "scripts/test.sh"]);
    for c in commands {
        let mode = std::fs::metadata(root().join(c))
            .unwrap_or_else(|e| panic!("{c}: {e}"))
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "{c} is not executable");
    }
    // serve.sh runs the example config, which must exist.
    assert!(read("scripts/serve.sh").contains("config.example.yaml"));
    assert!(root().join("config.example.yaml").is_file());
}

/// An upstream speaking Anthropic's messages API.
fn anthropic_mock() -> Upstream {
    Upstream::start(&["claude-sonnet-4-6"], |s| {
        Reply::Json(
            200,
            json!({"id": "msg_1", "type": "message", "role": "assistant",
                   "model": s.json()["model"], "content": [{"type": "text", "text": "ok"}],
                   "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 1}}),
        )
    })
}

#[test]
fn example_config_serves_its_real_providers_once_keys_are_set() {
    let openai = Upstream::echo(&["gpt-4o", "gpt-4o-mini"]);
    let anthropic = anthropic_mock();
    let (o, a) = (openai.base_url(), anthropic.base_url());
    let g = Gateway::start(
        &read("config.example.yaml"),
        &[
            ("OPENAI_API_KEY", "sk-test-openai"),
            ("OPENAI_BASE_URL", &o),
            ("ANTHROPIC_API_KEY", "sk-test-anthropic"),
            ("ANTHROPIC_BASE_URL", &a),
        ],
    );
    // `smart` is 2:1 over OpenAI and Anthropic: A B A.
    let served: Vec<String> = (0..3)
        .map(|_| {
            let r = g.chat("smart");
            assert_eq!(r.status, 200, "{}", r.body);
            r.header("x-modelgate-model").unwrap_or("").to_string()
        })
        .collect();
    assert_eq!(
        served,
        [
            "openai/gpt-4o",
            "anthropic/claude-sonnet-4-6",
            "openai/gpt-4o"
        ]
    );
    // `cheap` picks the priced, cheapest model.
    let r = g.chat("cheap");
    assert_eq!(r.header("x-modelgate-model"), Some("openai/gpt-4o-mini"));

    let seen = openai.requests();
    assert_eq!(seen.len(), 3);
    assert!(seen
        .iter()
        .all(|s| s.header("authorization") == Some("Bearer sk-test-openai")));
    assert_eq!(seen[2].json()["model"], "gpt-4o-mini");
    let seen = anthropic.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/messages");
    assert_eq!(seen[0].header("x-api-key"), Some("sk-test-anthropic"));
}

// ------------------------------------------------------------------ .env.template

/// Call shapes that read one environment variable by a literal name, compared with all
/// whitespace removed (so chained calls split over lines match). Header and JSON lookups in this
/// codebase use lowercase names, so an upper-case literal after `.get(` is an environment read
/// (`Env::get`).
const READS: [&str; 5] = [
    ".get(\"",
    ".bool(\"",
    "env::var(\"",
    "env::var_os(\"",
    "env=\"",
];

/// Upper-case names following any of `patterns` in `text`, whitespace ignored.
fn names_after(text: &str, patterns: &[&str]) -> BTreeSet<String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let mut out = BTreeSet::new();
    for pat in patterns {
        for (at, _) in compact.match_indices(pat) {
            let name: String = compact[at + pat.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let upper = name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if name.len() >= 2 && upper && name.starts_with(|c: char| c.is_ascii_uppercase()) {
                out.insert(name);
            }
        }
    }
    out
}

/// Variables a Rust source reads, ignoring comments and its `#[cfg(test)]` module (tests set
/// made-up variables).
fn env_reads(source: &str) -> BTreeSet<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or("");
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    names_after(&code, &READS)
}

/// Variables a config file references as `${VAR}` or `${VAR:-default}`.
fn config_refs(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|l| l.split(" #").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    names_after(&code, &["${"])
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The variables `.env.template` lists (`NAME=` lines; comments are not entries).
fn template_vars() -> BTreeSet<String> {
    read(".env.template")
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
        .filter(|k| !k.is_empty())
        .collect()
}

#[test]
fn the_reader_scan_finds_every_call_shape() {
    let src = r#"
        let a = env.get("PORT");
        let b = env
            .bool("SOME_FLAG")?;
        let c = std::env::var("RAW_VAR");
        let h = headers.get("x-request-id");
        // env.get("IN_A_COMMENT")
    "#;
    let found: Vec<String> = env_reads(src).into_iter().collect();
    assert_eq!(found, ["PORT", "RAW_VAR", "SOME_FLAG"]);
    let refs: Vec<String> = config_refs("a: ${FROM_CONFIG:-x} # ${NOT_THIS}\nb: ${BEE}")
        .into_iter()
        .collect();
    assert_eq!(refs, ["BEE", "FROM_CONFIG"]);
}

#[test]
fn env_template_lists_every_variable_the_code_reads() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    files.sort();
    let mut read_at: BTreeMap<String, String> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(root()).unwrap().display().to_string();
        for name in env_reads(&std::fs::read_to_string(f).unwrap()) {
            read_at.entry(name).or_insert_with(|| rel.clone());
        }
    }
    for name in config_refs(&read("config.example.yaml")) {
        read_at
            .entry(name)
            .or_insert_with(|| "config.example.yaml".into());
    }
    // Names built at run time: provider auto-discovery (`<TYPE>_API_KEY`, or `<TYPE>_BASE_URL`
    // for keyless local servers) and env_logger's filter.
    for t in modelgate::config::providers::type_names().split(", ") {
        let kind = modelgate::config::providers::ProviderKind::parse(t).unwrap();
        if kind.default_base_url().is_empty() {
            continue; // mock and openai_compatible are never discovered
        }
        let var = if kind.needs_key() {
            "API_KEY"
        } else {
            "BASE_URL"
        };
        read_at.insert(
            format!("{}_{var}", kind.name().to_ascii_uppercase()),
            "provider auto-discovery".into(),
        );
    }
    read_at.insert("RUST_LOG".into(), "env_logger".into());
    assert!(read_at.len() > 20, "the scan found too little: {read_at:?}");

    let listed = template_vars();
    let missing: Vec<String> = read_at
        .iter()
        .filter(|(k, _)| !listed.contains(*k))
        .map(|(k, at)| format!("{k} (read in {at})"))
        .collect();
    assert!(
        missing.is_empty(),
        ".env.template is missing: {}",
        missing.join(", ")
    );
}
