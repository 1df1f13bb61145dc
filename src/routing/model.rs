//! The routing core's data: virtual models, their targets and per-target policies.
//!
//! Values here are already parsed and validated (`config::validate` builds them); nothing in
//! this module reads files, the environment or the network.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use smol_str::SmolStr;

use super::error_class::ErrorClass;
use super::user_path::UserPath;
use crate::config::schema::VirtualModelSpec;

/// Where a virtual model was declared; higher precedence later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Store,
    /// `path` is shared by every entry of one file.
    Config {
        path: Arc<str>,
        index: usize,
    },
    Env {
        index: usize,
    },
}

impl Origin {
    /// `config`, `env` or `store`.
    pub fn label(&self) -> &'static str {
        match self {
            Origin::Store => "store",
            Origin::Config { .. } => "config",
            Origin::Env { .. } => "env",
        }
    }

    /// Where to edit it, as an error message names it.
    pub fn location(&self) -> String {
        match self {
            Origin::Store => "store".to_string(),
            Origin::Config { path, index } => format!("{path}: virtual_models[{index}]"),
            Origin::Env { index } => format!("VIRTUAL_MODELS[{index}]"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    Cost,
    Latency,
    Priority,
}

impl Strategy {
    pub const NAMES: &'static str = "round_robin, cost, latency or priority";

    /// Every spelling read, any case (no allocation: parsed once per virtual model per load).
    const SPELLINGS: [(&'static str, Strategy); 14] = [
        ("round_robin", Strategy::RoundRobin),
        ("round-robin", Strategy::RoundRobin),
        ("weighted", Strategy::RoundRobin),
        ("weight-based-routing", Strategy::RoundRobin),
        ("weighted_round_robin", Strategy::RoundRobin),
        ("cost", Strategy::Cost),
        ("lowest_cost", Strategy::Cost),
        ("cost-based-routing", Strategy::Cost),
        ("latency", Strategy::Latency),
        ("lowest_latency", Strategy::Latency),
        ("latency-based-routing", Strategy::Latency),
        ("priority", Strategy::Priority),
        ("fallback", Strategy::Priority),
        ("priority-based-routing", Strategy::Priority),
    ];

    pub fn parse(s: &str) -> Option<Strategy> {
        let s = s.trim();
        Self::SPELLINGS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|&(_, strategy)| strategy)
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::Cost => "cost",
            Strategy::Latency => "latency",
            Strategy::Priority => "priority",
        }
    }
}

/// The kind of API call, for `model_types` (TrueFoundry's names for the newer ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Chat,
    Completion,
    Embedding,
    Responses,
    Messages,
    /// Anthropic's `POST /v1/messages/count_tokens`.
    CountTokens,
    /// `POST /v1/audio/transcriptions` (multipart/form-data).
    Transcription,
    /// `POST /v1/audio/translations` (multipart/form-data).
    Translation,
    /// `POST /v1/audio/speech`: JSON in, audio bytes out.
    Speech,
    /// `POST /v1/rerank` (the Cohere/Jina shape).
    Rerank,
    /// `POST /v1/moderations`.
    Moderation,
    /// `POST /v1/images/generations`.
    ImageGeneration,
}

impl Operation {
    pub const NAMES: &'static str =
        "chat, completion, embedding, responses, messages, count_tokens, audio_transcription, \
         audio_translation, text_to_speech, rerank, moderation or image_generation";

    pub fn parse(s: &str) -> Option<Operation> {
        match s.trim().to_ascii_lowercase().as_str() {
            "chat" | "chat_completion" | "chat_completions" => Some(Operation::Chat),
            "completion" | "completions" | "text_completion" => Some(Operation::Completion),
            "embedding" | "embeddings" => Some(Operation::Embedding),
            "responses" | "response" => Some(Operation::Responses),
            "messages" | "message" => Some(Operation::Messages),
            "count_tokens" | "count-tokens" => Some(Operation::CountTokens),
            "audio_transcription" | "audio_transcriptions" | "transcription" => {
                Some(Operation::Transcription)
            }
            "audio_translation" | "audio_translations" | "translation" => {
                Some(Operation::Translation)
            }
            "text_to_speech" | "audio_speech" | "speech" | "tts" => Some(Operation::Speech),
            "rerank" | "reranking" => Some(Operation::Rerank),
            "moderation" | "moderations" => Some(Operation::Moderation),
            "image_generation" | "image_generations" | "images" => Some(Operation::ImageGeneration),
            _ => None,
        }
    }

    pub const ALL: [Operation; 12] = [
        Operation::Chat,
        Operation::Completion,
        Operation::Embedding,
        Operation::Responses,
        Operation::Messages,
        Operation::CountTokens,
        Operation::Transcription,
        Operation::Translation,
        Operation::Speech,
        Operation::Rerank,
        Operation::Moderation,
        Operation::ImageGeneration,
    ];

    /// The `model_types` entry that admits this operation: counting a message's tokens is
    /// allowed wherever messages are.
    pub fn admitted_by(self) -> Operation {
        match self {
            Operation::CountTokens => Operation::Messages,
            op => op,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::Completion => "completion",
            Operation::Embedding => "embedding",
            Operation::Responses => "responses",
            Operation::Messages => "messages",
            Operation::CountTokens => "count_tokens",
            Operation::Transcription => "audio_transcription",
            Operation::Translation => "audio_translation",
            Operation::Speech => "text_to_speech",
            Operation::Rerank => "rerank",
            Operation::Moderation => "moderation",
            Operation::ImageGeneration => "image_generation",
        }
    }

    /// Whether the request body is multipart/form-data (an audio upload) rather than JSON.
    pub fn multipart(self) -> bool {
        match self {
            Operation::Transcription | Operation::Translation => true,
            Operation::Chat
            | Operation::Completion
            | Operation::Embedding
            | Operation::Responses
            | Operation::Messages
            | Operation::CountTokens
            | Operation::Speech
            | Operation::Rerank
            | Operation::Moderation
            | Operation::ImageGeneration => false,
        }
    }

    /// Whether the answer is raw bytes (audio) relayed as they come, never held or parsed.
    pub fn binary_answer(self) -> bool {
        match self {
            Operation::Speech => true,
            Operation::Chat
            | Operation::Completion
            | Operation::Embedding
            | Operation::Responses
            | Operation::Messages
            | Operation::CountTokens
            | Operation::Transcription
            | Operation::Translation
            | Operation::Rerank
            | Operation::Moderation
            | Operation::ImageGeneration => false,
        }
    }
}

/// Wire dialect a target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    OpenAiChat,
    AnthropicMessages,
}

impl WireFormat {
    pub const ALL: [WireFormat; 2] = [WireFormat::OpenAiChat, WireFormat::AnthropicMessages];

    pub fn parse(s: &str) -> Option<WireFormat> {
        match s.trim().to_ascii_uppercase().as_str() {
            "OPENAI_CHAT" | "OPENAI" => Some(WireFormat::OpenAiChat),
            "ANTHROPIC_MESSAGES" | "ANTHROPIC" => Some(WireFormat::AnthropicMessages),
            _ => None,
        }
    }
}

/// How one target is retried: how many tries, on which statuses, and the wait before each
/// retry (exponential backoff with jitter, as plain data; `delay_ms` computes a wait).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// All tries on one target, the first included (1 = no retry).
    pub attempts: u32,
    /// The wait before the first retry.
    pub initial_delay_ms: u64,
    /// Each further retry waits this many times longer than the one before (1 = constant).
    pub backoff_factor: f64,
    /// No wait is longer than this, jitter included.
    pub max_delay_ms: u64,
    /// The wait varies by up to this share either way (0.1 = +-10%), so that clients failing
    /// together do not retry together.
    pub jitter_factor: f64,
    pub on_status: Vec<u16>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 2,
            initial_delay_ms: 100,
            backoff_factor: 2.0,
            max_delay_ms: 30_000,
            jitter_factor: 0.0,
            on_status: vec![429, 500, 502, 503],
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `try_number` (1 = the first retry, after the first try
    /// failed). `random_unit` is a number in [0, 1) that picks the jitter; 0.5 means none.
    pub fn delay_ms(&self, try_number: u32, random_unit: f64) -> u64 {
        let exponent = try_number.saturating_sub(1).min(64) as i32;
        let factor = if self.backoff_factor.is_finite() && self.backoff_factor >= 1.0 {
            self.backoff_factor
        } else {
            1.0
        };
        let max = self.max_delay_ms as f64;
        let base = (self.initial_delay_ms as f64 * factor.powi(exponent)).min(max);
        let jitter = self.jitter_factor.clamp(0.0, 1.0);
        let unit = if random_unit.is_finite() {
            random_unit.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let waited = base * (1.0 + jitter * (2.0 * unit - 1.0));
        waited.clamp(0.0, max).round() as u64
    }
}

pub const DEFAULT_FALLBACK_ON: [u16; 7] = [401, 403, 404, 429, 500, 502, 503];

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sla {
    pub time_to_first_token_ms: Option<u64>,
    pub time_per_output_token_ms: Option<u64>,
}

/// One concrete destination of a redirect.
///
/// `repr(C)` keeps the fields in the order written: the ones every plan reads come first, so
/// that planning touches one or two cache lines of a target. What few targets set lives in a
/// box (`extras`), so a target is 160 bytes rather than the about 360 it was with every field inline
/// (at 100,000 virtual models the table does not fit in cache, and each line is a memory read;
/// BENCHMARKS.md, "Compact targets and declarations").
#[derive(Debug, Clone)]
#[repr(C)]
pub struct Target {
    /// Declared provider instance, when known at build time.
    pub provider: Option<usize>,
    /// The access policy governing this target, resolved by `Table::new` when the provider is
    /// declared.
    pub policy: PolicyRef,
    /// Upstream model id (without the provider prefix). A `SmolStr` keeps ids up to 23 bytes
    /// inline, in the target's first cache line, and makes copying them into a plan free.
    pub model: SmolStr,
    pub weight: f64,
    pub priority: i64,
    /// Input + output USD per million tokens, when known.
    pub price: Option<f64>,
    /// The model's context window in tokens, when known (config, else the bundled table).
    pub context_window: Option<u64>,
    pub fallback_candidate: bool,
    pub backend_format: Option<WireFormat>,
    /// `None` when the target sets none of them (most do not); read through `extras()`.
    pub extras: Option<Box<TargetExtras>>,
    // Read by the proxy once the plan is made.
    /// `provider/model` (or the bare model when the provider is found at request time); inline
    /// up to 23 bytes.
    pub name: SmolStr,
    /// Shared with the provider's policy unless the target has a `retry` block of its own.
    pub retry: Arc<RetryPolicy>,
    /// Statuses that fall back; the default list is one allocation shared by every target.
    pub fallback_on: Arc<[u16]>,
}

/// A target's access policy as `Table::new` resolved it: 8 bytes, where an
/// `Option<Option<usize>>` takes 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyRef {
    /// Looked up per request: the provider is found at request time (or the table is larger
    /// than a `u32` indexes).
    Unresolved,
    /// No policy covers the target.
    None,
    /// The policy at this index of the table's models.
    At(u32),
}

impl PolicyRef {
    /// The resolved policy of a declared provider's target.
    pub fn resolved(policy: Option<usize>) -> PolicyRef {
        match policy.map(u32::try_from) {
            None => PolicyRef::None,
            Some(Ok(i)) => PolicyRef::At(i),
            Some(Err(_)) => PolicyRef::Unresolved,
        }
    }

    /// `Some(policy)` when resolved, `None` when it must be looked up.
    pub fn get(self) -> Option<Option<usize>> {
        match self {
            PolicyRef::Unresolved => None,
            PolicyRef::None => Some(None),
            PolicyRef::At(i) => Some(Some(i as usize)),
        }
    }
}

/// The settings of a target that few targets set.
#[derive(Debug, Clone, Default)]
pub struct TargetExtras {
    pub metadata_match: Vec<(String, String)>,
    /// Error classes that fall back besides the `fallback_on` statuses.
    pub fallback_on_errors: Vec<ErrorClass>,
    pub override_params: Option<Box<serde_json::Map<String, serde_json::Value>>>,
    pub headers_set: Vec<(String, String)>,
    pub headers_remove: Vec<String>,
    pub sla: Option<Sla>,
}

/// The extras of a target that sets none.
static NO_EXTRAS: TargetExtras = TargetExtras {
    metadata_match: Vec::new(),
    fallback_on_errors: Vec::new(),
    override_params: None,
    headers_set: Vec::new(),
    headers_remove: Vec::new(),
    sla: None,
};

static DEFAULT_FALLBACK_LIST: once_cell::sync::Lazy<Arc<[u16]>> =
    once_cell::sync::Lazy::new(|| Arc::from(DEFAULT_FALLBACK_ON.as_slice()));

/// `DEFAULT_FALLBACK_ON`, shared.
pub fn default_fallback_on() -> Arc<[u16]> {
    DEFAULT_FALLBACK_LIST.clone()
}

impl TargetExtras {
    fn is_empty(&self) -> bool {
        let TargetExtras {
            metadata_match,
            fallback_on_errors,
            override_params,
            headers_set,
            headers_remove,
            sla,
        } = self;
        metadata_match.is_empty()
            && fallback_on_errors.is_empty()
            && override_params.is_none()
            && headers_set.is_empty()
            && headers_remove.is_empty()
            && sla.is_none()
    }

    /// The box a `Target` holds: `None` when nothing is set.
    pub fn boxed(self) -> Option<Box<TargetExtras>> {
        (!self.is_empty()).then(|| Box::new(self))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Redirect,
    Policy,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Redirect => "redirect",
            Kind::Policy => "policy",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub enabled: bool,
    pub ttl_seconds: u64,
    /// Lower-case header names the session key is read from, in order (the default list is
    /// one allocation shared by every virtual model).
    pub headers: Arc<[String]>,
    /// `key: prefix`: the key is a hash of the system prompt and this many first messages,
    /// not a header.
    pub prefix_messages: Option<u32>,
}

pub const DEFAULT_SESSION_HEADERS: [&str; 3] =
    ["x-session-id", "session-id", "x-claude-code-session-id"];
pub const DEFAULT_SESSION_TTL_SECONDS: u64 = 6 * 3600;

static DEFAULT_HEADERS: once_cell::sync::Lazy<Arc<[String]>> = once_cell::sync::Lazy::new(|| {
    DEFAULT_SESSION_HEADERS
        .iter()
        .map(|s| s.to_string())
        .collect()
});

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            enabled: true,
            ttl_seconds: DEFAULT_SESSION_TTL_SECONDS,
            headers: DEFAULT_HEADERS.clone(),
            prefix_messages: None,
        }
    }
}

/// Hedged requests of a virtual model: after `after_ms` without an answer's header, the same
/// request also goes to the next target of the plan (at most `max_extra` more), within a
/// budget of `budget_percent` extra upstream requests per minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgePolicy {
    pub after_ms: u64,
    pub max_extra: u32,
    pub budget_percent: f64,
}

impl HedgePolicy {
    pub const DEFAULT_MAX_EXTRA: u32 = 1;
    pub const DEFAULT_BUDGET_PERCENT: f64 = 10.0;
}

/// Rate-limit steering of a virtual model's targets: one whose provider announced less than
/// this share of its limit left is tried after the others until the limit resets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SteerPolicy {
    pub min_remaining_fraction: f64,
}

pub const DEFAULT_MIN_REMAINING_FRACTION: f64 = 0.05;

impl Default for SteerPolicy {
    fn default() -> Self {
        SteerPolicy {
            min_remaining_fraction: DEFAULT_MIN_REMAINING_FRACTION,
        }
    }
}

/// A validated virtual model.
///
/// `repr(C)`, aligned to a cache line, with what every plan reads in its first two lines
/// (`enabled` through `steer`; the table compares a request's name with `source`, read in the
/// same lines). At 100,000 virtual models the table does not fit in cache and each line is a
/// read from memory (BENCHMARKS.md, "Routing 100,000 virtual models, and huge pages
/// off").
#[derive(Debug, Clone)]
#[repr(C, align(64))]
pub struct VirtualModel {
    pub enabled: bool,
    pub kind: Kind,
    pub strategy: Strategy,
    /// Inline up to 23 bytes: the table's lookup compares it with the requested name.
    pub source: SmolStr,
    pub targets: Vec<Target>,
    /// Round-robin position (written by requests).
    pub counter: Rotation,
    /// Smooth weighted round-robin schedule (indices into `targets`).
    pub schedule: super::schedule::Schedule,
    pub user_paths: Option<Box<[UserPath]>>,
    pub model_types: Option<Box<[Operation]>>,
    pub steer: SteerPolicy,
    // Read by some requests, after the plan, and for explanations, listings and errors.
    pub session: SessionConfig,
    /// Hedged requests; `None` (the default) sends one request at a time.
    pub hedge: Option<Box<HedgePolicy>>,
    pub origin: Origin,
    pub slug: Option<String>,
    /// The declaration as written, for the admin API (and the description listings show).
    pub spec: Arc<VirtualModelSpec>,
}

/// A virtual model's round-robin position: the one field of the routing table that requests
/// write. It lives inside the virtual model, so a plan loads no separate block for it. A
/// reload starts the new snapshot's entry of the same source where the old one stood (see
/// `Snapshot::build`), so the rotation does not restart; requests still finishing on the old
/// snapshot move only the old position.
#[derive(Debug, Default)]
pub struct Rotation(AtomicU64);

impl Rotation {
    pub fn starting_at(position: u64) -> Rotation {
        Rotation(AtomicU64::new(position))
    }

    /// The position to serve, moving the rotation on by one.
    pub fn advance(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }

    /// Where the rotation stands.
    pub fn position(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A copy stands where the original stands now, and moves on its own.
impl Clone for Rotation {
    fn clone(&self) -> Rotation {
        Rotation::starting_at(self.position())
    }
}

impl Target {
    /// A target with every policy at its default (weight 1, no priority, default retry and
    /// fallback statuses, a fallback candidate, unpriced).
    pub fn new(provider: Option<usize>, model: &str, name: &str) -> Target {
        Target {
            provider,
            policy: PolicyRef::Unresolved,
            model: model.into(),
            weight: 1.0,
            priority: i64::MAX,
            price: None,
            context_window: None,
            fallback_candidate: true,
            backend_format: None,
            extras: None,
            name: name.into(),
            retry: Arc::default(),
            fallback_on: default_fallback_on(),
        }
    }

    /// What the target sets beyond the everyday fields (all empty for most targets).
    pub fn extras(&self) -> &TargetExtras {
        self.extras.as_deref().unwrap_or(&NO_EXTRAS)
    }
}

impl VirtualModel {
    /// A store-origin virtual model with default settings: a redirect over `targets` (its
    /// round-robin schedule built from their weights), or an access policy when there are none.
    pub fn new(source: &str, strategy: Strategy, targets: Vec<Target>) -> VirtualModel {
        let weights: Vec<f64> = targets.iter().map(|t| t.weight).collect();
        VirtualModel {
            enabled: true,
            kind: if targets.is_empty() {
                Kind::Policy
            } else {
                Kind::Redirect
            },
            strategy,
            schedule: super::schedule::build(&weights),
            targets,
            counter: Rotation::default(),
            user_paths: None,
            model_types: None,
            session: SessionConfig::default(),
            steer: SteerPolicy::default(),
            hedge: None,
            source: source.into(),
            origin: Origin::Store,
            slug: None,
            spec: Arc::default(),
        }
    }

    /// Whether session pins apply: affinity is on and the strategy is one that spreads load
    /// (round_robin, latency); cost and priority always pick the same target anyway.
    pub fn uses_affinity(&self) -> bool {
        self.session.enabled && matches!(self.strategy, Strategy::RoundRobin | Strategy::Latency)
    }
}
