//! Rate-limit steering state of one target: what its provider last announced (the share of
//! its limit left, until the limit resets) and whether a 429 with `Retry-After` took it out.
//!
//! Lock-free (three atomics per target, as the breaker is); readings come from
//! `proxy::rate_limit`, times are monotonic milliseconds passed in. Local to this gateway:
//! nothing here is shared between instances. It never orders targets itself: planning reads
//! `state` as data (`routing::plan`'s `TargetState`).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::proxy::rate_limit::Reading;

/// How long a low reading without a reset time holds.
pub const DEFAULT_HOLD_MS: u64 = 10_000;
/// The longest any reading holds.
pub const MAX_HOLD_MS: u64 = 3_600_000;

#[derive(Debug, Default)]
pub struct Steer {
    /// Out (429 with `Retry-After`) until this monotonic millisecond.
    limited_until_ms: AtomicU64,
    /// The share of the limit left, in millionths, valid until `fraction_until_ms`.
    fraction_ppm: AtomicU64,
    fraction_until_ms: AtomicU64,
}

/// A target's steering state at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SteerState {
    pub rate_limited: bool,
    pub remaining_fraction: Option<f64>,
    /// Until when the state holds (ms from now), for `resolve` and the log.
    pub for_ms: u64,
}

impl Steer {
    /// Records an answer's reading (`status` is the answer's status).
    pub fn observe(&self, r: &Reading, status: u16, now_ms: u64) {
        if let (429, Some(wait)) = (status, r.retry_after_ms) {
            let until = now_ms.saturating_add(wait.min(MAX_HOLD_MS));
            self.limited_until_ms.fetch_max(until, Ordering::Relaxed);
        }
        if let Some(f) = r.remaining_fraction {
            let hold = r.reset_in_ms.unwrap_or(DEFAULT_HOLD_MS).min(MAX_HOLD_MS);
            self.fraction_ppm
                .store((f.clamp(0.0, 1.0) * 1e6).round() as u64, Ordering::Relaxed);
            self.fraction_until_ms
                .store(now_ms.saturating_add(hold), Ordering::Relaxed);
        }
    }

    /// The state at `now_ms`: a reading whose reset has passed is forgotten.
    pub fn state(&self, now_ms: u64) -> SteerState {
        let limited = self.limited_until_ms.load(Ordering::Relaxed);
        let until = self.fraction_until_ms.load(Ordering::Relaxed);
        let fraction =
            (until > now_ms).then(|| self.fraction_ppm.load(Ordering::Relaxed) as f64 / 1e6);
        let rate_limited = limited > now_ms;
        SteerState {
            rate_limited,
            remaining_fraction: fraction,
            for_ms: if rate_limited {
                limited - now_ms
            } else {
                until.saturating_sub(now_ms)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_low_reading_holds_until_its_reset() {
        let s = Steer::default();
        let r = Reading {
            remaining_fraction: Some(0.0),
            reset_in_ms: Some(5_000),
            retry_after_ms: None,
        };
        s.observe(&r, 200, 1_000);
        assert_eq!(s.state(5_999).remaining_fraction, Some(0.0));
        assert_eq!(s.state(6_000).remaining_fraction, None);
        assert!(!s.state(2_000).rate_limited);
    }

    #[test]
    fn a_newer_reading_replaces_the_old_one() {
        let s = Steer::default();
        let low = Reading {
            remaining_fraction: Some(0.01),
            reset_in_ms: Some(60_000),
            retry_after_ms: None,
        };
        s.observe(&low, 200, 0);
        let high = Reading {
            remaining_fraction: Some(0.9),
            reset_in_ms: None,
            retry_after_ms: None,
        };
        s.observe(&high, 200, 10);
        assert_eq!(s.state(20).remaining_fraction, Some(0.9));
        assert_eq!(s.state(10 + DEFAULT_HOLD_MS).remaining_fraction, None);
    }

    #[test]
    fn a_429_with_retry_after_takes_the_target_out_until_then() {
        let s = Steer::default();
        let r = Reading {
            remaining_fraction: None,
            reset_in_ms: None,
            retry_after_ms: Some(30_000),
        };
        // Retry-After on a success is no verdict.
        s.observe(&r, 200, 0);
        assert!(!s.state(1).rate_limited);
        s.observe(&r, 429, 0);
        assert!(s.state(29_999).rate_limited);
        assert_eq!(s.state(10_000).for_ms, 20_000);
        assert!(!s.state(30_000).rate_limited);
    }
}
