//! Breakers of concrete models called directly (`"model": "provider/model"` or the body's
//! `provider` field, no virtual model), keyed by `provider/model`.
//!
//! An entry is created at a model's first failure, so a model that never fails costs one lookup
//! in an empty map. Names reach this map only after planning found them in a provider's catalog,
//! so it is bounded by the catalogs. It lives beside the snapshot and survives reloads. Backed by
//! `papaya`, a lock-free hash map: the request path takes no lock here.

use smol_str::SmolStr;

use super::breaker::Breaker;
use crate::config::providers::BreakerConfig;

#[derive(Debug, Default)]
pub struct ConcreteBreakers {
    map: papaya::HashMap<SmolStr, Breaker, foldhash::fast::RandomState>,
}

/// `provider/model`, inline (no allocation) for names up to 23 bytes.
pub fn concrete_name(provider: &str, model: &str) -> SmolStr {
    let mut b = smol_str::SmolStrBuilder::new();
    b.push_str(provider);
    b.push('/');
    b.push_str(model);
    b.finish()
}

impl ConcreteBreakers {
    /// Records a failed request to `name`; returns whether the circuit is open afterwards.
    pub fn record_failure(&self, name: &str, cfg: &BreakerConfig, now_ms: u64) -> bool {
        let m = self.map.pin();
        let b = match m.get(name) {
            Some(b) => b,
            None => m.get_or_insert_with(SmolStr::new(name), Breaker::default),
        };
        b.record_failure(cfg, now_ms);
        !b.allows(now_ms)
    }

    /// Records a successful request to `name` (nothing to do for a model that never failed).
    pub fn record_success(&self, name: &str, cfg: &BreakerConfig, now_ms: u64) {
        if self.map.is_empty() {
            return;
        }
        if let Some(b) = self.map.pin().get(name) {
            b.record_success(cfg, now_ms);
        }
    }

    /// Whether a new request to `name` may not be sent now. With `claim` the caller is planning
    /// that request: a half-open breaker gives it the probe slot if it is free.
    pub fn is_open(&self, name: &str, cfg: &BreakerConfig, now_ms: u64, claim: bool) -> bool {
        if self.map.is_empty() {
            return false;
        }
        self.map.pin().get(name).is_some_and(|b| {
            if claim {
                !b.admit(cfg, now_ms)
            } else {
                !b.would_admit(now_ms)
            }
        })
    }

    /// Milliseconds until `name`'s open circuit half-opens (0 when it is not open).
    /// Every concrete model's breaker state at `now_ms` (for `/metrics`), sorted by name.
    pub fn states(&self, now_ms: u64) -> Vec<(String, u8)> {
        let mut out: Vec<(String, u8)> = self
            .map
            .pin()
            .iter()
            .map(|(name, b)| (name.to_string(), b.state(now_ms).as_metric()))
            .collect();
        out.sort();
        out
    }

    pub fn retry_after_ms(&self, name: &str, now_ms: u64) -> u64 {
        self.map
            .pin()
            .get(name)
            .map_or(0, |b| b.retry_after_ms(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: BreakerConfig = BreakerConfig {
        failure_threshold: 5,
        open_seconds: 30,
        success_threshold: 2,
    };

    #[test]
    fn a_model_that_never_failed_is_closed_and_untracked() {
        let c = ConcreteBreakers::default();
        c.record_success("p/m", &CFG, 0);
        assert!(!c.is_open("p/m", &CFG, 0, true));
        assert!(c.map.is_empty());
    }

    #[test]
    fn five_consecutive_failures_open_the_model_and_no_other() {
        let c = ConcreteBreakers::default();
        for _ in 0..4 {
            assert!(!c.record_failure("p/m", &CFG, 0));
        }
        assert!(c.record_failure("p/m", &CFG, 0));
        assert!(c.is_open("p/m", &CFG, 1, true));
        assert!(!c.is_open("p/other", &CFG, 1, true));
        assert_eq!(c.retry_after_ms("p/m", 1_000), 29_000);
        assert!(
            !c.is_open("p/m", &CFG, 30_000, false),
            "half-open after the pause"
        );
        assert!(!c.is_open("p/m", &CFG, 30_000, true), "the probe");
        assert!(c.is_open("p/m", &CFG, 30_000, true), "one probe at a time");
    }

    #[test]
    fn names_are_provider_slash_model() {
        assert_eq!(concrete_name("openai", "gpt-4o"), "openai/gpt-4o");
    }
}
