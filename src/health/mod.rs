//! Observed state per target: circuit breaker, latency window, SLA windows, rate-limit steering
//! (shared through Redis by `steer_sync`), session pins; and a breaker per concrete model called
//! directly (`concrete`).
//!
//! Keyed by the target's concrete name (`provider/model`), so state survives reloads for targets
//! that still exist. The request path reads through one `ArcSwap` load and atomics; the maps are
//! rebuilt only when a snapshot is swapped in (`sync`).

pub mod breaker;
pub mod concrete;
pub mod sessions;
pub mod steer;
pub mod steer_sync;
pub mod window;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::routing::model::Strategy;
use crate::routing::plan::TargetState;
use crate::snapshot::Snapshot;
use breaker::Breaker;
use concrete::ConcreteBreakers;
use sessions::Sessions;
use window::Window;

/// Latency window: the last 100 requests within 20 minutes.
pub const LATENCY_SAMPLES: usize = 100;
pub const LATENCY_SPAN_MS: u64 = 20 * 60 * 1000;
/// SLA window: 3 minutes.
pub const SLA_SPAN_MS: u64 = 3 * 60 * 1000;
/// SLA verdicts need at least this many samples.
pub const SLA_MIN_SAMPLES: u32 = 3;

#[derive(Debug)]
pub struct TargetHealth {
    pub breaker: Breaker,
    /// Latency score in microseconds: time per output token for streams, total otherwise.
    pub latency_us: Window,
    pub ttft_ms: Window,
    pub tpot_us: Window,
    /// What the provider's rate-limit headers last said.
    pub steer: steer::Steer,
}

impl Default for TargetHealth {
    fn default() -> Self {
        TargetHealth {
            breaker: Breaker::default(),
            steer: steer::Steer::default(),
            latency_us: Window::new(LATENCY_SAMPLES),
            ttft_ms: Window::new(LATENCY_SAMPLES),
            tpot_us: Window::new(LATENCY_SAMPLES),
        }
    }
}

/// Target name -> state, hashed with a fast non-cryptographic hasher: names come from the
/// configuration, not from requests.
pub type TargetMap = HashMap<String, Arc<TargetHealth>, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
pub struct Health {
    targets: ArcSwap<TargetMap>,
    /// Counts the target maps swapped in (the shared steering reads a new map whole).
    generation: std::sync::atomic::AtomicU64,
    /// Breakers of concrete models called directly, apart from the virtual-model targets.
    pub concrete: ConcreteBreakers,
    pub sessions: Sessions,
    /// Steering shared through Redis (with `REDIS_URL`).
    pub steer_sync: steer_sync::SteerSync,
}

impl Health {
    /// Makes sure every concrete target of `snap` has state, keeping existing state.
    ///
    /// Thousands of virtual models usually share far fewer targets, and a reload usually keeps
    /// them all: the names are collected borrowed, and the map is rebuilt only when the set of
    /// targets changed.
    ///
    /// Each target also learns the highest steering threshold of the virtual models that route
    /// to it (what is worth sharing through Redis), whether or not the set changed.
    pub fn sync(&self, snap: &Snapshot) {
        let old = self.targets.load_full();
        let mut names: foldhash::HashMap<&str, f64> = foldhash::HashMap::default();
        for vm in &snap.table.models {
            for t in &vm.targets {
                let below = names.entry(t.name.as_str()).or_insert(0.0);
                *below = below.max(vm.steer.min_remaining_fraction);
            }
        }
        let map = if names.len() == old.len() && names.keys().all(|n| old.contains_key(*n)) {
            old
        } else {
            let next: TargetMap = names
                .keys()
                .map(|n| (n.to_string(), old.get(*n).cloned().unwrap_or_default()))
                .collect();
            let next = Arc::new(next);
            self.targets.store(next.clone());
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            next
        };
        for (name, h) in map.iter() {
            h.steer
                .set_share_below(names.get(name.as_str()).copied().unwrap_or(0.0));
        }
    }

    /// One round of steering shared through Redis (`steer_sync`), over the current targets.
    pub async fn share_steering(&self, shared: &crate::limits::shared::Shared) {
        let generation = self.generation.load(std::sync::atomic::Ordering::Relaxed);
        let targets = self.targets.load_full();
        self.steer_sync.share(&targets, generation, shared).await;
    }

    pub fn get(&self, name: &str) -> Option<Arc<TargetHealth>> {
        self.targets.load().get(name).cloned()
    }

    /// All tracked targets (for metrics).
    pub fn all(&self) -> Arc<TargetMap> {
        self.targets.load_full()
    }

    /// A target's state at `now_ms`. With `claim`, the caller is planning a request: a
    /// half-open breaker gives it the probe slot, or reads as open while another probe is out.
    pub fn target_state(
        &self,
        snap: &Snapshot,
        vm: usize,
        t: usize,
        now_ms: u64,
        claim: bool,
    ) -> TargetState {
        self.target_state_claiming(snap, vm, t, now_ms, claim).0
    }

    /// `target_state`, with the probe slot this call took (its hold's end), if it took one: the
    /// request frees it when it never reaches the target (`release_probe`).
    pub fn target_state_claiming(
        &self,
        snap: &Snapshot,
        vm: usize,
        t: usize,
        now_ms: u64,
        claim: bool,
    ) -> (TargetState, Option<u64>) {
        let model = &snap.table.models[vm];
        let target = &model.targets[t];
        let map = self.targets.load();
        let Some(h) = map.get(target.name.as_str()) else {
            return (TargetState::default(), None);
        };
        // Only the latency strategy ranks by it: other plans skip the window's scan.
        let latency = (model.strategy == Strategy::Latency)
            .then(|| h.latency_us.mean(now_ms, LATENCY_SPAN_MS))
            .flatten();
        let mut sla_breached = false;
        if let Some(sla) = target.extras().sla {
            if let Some(limit) = sla.time_to_first_token_ms {
                if let Some((m, n)) = h.ttft_ms.mean(now_ms, SLA_SPAN_MS) {
                    sla_breached |= n >= SLA_MIN_SAMPLES && m > limit as f64;
                }
            }
            if let Some(limit) = sla.time_per_output_token_ms {
                if let Some((m, n)) = h.tpot_us.mean(now_ms, SLA_SPAN_MS) {
                    sla_breached |= n >= SLA_MIN_SAMPLES && m > (limit * 1000) as f64;
                }
            }
        }
        // A target left out for its SLA takes no probe slot it would not use.
        let (admitted, probe) = if claim && !sla_breached {
            let cfg = target
                .provider
                .and_then(|p| snap.providers.get(p))
                .map(|p| p.config.breaker)
                .unwrap_or_default();
            match h.breaker.claim(&cfg, now_ms) {
                breaker::Claim::Closed => (true, None),
                breaker::Claim::Probe(until) => (true, Some(until)),
                breaker::Claim::Refused => (false, None),
            }
        } else {
            (h.breaker.would_admit(now_ms), None)
        };
        let steer = h.steer.state(now_ms);
        let state = TargetState {
            circuit_open: !admitted,
            sla_breached,
            latency_ms: latency.map(|(us, _)| us / 1000.0),
            samples: latency.map_or(0, |(_, n)| n),
            rate_limited: steer.rate_limited,
            remaining_fraction: steer.remaining_fraction,
        };
        (state, probe)
    }

    /// Frees the probe slot of target `t` of virtual model `vm` that planning took for a
    /// request which never reached that target.
    pub fn release_probe(&self, snap: &Snapshot, vm: usize, t: usize, until: u64) {
        let Some(target) = snap.table.models.get(vm).and_then(|m| m.targets.get(t)) else {
            return;
        };
        if let Some(h) = self.targets.load().get(target.name.as_str()) {
            h.breaker.release(until);
        }
    }

    pub fn pinned(&self, snap: &Snapshot, vm: usize, session: &str, now_ms: u64) -> Option<usize> {
        let v = &snap.table.models[vm];
        let name = self.sessions.get(&v.source, session, now_ms)?;
        v.targets.iter().position(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::StateRegistry;
    use crate::config::env::Env;

    fn snapshot(targets: &str) -> Snapshot {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        let text = format!(
            "providers:\n  p:\n    type: mock\n    models: [a, b, c]\nvirtual_models:\n  - source: one\n    targets: [{targets}]\n  - source: two\n    targets: [{targets}]\n"
        );
        std::fs::write(&path, text).unwrap();
        let loaded = crate::config::load(Some(&path), &Env::default()).unwrap();
        Snapshot::build(&loaded, &[], None, &StateRegistry::default()).unwrap()
    }

    #[test]
    fn sync_keeps_state_of_surviving_targets_and_forgets_removed_ones() {
        let health = Health::default();
        health.sync(&snapshot("p/a, p/b"));
        let a = health.get("p/a").unwrap();
        assert_eq!(health.all().len(), 2);

        health.sync(&snapshot("p/a, p/b"));
        assert!(Arc::ptr_eq(&a, &health.get("p/a").unwrap()));

        health.sync(&snapshot("p/a, p/c"));
        assert!(Arc::ptr_eq(&a, &health.get("p/a").unwrap()));
        assert!(health.get("p/b").is_none());
        assert!(health.get("p/c").is_some());
        assert_eq!(health.all().len(), 2);
    }

    #[test]
    fn each_target_shares_readings_under_its_highest_steering_threshold() {
        let snap = |one: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.yaml");
            let text = format!(
                "providers:\n  p:\n    type: mock\n    models: [a, b]\nvirtual_models:\n  - source: one\n    targets: [p/a]\n{one}  - source: two\n    targets: [p/a, p/b]\n"
            );
            std::fs::write(&path, text).unwrap();
            let loaded = crate::config::load(Some(&path), &Env::default()).unwrap();
            Snapshot::build(&loaded, &[], None, &StateRegistry::default()).unwrap()
        };
        let reading = |f: f64| crate::proxy::rate_limit::Reading {
            remaining_fraction: Some(f),
            reset_in_ms: Some(60_000),
            retry_after_ms: None,
        };
        let health = Health::default();
        health.sync(&snap("    steer: {min_remaining_fraction: 0.3}\n"));
        let (a, b) = (health.get("p/a").unwrap(), health.get("p/b").unwrap());
        // 20 % left steers `one` away from p/a: shared. p/b has only the default 5 %.
        a.steer.observe(&reading(0.2), 200, 1_000);
        b.steer.observe(&reading(0.2), 200, 1_000);
        assert!(a.steer.take_dirty());
        assert!(!b.steer.take_dirty());
        // The same targets, a lower threshold: the new one applies without a new map.
        health.sync(&snap(""));
        assert!(Arc::ptr_eq(&a, &health.get("p/a").unwrap()));
        a.steer.observe(&reading(0.9), 200, 2_000);
        a.steer.take_dirty();
        a.steer.observe(&reading(0.2), 200, 3_000);
        assert!(!a.steer.take_dirty());
    }

    #[test]
    fn a_requests_view_takes_the_probe_slot_and_a_listing_does_not() {
        let health = Health::default();
        let snap = snapshot("p/a");
        health.sync(&snap);
        let cfg = crate::config::providers::BreakerConfig::default();
        let h = health.get("p/a").unwrap();
        for _ in 0..cfg.failure_threshold {
            h.breaker.record_failure(&cfg, 1_000);
        }
        let half_open = 1_000 + cfg.open_seconds * 1000;
        assert!(
            health
                .target_state(&snap, 0, 0, half_open - 1, true)
                .circuit_open
        );
        // Listings look without taking the slot.
        assert!(
            !health
                .target_state(&snap, 0, 0, half_open, false)
                .circuit_open
        );
        assert!(
            !health
                .target_state(&snap, 0, 0, half_open, false)
                .circuit_open
        );
        // The first request planned gets it; the next sees the circuit as open.
        assert!(
            !health
                .target_state(&snap, 0, 0, half_open, true)
                .circuit_open
        );
        assert!(
            health
                .target_state(&snap, 1, 0, half_open, true)
                .circuit_open
        );
        assert!(
            health
                .target_state(&snap, 0, 0, half_open, false)
                .circuit_open
        );
    }
}
