//! Fallbacks for concrete models requested directly (GoModel's `fallback` section): a mode per
//! model and an ordered list of further models to try.
//!
//! Plain data, built by the config loader and read by `plan`; nothing here reads files, the
//! environment or the clock.

use foldhash::HashMap;
use smol_str::SmolStr;

/// Whether a concrete model gets its configured fallbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FallbackMode {
    Off,
    /// The configured list, in order.
    #[default]
    Manual,
    /// GoModel picks further candidates from model rankings; modelgate has no rankings, so
    /// this is the configured list too (the loader warns).
    Auto,
}

impl FallbackMode {
    pub const NAMES: &'static str = "off, manual or auto";

    pub fn parse(s: &str) -> Option<FallbackMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Some(FallbackMode::Off),
            "manual" => Some(FallbackMode::Manual),
            "auto" => Some(FallbackMode::Auto),
            _ => None,
        }
    }
}

/// The fallback rules of one snapshot. Keys are a model as a client names it: a bare id
/// (`gpt-4o`) or `provider/model`; the qualified key wins over the bare one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FallbackRules {
    pub default_mode: FallbackMode,
    pub overrides: HashMap<SmolStr, FallbackMode>,
    pub manual: HashMap<SmolStr, Vec<SmolStr>>,
}

impl FallbackRules {
    /// True when no model has a fallback: planning skips the lookup.
    pub fn is_empty(&self) -> bool {
        self.manual.is_empty()
    }

    /// The fallbacks of a concrete model, served by `provider` as `model`, in order.
    pub fn for_model(&self, provider: &str, model: &str) -> &[SmolStr] {
        let qualified: SmolStr = smol_str::format_smolstr!("{provider}/{model}");
        let mode = self
            .overrides
            .get(&qualified)
            .or_else(|| self.overrides.get(model))
            .copied()
            .unwrap_or(self.default_mode);
        match mode {
            FallbackMode::Off => &[],
            FallbackMode::Manual | FallbackMode::Auto => self
                .manual
                .get(&qualified)
                .or_else(|| self.manual.get(model))
                .map_or(&[], Vec::as_slice),
        }
    }
}
