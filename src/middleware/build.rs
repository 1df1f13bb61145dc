//! Checking and compiling the three `MiddlewareCall` lists of a virtual model into `Pipelines`.
//!
//! Every call is checked whole (name, phase, `config`/`config_id`, `config_type`, the config's
//! keys and values) and every error is kept, each naming the list, the index and the field, so
//! the caller can put the entry's origin in front (`config.yaml: virtual_models[2] (source
//! "smart"): request_middleware[1].config.deny[0]: invalid regular expression ...`). Runs when a
//! snapshot is built, never per request.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::call::{MiddlewareCall, MiddlewareConfigEntry};
use super::{
    guard, headers, log_line, redact, router, set_params, system_prompt, webhook, Kind, Phase,
    Pipelines, PostStep, RequestStep, ResponseStep,
};

/// One thing wrong with one call of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiddlewareError {
    pub phase: Phase,
    /// The call's position in its list.
    pub index: usize,
    /// The `config_id` the configuration came from, when the problem is inside it.
    pub config_id: Option<String>,
    /// The field the problem is in, relative to the call (`name`, `config.deny[0]`); empty for
    /// the call as a whole.
    pub field: String,
    pub problem: Problem,
}

impl fmt::Display for MiddlewareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.phase.list_name(), self.index)?;
        if let Some(id) = &self.config_id {
            // The problem is in the shared entry, which is where it must be fixed.
            write!(f, ": middleware_configs[\"{id}\"]")?;
        }
        if !self.field.is_empty() {
            write!(f, ".{}", self.field)?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for MiddlewareError {}

/// What is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("middleware \"{name}\" is unknown; use {known}")]
    UnknownName { name: String, known: String },
    #[error("\"{name}\" is a {runs_in} middleware; move it to {list}")]
    WrongPhase {
        name: &'static str,
        runs_in: &'static str,
        list: &'static str,
    },
    #[error("config_type \"{given}\" is not the one of \"{name}\"; use \"{expected}\" (or leave config_type out)")]
    ConfigType {
        given: String,
        name: &'static str,
        expected: &'static str,
    },
    #[error("give either config or config_id, not both")]
    BothConfigs,
    #[error("give its configuration, inline as config or by reference as config_id")]
    NoConfig,
    #[error("config_id \"{id}\" is not in middleware_configs ({known})")]
    UnknownConfigId { id: String, known: String },
    /// A key that is unknown or holds the wrong type, as serde words it.
    #[error("{0}")]
    Config(String),
    #[error("invalid regular expression {pattern:?}: {error}")]
    Regex { pattern: String, error: String },
    #[error("{0}")]
    Invalid(String),
}

/// A problem inside a middleware's configuration; `field` is relative to the config object
/// (`deny[0]`, `rules[1].model`), empty for the object itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FieldProblem {
    pub field: String,
    pub problem: Problem,
}

impl FieldProblem {
    pub fn new(field: impl Into<String>, problem: Problem) -> Self {
        Self {
            field: field.into(),
            problem,
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(field, Problem::Invalid(message.into()))
    }
}

/// Deserializes a middleware's configuration, naming the path of a bad key.
pub(super) fn parse_config<T: DeserializeOwned>(value: &Value) -> Result<T, Vec<FieldProblem>> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        vec![FieldProblem::new(
            field,
            Problem::Config(e.inner().to_string()),
        )]
    })
}

pub(super) fn build(
    request: &[MiddlewareCall],
    response: &[MiddlewareCall],
    post: &[MiddlewareCall],
    configs: &BTreeMap<String, MiddlewareConfigEntry>,
) -> Result<Pipelines, Vec<MiddlewareError>> {
    let mut errors = Vec::new();
    let mut pipelines = Pipelines::default();
    for (phase, list) in [
        (Phase::Request, request),
        (Phase::Response, response),
        (Phase::PostResponse, post),
    ] {
        for (index, call) in list.iter().enumerate() {
            match build_call(call, phase, configs) {
                Ok(Step::Request(s)) => pipelines.request.push(s),
                Ok(Step::Response(s)) => pipelines.response.push(s),
                Ok(Step::Post(s)) => pipelines.post.push(s),
                Err((config_id, problems)) => {
                    errors.extend(problems.into_iter().map(|p| MiddlewareError {
                        phase,
                        index,
                        config_id: config_id.clone(),
                        field: p.field,
                        problem: p.problem,
                    }))
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(pipelines)
    } else {
        Err(errors)
    }
}

enum Step {
    Request(RequestStep),
    Response(ResponseStep),
    Post(PostStep),
}

type CallError = (Option<String>, Vec<FieldProblem>);

/// Checks one call found in `phase`'s list; on error returns the `config_id` the problems are
/// inside (if they are) and the problems.
fn build_call(
    call: &MiddlewareCall,
    phase: Phase,
    configs: &BTreeMap<String, MiddlewareConfigEntry>,
) -> Result<Step, CallError> {
    let Some(kind) = Kind::parse(&call.name) else {
        return Err((
            None,
            vec![FieldProblem::new(
                "name",
                Problem::UnknownName {
                    name: call.name.clone(),
                    known: Kind::known_names(),
                },
            )],
        ));
    };
    check_phase(kind, phase).map_err(|p| (None, vec![p]))?;
    check_call(call, kind, configs)
}

fn check_call(
    call: &MiddlewareCall,
    kind: Kind,
    configs: &BTreeMap<String, MiddlewareConfigEntry>,
) -> Result<Step, CallError> {
    let mut problems = Vec::new();
    if let Some(given) = &call.config_type {
        if given != kind.config_type() {
            problems.push(FieldProblem::new(
                "config_type",
                Problem::ConfigType {
                    given: given.clone(),
                    name: kind.name(),
                    expected: kind.config_type(),
                },
            ));
        }
    }
    let (config, config_id) = match (&call.config, &call.config_id) {
        (Some(_), Some(_)) => {
            problems.push(FieldProblem::new("", Problem::BothConfigs));
            return Err((None, problems));
        }
        (None, None) => {
            problems.push(FieldProblem::new("", Problem::NoConfig));
            return Err((None, problems));
        }
        (Some(config), None) => (config, None),
        (None, Some(id)) => match configs.get(id) {
            Some(entry) => {
                if entry.config_type != kind.config_type() {
                    return Err((
                        Some(id.clone()),
                        vec![FieldProblem::new(
                            "config_type",
                            Problem::ConfigType {
                                given: entry.config_type.clone(),
                                name: kind.name(),
                                expected: kind.config_type(),
                            },
                        )],
                    ));
                }
                (&entry.config, Some(id.clone()))
            }
            None => {
                problems.push(FieldProblem::new(
                    "config_id",
                    Problem::UnknownConfigId {
                        id: id.clone(),
                        known: known_ids(configs),
                    },
                ));
                return Err((None, problems));
            }
        },
    };
    if !problems.is_empty() {
        return Err((None, problems));
    }
    compile(kind, config).map_err(|inner| {
        let inner = inner
            .into_iter()
            .map(|p| FieldProblem {
                field: if p.field.is_empty() {
                    "config".to_string()
                } else {
                    format!("config.{}", p.field)
                },
                problem: p.problem,
            })
            .collect();
        (config_id, inner)
    })
}

/// A problem in an entry of `middleware_configs:` found by checking it on its own (an entry no
/// pipeline uses yet is still checked, so a mistake shows before it is referenced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntryError {
    pub id: String,
    /// Relative to the entry (`config_type`, `config.deny[0]`).
    pub field: String,
    pub problem: Problem,
}

impl fmt::Display for ConfigEntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "middleware_configs[\"{}\"].{}: {}",
            self.id, self.field, self.problem
        )
    }
}

impl std::error::Error for ConfigEntryError {}

/// Checks every entry of `middleware_configs:`: a known `config_type` and a configuration that
/// middleware accepts.
pub fn check_config_entries(
    configs: &BTreeMap<String, MiddlewareConfigEntry>,
) -> Vec<ConfigEntryError> {
    let mut errors = Vec::new();
    for (id, entry) in configs {
        let Some(kind) = Kind::ALL
            .into_iter()
            .find(|k| k.config_type() == entry.config_type)
        else {
            let known: Vec<String> = Kind::ALL
                .iter()
                .map(|k| format!("\"{}\"", k.config_type()))
                .collect();
            errors.push(ConfigEntryError {
                id: id.clone(),
                field: "config_type".into(),
                problem: Problem::Invalid(format!(
                    "config_type \"{}\" is unknown; use one of {}",
                    entry.config_type,
                    known.join(", ")
                )),
            });
            continue;
        };
        if let Err(problems) = compile(kind, &entry.config) {
            errors.extend(problems.into_iter().map(|p| ConfigEntryError {
                id: id.clone(),
                field: if p.field.is_empty() {
                    "config".into()
                } else {
                    format!("config.{}", p.field)
                },
                problem: p.problem,
            }));
        }
    }
    errors
}

fn known_ids(configs: &BTreeMap<String, MiddlewareConfigEntry>) -> String {
    if configs.is_empty() {
        return "the map is empty".into();
    }
    let ids: Vec<String> = configs.keys().map(|k| format!("\"{k}\"")).collect();
    format!("known: {}", ids.join(", "))
}

/// Compiles one middleware's configuration into its step.
fn compile(kind: Kind, config: &Value) -> Result<Step, Vec<FieldProblem>> {
    Ok(match kind {
        Kind::SetParams => Step::Request(RequestStep::SetParams(set_params::SetParams::compile(
            config,
        )?)),
        Kind::SystemPrompt => Step::Request(RequestStep::SystemPrompt(
            system_prompt::SystemPrompt::compile(config)?,
        )),
        Kind::Guard => Step::Request(RequestStep::Guard(guard::Guard::compile(config)?)),
        Kind::Router => Step::Request(RequestStep::Router(router::Router::compile(config)?)),
        Kind::Redact => Step::Response(ResponseStep::Redact(redact::Redact::compile(config)?)),
        Kind::Headers => Step::Response(ResponseStep::Headers(headers::Headers::compile(config)?)),
        Kind::Webhook => Step::Post(PostStep::Webhook(webhook::Webhook::compile(config)?)),
        Kind::Log => Step::Post(PostStep::Log(log_line::LogLine::compile(config)?)),
    })
}

/// Checks that a call runs in the phase of the list it is in.
fn check_phase(kind: Kind, phase: Phase) -> Result<(), FieldProblem> {
    if kind.phase() == phase {
        return Ok(());
    }
    Err(FieldProblem::new(
        "name",
        Problem::WrongPhase {
            name: kind.name(),
            runs_in: match kind.phase() {
                Phase::Request => "request",
                Phase::Response => "response",
                Phase::PostResponse => "post-response",
            },
            list: kind.phase().list_name(),
        },
    ))
}
