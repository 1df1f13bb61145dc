//! A lock-free circuit breaker: closed -> open after N consecutive failures, half-open after a
//! pause, closed again after M successes. Time comes in as milliseconds; no clock is read here.
//!
//! Half-open admits one probe at a time: `admit` hands the probe slot to one request, and the
//! slot is free again when that request reports (a success below the threshold) or when it
//! expires after the breaker's pause, so a probe that never reports (client gone, cancelled, a
//! fallback the plan never reached) cannot wedge the breaker.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::config::providers::BreakerConfig;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_metric(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

#[derive(Debug, Default)]
pub struct Breaker {
    state: AtomicU8,
    failures: AtomicU32,
    successes: AtomicU32,
    open_until_ms: AtomicU64,
    /// When the probe slot frees itself (0 or past: free).
    probe_until_ms: AtomicU64,
}

/// What planning a request onto a breaker got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The circuit is closed: no slot needed.
    Closed,
    /// Half-open: the probe slot, held until this time unless reported or released.
    Probe(u64),
    /// Open, or half-open with another probe out.
    Refused,
}

/// How long a probe holds the slot when it never reports: the breaker's pause, at least 1 s.
fn probe_hold_ms(cfg: &BreakerConfig) -> u64 {
    cfg.open_seconds.saturating_mul(1000).max(1000)
}

impl Breaker {
    /// The state at `now`; an open breaker whose pause is over reads as half-open.
    pub fn state(&self, now_ms: u64) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            OPEN if now_ms >= self.open_until_ms.load(Ordering::Acquire) => BreakerState::HalfOpen,
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    /// Whether the circuit is not open at `now`; half-open counts as not open whoever holds the
    /// probe slot (a request planned onto this breaker may go on; see `admit`).
    pub fn allows(&self, now_ms: u64) -> bool {
        self.state(now_ms) != BreakerState::Open
    }

    /// Whether a new request may be planned onto this breaker now: always when closed, never
    /// when open, and when half-open only if it takes the free probe slot.
    pub fn admit(&self, cfg: &BreakerConfig, now_ms: u64) -> bool {
        self.claim(cfg, now_ms) != Claim::Refused
    }

    /// `admit`, telling a probe slot taken apart: its holder frees it with `release` if the
    /// request never reaches this target.
    pub fn claim(&self, cfg: &BreakerConfig, now_ms: u64) -> Claim {
        match self.state(now_ms) {
            BreakerState::Closed => Claim::Closed,
            BreakerState::Open => Claim::Refused,
            BreakerState::HalfOpen => {
                let held = self.probe_until_ms.load(Ordering::Acquire);
                let until = now_ms.saturating_add(probe_hold_ms(cfg));
                let taken = held <= now_ms
                    && self
                        .probe_until_ms
                        .compare_exchange(held, until, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok();
                if taken {
                    Claim::Probe(until)
                } else {
                    Claim::Refused
                }
            }
        }
    }

    /// Frees the probe slot taken by the `claim` that returned `Probe(until)`, unless the slot
    /// has changed hands since (reported, expired and taken again).
    pub fn release(&self, until: u64) {
        let _ = self
            .probe_until_ms
            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether `admit` would admit a request now, without taking the probe slot (for views
    /// that list rather than route).
    pub fn would_admit(&self, now_ms: u64) -> bool {
        match self.state(now_ms) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => self.probe_until_ms.load(Ordering::Acquire) <= now_ms,
        }
    }

    /// Milliseconds until an open breaker half-opens.
    pub fn retry_after_ms(&self, now_ms: u64) -> u64 {
        self.open_until_ms
            .load(Ordering::Acquire)
            .saturating_sub(now_ms)
    }

    pub fn record_success(&self, cfg: &BreakerConfig, now_ms: u64) {
        self.failures.store(0, Ordering::Release);
        match self.state(now_ms) {
            BreakerState::Closed => {}
            BreakerState::HalfOpen | BreakerState::Open => {
                self.state.store(HALF_OPEN, Ordering::Release);
                let n = self.successes.fetch_add(1, Ordering::AcqRel) + 1;
                if n >= cfg.success_threshold {
                    self.successes.store(0, Ordering::Release);
                    self.state.store(CLOSED, Ordering::Release);
                }
                // The probe reported: the next request may probe.
                self.probe_until_ms.store(0, Ordering::Release);
            }
        }
    }

    pub fn record_failure(&self, cfg: &BreakerConfig, now_ms: u64) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        let half_open = self.state(now_ms) == BreakerState::HalfOpen;
        if half_open || n >= cfg.failure_threshold {
            self.successes.store(0, Ordering::Release);
            self.open_until_ms
                .store(now_ms + cfg.open_seconds * 1000, Ordering::Release);
            self.state.store(OPEN, Ordering::Release);
            self.failures.store(0, Ordering::Release);
            self.probe_until_ms.store(0, Ordering::Release);
        }
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
    fn opens_after_five_consecutive_failures() {
        let b = Breaker::default();
        for _ in 0..4 {
            b.record_failure(&CFG, 0);
        }
        assert_eq!(b.state(0), BreakerState::Closed);
        b.record_failure(&CFG, 0);
        assert_eq!(b.state(1), BreakerState::Open);
        assert!(!b.allows(29_999));
    }

    #[test]
    fn success_resets_the_count() {
        let b = Breaker::default();
        for _ in 0..4 {
            b.record_failure(&CFG, 0);
        }
        b.record_success(&CFG, 0);
        for _ in 0..4 {
            b.record_failure(&CFG, 0);
        }
        assert_eq!(b.state(0), BreakerState::Closed);
    }

    #[test]
    fn half_opens_then_closes_after_two_successes() {
        let b = Breaker::default();
        for _ in 0..5 {
            b.record_failure(&CFG, 0);
        }
        assert_eq!(b.state(30_000), BreakerState::HalfOpen);
        b.record_success(&CFG, 30_000);
        assert_eq!(b.state(30_001), BreakerState::HalfOpen);
        b.record_success(&CFG, 30_002);
        assert_eq!(b.state(30_003), BreakerState::Closed);
    }

    #[test]
    fn failure_in_half_open_reopens() {
        let b = Breaker::default();
        for _ in 0..5 {
            b.record_failure(&CFG, 0);
        }
        b.record_failure(&CFG, 30_000);
        assert_eq!(b.state(30_001), BreakerState::Open);
        assert_eq!(b.retry_after_ms(30_001), 29_999);
    }

    fn half_open() -> Breaker {
        let b = Breaker::default();
        for _ in 0..5 {
            b.record_failure(&CFG, 0);
        }
        b
    }

    #[test]
    fn closed_admits_every_request() {
        let b = Breaker::default();
        for _ in 0..10 {
            assert!(b.admit(&CFG, 0));
        }
    }

    #[test]
    fn open_admits_nothing() {
        let b = half_open();
        assert!(!b.admit(&CFG, 29_999));
        assert!(!b.would_admit(29_999));
    }

    #[test]
    fn half_open_admits_one_probe_at_a_time() {
        let b = half_open();
        assert!(b.would_admit(30_000));
        assert!(b.admit(&CFG, 30_000));
        assert!(
            !b.admit(&CFG, 30_001),
            "a second request while the probe is out"
        );
        assert!(!b.would_admit(30_001));
        // The circuit itself is not open: the probe's own plan may go on.
        assert!(b.allows(30_001));
    }

    #[test]
    fn a_probe_success_below_the_threshold_frees_the_slot() {
        let b = half_open();
        assert!(b.admit(&CFG, 30_000));
        b.record_success(&CFG, 30_010);
        assert_eq!(b.state(30_011), BreakerState::HalfOpen);
        assert!(b.admit(&CFG, 30_011), "the next probe");
        assert!(!b.admit(&CFG, 30_012));
        b.record_success(&CFG, 30_020);
        assert_eq!(b.state(30_021), BreakerState::Closed);
        assert!(b.admit(&CFG, 30_021) && b.admit(&CFG, 30_021));
    }

    #[test]
    fn a_probe_failure_reopens_for_a_full_pause() {
        let b = half_open();
        assert!(b.admit(&CFG, 30_000));
        b.record_failure(&CFG, 30_010);
        assert_eq!(b.state(30_011), BreakerState::Open);
        assert!(!b.admit(&CFG, 59_999));
        // Half-open again, with the slot free.
        assert!(b.admit(&CFG, 60_010));
    }

    #[test]
    fn a_released_probe_slot_is_free_at_once_and_a_stale_release_changes_nothing() {
        let b = Breaker::default();
        for t in 0..5 {
            b.record_failure(&CFG, 1_000 + t);
        }
        let half_open = 1_004 + CFG.open_seconds * 1000;
        let Claim::Probe(until) = b.claim(&CFG, half_open) else {
            panic!("the first request takes the probe slot");
        };
        assert_eq!(b.claim(&CFG, half_open), Claim::Refused);
        b.release(until);
        let Claim::Probe(again) = b.claim(&CFG, half_open + 1) else {
            panic!("a released slot is free");
        };
        // The first holder's late release must not free the second holder's slot.
        b.release(until);
        assert_eq!(b.claim(&CFG, half_open + 2), Claim::Refused);
        b.release(again);
        assert!(b.would_admit(half_open + 3));
    }

    #[test]
    fn a_probe_that_never_reports_frees_the_slot_after_the_pause() {
        let b = half_open();
        assert!(b.admit(&CFG, 30_000));
        assert!(!b.admit(&CFG, 59_999));
        assert!(b.admit(&CFG, 60_000), "the slot expired");
        assert!(!b.admit(&CFG, 60_001));
    }

    #[test]
    fn concurrent_requests_in_half_open_admit_exactly_one() {
        let b = std::sync::Arc::new(half_open());
        let admitted: usize = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || b.admit(&CFG, 30_000))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| usize::from(h.join().unwrap_or(false)))
            .sum();
        assert_eq!(admitted, 1);
    }
}
