//! Rate-limit steering state of one target: what its provider last announced (the share of
//! its limit left, until the limit resets) and whether a 429 with `Retry-After` took it out.
//!
//! Lock-free (a few atomics per target, as the breaker is); readings come from
//! `proxy::rate_limit`, times are monotonic milliseconds passed in. With `REDIS_URL` the state is
//! also shared between gateways: `export` gives what this gateway knows in wall-clock times for
//! `steer_sync` to publish, and `merge` folds in what others published; the request path reads
//! only these atomics. It never orders targets itself: planning reads `state` as data
//! (`routing::plan`'s `TargetState`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
    /// When that share was announced: the newest reading wins, from here or from another gateway.
    fraction_at_ms: AtomicU64,
    /// The highest `min_remaining_fraction` of the virtual models routing to this target, in
    /// millionths: a share under it steers some plan, so it is worth sharing.
    share_below_ppm: AtomicU64,
    /// This gateway observed something that steers and has not published it yet.
    dirty: AtomicBool,
}

/// A target's steering state in wall-clock (Unix) milliseconds, as gateways share it; 0: none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Exported {
    pub limited_until: u64,
    pub fraction_ppm: u64,
    pub fraction_until: u64,
    pub fraction_at: u64,
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
    /// Records an answer's reading (`status` is the answer's status). What steers is marked for
    /// sharing: a 429's wait, a share under the threshold, and the first share at or over it
    /// after a low one (so the other gateways stop steering away); a provider's ordinary
    /// "plenty left" on every answer is not.
    pub fn observe(&self, r: &Reading, status: u16, now_ms: u64) {
        let mut share = false;
        if let (429, Some(wait)) = (status, r.retry_after_ms) {
            let until = now_ms.saturating_add(wait.min(MAX_HOLD_MS));
            self.limited_until_ms.fetch_max(until, Ordering::Relaxed);
            share = true;
        }
        if let Some(f) = r.remaining_fraction {
            let below = self.share_below_ppm.load(Ordering::Relaxed);
            let was_low = self.fraction_until_ms.load(Ordering::Relaxed) > now_ms
                && self.fraction_ppm.load(Ordering::Relaxed) < below;
            let ppm = (f.clamp(0.0, 1.0) * 1e6).round() as u64;
            let hold = r.reset_in_ms.unwrap_or(DEFAULT_HOLD_MS).min(MAX_HOLD_MS);
            self.fraction_ppm.store(ppm, Ordering::Relaxed);
            self.fraction_until_ms
                .store(now_ms.saturating_add(hold), Ordering::Relaxed);
            self.fraction_at_ms.store(now_ms, Ordering::Relaxed);
            share |= ppm < below || was_low;
        }
        if share {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Sets the share under which a reading is worth sharing (the highest threshold of the
    /// virtual models routing to this target; set at every snapshot swap).
    pub fn set_share_below(&self, fraction: f64) {
        self.share_below_ppm.store(
            (fraction.clamp(0.0, 1.0) * 1e6).round() as u64,
            Ordering::Relaxed,
        );
    }

    /// Whether this gateway observed something since the last call (and forgets it).
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::Relaxed)
    }

    /// Marks the state as not published (a publication failed).
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// The state in wall-clock times (`now_ms` monotonic and `now_unix_ms` read together);
    /// what has passed is 0.
    pub fn export(&self, now_ms: u64, now_unix_ms: u64) -> Exported {
        let ahead = |mono: u64| {
            if mono > now_ms {
                now_unix_ms.saturating_add(mono - now_ms)
            } else {
                0
            }
        };
        let until = self.fraction_until_ms.load(Ordering::Relaxed);
        let (fraction_ppm, fraction_until, fraction_at) = if until > now_ms {
            let at = self.fraction_at_ms.load(Ordering::Relaxed);
            (
                self.fraction_ppm.load(Ordering::Relaxed),
                ahead(until),
                now_unix_ms.saturating_sub(now_ms.saturating_sub(at)),
            )
        } else {
            (0, 0, 0)
        };
        Exported {
            limited_until: ahead(self.limited_until_ms.load(Ordering::Relaxed)),
            fraction_ppm,
            fraction_until,
            fraction_at,
        }
    }

    /// Folds in a state another gateway published: the later end of a 429's wait, and the
    /// newer of the two readings (the shared one on a tie). Nothing merged is marked for
    /// publishing again.
    pub fn merge(&self, e: &Exported, now_ms: u64, now_unix_ms: u64) {
        let mono = |unix: u64| now_ms.saturating_add(unix.saturating_sub(now_unix_ms));
        if e.limited_until > now_unix_ms {
            self.limited_until_ms
                .fetch_max(mono(e.limited_until), Ordering::Relaxed);
        }
        if e.fraction_until > now_unix_ms {
            let at = now_ms.saturating_sub(now_unix_ms.saturating_sub(e.fraction_at));
            if at >= self.fraction_at_ms.load(Ordering::Relaxed) {
                self.fraction_ppm
                    .store(e.fraction_ppm.min(1_000_000), Ordering::Relaxed);
                self.fraction_until_ms
                    .store(mono(e.fraction_until), Ordering::Relaxed);
                self.fraction_at_ms.store(at, Ordering::Relaxed);
            }
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

    #[test]
    fn only_what_steers_is_marked_for_sharing() {
        let s = Steer::default();
        s.set_share_below(0.1);
        let share = |f: f64| Reading {
            remaining_fraction: Some(f),
            reset_in_ms: Some(60_000),
            retry_after_ms: None,
        };
        // Plenty left, answer after answer: nothing to share.
        s.observe(&share(0.9), 200, 0);
        s.observe(&share(0.5), 200, 1);
        assert!(!s.take_dirty());
        // Under the threshold: shared.
        s.observe(&share(0.05), 200, 2);
        assert!(s.take_dirty());
        // The first reading over it after a low one: shared; the next: not.
        s.observe(&share(0.8), 200, 3);
        assert!(s.take_dirty());
        s.observe(&share(0.7), 200, 4);
        assert!(!s.take_dirty());
        // A 429 with Retry-After: shared, whatever the share.
        let limited = Reading {
            remaining_fraction: None,
            reset_in_ms: None,
            retry_after_ms: Some(1_000),
        };
        s.observe(&limited, 429, 5);
        assert!(s.take_dirty());
        // With steering off everywhere (threshold 0) only 429s are shared.
        s.set_share_below(0.0);
        s.observe(&share(0.0), 200, 6);
        assert!(!s.take_dirty());
    }

    #[test]
    fn an_exported_state_merges_into_another_gateways_clock() {
        let here = Steer::default();
        here.observe(
            &Reading {
                remaining_fraction: Some(0.0),
                reset_in_ms: Some(5_000),
                retry_after_ms: Some(8_000),
            },
            429,
            1_000,
        );
        assert!(here.take_dirty());
        assert!(!here.take_dirty());
        // Unix time 1_000_000_000 at monotonic 1_000 here.
        let e = here.export(1_000, 1_000_000_000);
        assert_eq!(
            e,
            Exported {
                limited_until: 1_000_008_000,
                fraction_ppm: 0,
                fraction_until: 1_000_005_000,
                fraction_at: 1_000_000_000,
            }
        );
        // Another gateway, whose monotonic clock reads 50_000 at unix 1_000_001_000.
        let there = Steer::default();
        there.merge(&e, 50_000, 1_000_001_000);
        let s = there.state(50_000);
        assert!(s.rate_limited);
        assert_eq!(s.for_ms, 7_000);
        assert_eq!(s.remaining_fraction, Some(0.0));
        assert!(!there.state(57_000).rate_limited);
        assert_eq!(there.state(54_000).remaining_fraction, None);
        // Merging is not an observation of its own: nothing to publish again.
        assert!(!there.take_dirty());
    }

    #[test]
    fn merging_keeps_the_later_wait_and_the_newer_reading() {
        let s = Steer::default();
        s.observe(
            &Reading {
                remaining_fraction: Some(0.9),
                reset_in_ms: Some(60_000),
                retry_after_ms: Some(30_000),
            },
            429,
            10_000,
        );
        // Unix = monotonic + 1_000_000 here. An older, lower reading and a shorter wait.
        s.merge(
            &Exported {
                limited_until: 1_020_000,
                fraction_ppm: 10_000,
                fraction_until: 1_060_000,
                fraction_at: 1_005_000,
            },
            10_000,
            1_010_000,
        );
        let st = s.state(10_000);
        assert_eq!((st.remaining_fraction, st.for_ms), (Some(0.9), 30_000));
        // A newer reading and a longer wait win.
        s.merge(
            &Exported {
                limited_until: 1_050_000,
                fraction_ppm: 10_000,
                fraction_until: 1_030_000,
                fraction_at: 1_011_000,
            },
            12_000,
            1_012_000,
        );
        let st = s.state(12_000);
        assert_eq!((st.remaining_fraction, st.for_ms), (Some(0.01), 38_000));
        // What has passed is not merged and not exported.
        let gone = Exported {
            limited_until: 1_000,
            fraction_ppm: 0,
            fraction_until: 1_000,
            fraction_at: 900,
        };
        let fresh = Steer::default();
        fresh.merge(&gone, 5_000, 2_000);
        assert_eq!(fresh.state(5_000), SteerState::default());
        assert_eq!(fresh.export(5_000, 2_000), Exported::default());
    }
}
