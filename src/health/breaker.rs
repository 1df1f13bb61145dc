//! A lock-free circuit breaker: closed -> open after N consecutive failures, half-open after a
//! pause, closed again after M successes. Time comes in as milliseconds; no clock is read here.

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

    /// Whether a request may be sent now.
    pub fn allows(&self, now_ms: u64) -> bool {
        self.state(now_ms) != BreakerState::Open
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
}
