//! Start-up validation: a bad declaration stops the process with a message naming the origin,
//! the source and the field.

mod common;

use common::*;

const PROVIDERS: &str = "providers:\n  openai:\n    type: openai\n    api_key: k\n    models: [gpt-4o]\n  anthropic:\n    type: anthropic\n    api_key: k\n";

fn fails(vms: &str, expect: &[&str]) {
    let cfg = format!("{PROVIDERS}virtual_models:\n{vms}");
    let (code, out) = run_cli(&cfg, &["check"], &[]);
    assert_eq!(code, 1, "expected failure, got: {out}");
    for e in expect {
        assert!(out.contains(e), "missing {e:?} in: {out}");
    }
}

#[test]
fn serve_exits_non_zero_with_the_message() {
    let cfg = format!("{PROVIDERS}virtual_models:\n  - source: smart\n    strategy: fastest\n    target: openai/gpt-4o\n");
    let err = Gateway::try_start(&cfg, &[]).err().expect("must not start");
    assert!(err.contains("virtual_models[0] (source \"smart\"): strategy \"fastest\" is unknown; use round_robin, cost, latency or priority"), "{err}");
}

#[test]
fn missing_source() {
    fails(
        "  - target: openai/gpt-4o\n",
        &["virtual_models[0]: source is required"],
    );
}

#[test]
fn duplicate_source_within_one_origin() {
    fails(
        "  - {source: a, target: openai/gpt-4o}\n  - {source: A, target: openai/gpt-4o}\n",
        &["virtual_models[1]", "declared twice", "virtual_models[0]"],
    );
}

#[test]
fn duplicate_source_within_env() {
    let (code, out) = run_cli(
        PROVIDERS,
        &["check"],
        &[(
            "VIRTUAL_MODELS",
            r#"[{"source":"x","target":"openai/gpt-4o"},{"source":"x","target":"openai/gpt-4o"}]"#,
        )],
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("VIRTUAL_MODELS[1]: source \"x\" is declared twice"),
        "{out}"
    );
}

#[test]
fn unknown_strategy_lists_valid_ones() {
    fails(
        "  - {source: s, strategy: fastest, target: openai/gpt-4o}\n",
        &["(source \"s\"): strategy \"fastest\" is unknown; use round_robin, cost, latency or priority"],
    );
}

#[test]
fn blank_target_model() {
    fails(
        "  - source: s\n    targets: [{model: \" \"}]\n",
        &["(source \"s\"): targets[0].model is blank"],
    );
}

#[test]
fn negative_weight() {
    fails(
        "  - source: s\n    targets: [{model: openai/gpt-4o, weight: -1}]\n",
        &["targets[0].weight -1 must be a finite number >= 0"],
    );
}

#[test]
fn non_finite_weight() {
    fails(
        "  - source: s\n    targets: [{model: openai/gpt-4o, weight: .inf}]\n",
        &["targets[0].weight"],
    );
}

#[test]
fn duplicate_target() {
    fails(
        "  - source: s\n    targets: [openai/gpt-4o, {provider: openai, model: gpt-4o}]\n",
        &["targets[1]: target \"openai/gpt-4o\" is listed twice"],
    );
}

#[test]
fn self_target_is_an_error_unless_the_source_is_concrete() {
    fails(
        "  - {source: s, target: s}\n",
        &["(source \"s\"): target.model \"s\" equals the source"],
    );
    let ok = format!("{PROVIDERS}virtual_models:\n  - source: openai/gpt-4o\n    targets: [openai/gpt-4o, anthropic/claude-sonnet-4-6]\n");
    let (code, out) = run_cli(&ok, &["check"], &[]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn chains_are_not_allowed() {
    fails(
        "  - {source: a, target: openai/gpt-4o}\n  - {source: b, target: a}\n",
        &["virtual_models[1] (source \"b\"): target.model \"a\" is another virtual model"],
    );
    // A provider/model target names the concrete model, even where a virtual model shadows it.
    let shadowed = format!("{PROVIDERS}virtual_models:\n  - {{source: openai/gpt-4o, target: anthropic/claude-sonnet-4-6}}\n  - {{source: b, target: openai/gpt-4o}}\n");
    let (code, out) = run_cli(&shadowed, &["check"], &[]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn unknown_explicit_provider_lists_declared_ones() {
    fails(
        "  - source: s\n    targets: [{provider: azure, model: gpt-4o}]\n",
        &["targets[0].provider \"azure\" is not declared; declared providers: anthropic, openai"],
    );
}

#[test]
fn invalid_user_path() {
    fails(
        "  - source: s\n    target: openai/gpt-4o\n    user_paths: [\"/a/../b\"]\n",
        &["(source \"s\"): user_paths[0]: user path \"/a/../b\""],
    );
}

#[test]
fn reserved_headers_cannot_be_set() {
    fails(
        "  - source: s\n    targets: [{model: openai/gpt-4o, headers: {set: {Authorization: x}}}]\n",
        &["targets[0].headers.set", "cannot be changed"],
    );
}

#[test]
fn unknown_keys_are_rejected_with_a_suggestion() {
    fails(
        "  - source: s\n    targte: openai/gpt-4o\n",
        &["unknown field `targte`", "did you mean `target`?"],
    );
}

#[test]
fn env_errors_name_the_env_entry() {
    let (code, out) = run_cli(
        PROVIDERS,
        &["check"],
        &[(
            "VIRTUAL_MODELS",
            r#"[{"source":"s","strategy":"x","target":"openai/gpt-4o"}]"#,
        )],
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("VIRTUAL_MODELS[0] (source \"s\"): strategy \"x\" is unknown"),
        "{out}"
    );
}

#[test]
fn unknown_provider_prefix_is_only_a_warning() {
    let cfg =
        format!("{PROVIDERS}virtual_models:\n  - source: s\n    target: meta-llama/llama-3\n");
    let (code, out) = run_cli(&cfg, &["check"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("\"meta-llama\" is not a declared provider (declared: anthropic, openai)"),
        "{out}"
    );
}

#[test]
fn priority_on_round_robin_is_only_a_warning() {
    let cfg = format!("{PROVIDERS}virtual_models:\n  - source: s\n    targets: [{{model: openai/gpt-4o, priority: 1}}]\n");
    let (code, out) = run_cli(&cfg, &["check"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("targets[0].priority is ignored by strategy round_robin"),
        "{out}"
    );
}

#[test]
fn check_prints_the_resolved_table_with_origins() {
    let cfg = format!("{PROVIDERS}virtual_models:\n  - source: s\n    target: openai/gpt-4o\n");
    let (code, out) = run_cli(
        &cfg,
        &["check"],
        &[(
            "VIRTUAL_MODELS",
            r#"[{"source":"e","target":"anthropic/claude-sonnet-4-6"}]"#,
        )],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("s ") && out.contains("origin=config"), "{out}");
    assert!(out.contains("origin=env"), "{out}");
    assert!(out.contains("-> openai/gpt-4o"), "{out}");
    assert!(out.contains("config is valid"));
}

#[test]
fn resolve_explains_the_plan_without_sending() {
    let cfg = format!(
        "{PROVIDERS}virtual_models:\n  - source: s\n    targets: [{{model: openai/gpt-4o, weight: 2}}, anthropic/claude-sonnet-4-6]\n"
    );
    let (code, out) = run_cli(&cfg, &["resolve", "s", "--n", "3"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("strategy round_robin"), "{out}");
    assert!(
        out.contains("request 1: openai/gpt-4o  (round_robin: weight 2 of 3, in turn)   fallbacks: anthropic/claude-sonnet-4-6"),
        "{out}"
    );
    assert!(
        out.contains("request 2: anthropic/claude-sonnet-4-6  (round_robin: weight 1 of 3, in turn)   fallbacks: openai/gpt-4o"),
        "{out}"
    );
    assert!(out.contains("request 3: openai/gpt-4o  ("), "{out}");
}

const RESOLVE_PROVIDERS: &str = "providers:\n  openai:\n    type: openai\n    api_key: k\n    models:\n      - gpt-4o\n      - {id: gpt-4o-mini, pricing: {input_per_mtok: 0.15, output_per_mtok: 0.6}}\n  anthropic:\n    type: anthropic\n    api_key: k\n  groq:\n    type: groq\n";

#[test]
fn resolve_shows_eligibility_and_why_per_target_and_the_fallback_order() {
    let cfg = format!(
        "{RESOLVE_PROVIDERS}virtual_models:\n  - source: c\n    strategy: cost\n    targets:\n      - openai/gpt-4o\n      - {{model: anthropic/claude-sonnet-4-6, fallback_candidate: false}}\n      - groq/llama-3\n      - {{model: openai/gpt-4o-mini, metadata_match: {{tier: gold}}}}\n"
    );
    let (code, out) = run_cli(&cfg, &["resolve", "c"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("strategy cost"), "{out}");
    assert!(
        out.contains("session affinity: not used by strategy cost"),
        "{out}"
    );
    let line = |name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(&format!("target {name} ")))
            .unwrap_or_else(|| panic!("no line for {name} in {out}"))
            .to_string()
    };
    assert!(
        line("openai/gpt-4o").contains("$12.5/Mtok in+out eligible"),
        "{out}"
    );
    assert!(
        line("anthropic/claude-sonnet-4-6").contains("[never a fallback]"),
        "{out}"
    );
    assert!(
        line("groq/llama-3").contains("not eligible: provider has no API key"),
        "{out}"
    );
    assert!(
        line("openai/gpt-4o-mini").contains("not eligible: metadata_match does not hold"),
        "{out}"
    );
    // gpt-4o-mini is out, claude is never a fallback, groq has no key.
    assert!(
        out.contains("request 1: openai/gpt-4o  (cost: cheapest eligible, $12.5/Mtok in+out)   fallbacks: none"),
        "{out}"
    );
    let (code, out) = run_cli(
        &cfg,
        &["resolve", "c", "--metadata", r#"{"tier": "gold"}"#],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("request 1: openai/gpt-4o-mini  (cost: cheapest eligible, $0.75/Mtok in+out)   fallbacks: openai/gpt-4o"),
        "{out}"
    );
}

#[test]
fn resolve_says_when_a_virtual_model_does_not_apply() {
    let cfg = format!(
        "{RESOLVE_PROVIDERS}virtual_models:\n  - source: openai/gpt-4o-mini\n    strategy: priority\n    user_paths: [/team]\n    targets: [{{model: anthropic/claude-sonnet-4-6, priority: 1}}, openai/gpt-4o]\n"
    );
    let (code, out) = run_cli(
        &cfg,
        &["resolve", "openai/gpt-4o-mini", "--user-path", "/team/a"],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("user_paths: /team (caller /team/a: covered)"),
        "{out}"
    );
    assert!(
        out.contains("request 1: anthropic/claude-sonnet-4-6  (priority: 1 is the lowest eligible)   fallbacks: openai/gpt-4o"),
        "{out}"
    );
    let (code, out) = run_cli(
        &cfg,
        &["resolve", "openai/gpt-4o-mini", "--user-path", "/other"],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("not applied: caller /other is outside its user_paths"),
        "{out}"
    );
    assert!(
        out.contains("request 1: openai/gpt-4o-mini  (virtual model not applied: caller /other is outside its user_paths)"),
        "{out}"
    );
}

#[test]
fn resolve_refuses_metadata_that_is_not_an_object() {
    let cfg = format!("{RESOLVE_PROVIDERS}virtual_models: []\n");
    let (code, out) = run_cli(&cfg, &["resolve", "x", "--metadata", "[1]"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("--metadata \"[1]\" is not a JSON object"),
        "{out}"
    );
}

#[test]
fn bad_env_setting_is_named() {
    let (code, out) = run_cli(PROVIDERS, &["check"], &[("BODY_SIZE_LIMIT", "lots")]);
    assert_eq!(code, 1);
    assert!(
        out.contains("BODY_SIZE_LIMIT=\"lots\" is not a size"),
        "{out}"
    );
}

#[test]
fn missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .args(["check", "--config", "nope.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("config file nope.yaml does not exist"));
}

#[test]
fn a_zero_timeout_names_the_provider_and_field() {
    let cfg = "providers:\n  local:\n    type: vllm\n    base_url: http://127.0.0.1:9/v1\n    timeouts: {connect_ms: 1000, idle_ms: 0}\n";
    let (code, out) = run_cli(cfg, &["check"], &[]);
    assert_eq!(code, 1, "expected failure, got: {out}");
    assert!(
        out.contains("providers.local: timeouts.idle_ms: must be at least 1 (milliseconds)"),
        "{out}"
    );
}

/// A config written as JSON (generated configs usually are) reads exactly like its YAML form:
/// same virtual models, same messages naming the entry and field.
#[test]
fn a_json_config_checks_like_its_yaml_form() {
    let json = r#"{"providers": {"openai": {"type": "openai", "api_key": "k", "models": ["gpt-4o"]}},
 "virtual_models": [{"source": "smart", "strategy": "priority",
   "targets": [{"model": "openai/gpt-4o", "priority": 1}]}]}"#;
    let (code, out) = run_cli(json, &["check"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("smart") && out.contains("strategy=priority"),
        "{out}"
    );
    assert!(out.contains("config is valid"), "{out}");

    let bad = r#"{"providers": {"openai": {"type": "openai", "api_key": "k"}},
 "virtual_models": [{"source": "smart", "strategy": "fastest", "target": "openai/gpt-4o"}]}"#;
    let (code, out) = run_cli(bad, &["check"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("virtual_models[0] (source \"smart\"): strategy \"fastest\" is unknown"),
        "{out}"
    );

    // Not JSON (a trailing comma): the YAML parser's message, with its line, as before.
    let (code, out) = run_cli("{\"server\": {\"port\": 1},\n", &["check"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("invalid YAML") && out.contains("line "),
        "{out}"
    );
}
