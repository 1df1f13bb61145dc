//! Hedged requests: the budget that caps them and the record of how each one ended.
//!
//! A virtual model with `hedge` sends the same request to the next target of its plan when
//! the first attempt has sent no answer header after `after_ms`; the first header wins and
//! the other connection is closed (`exchange` runs the race). The budget keeps the extra
//! upstream requests to `budget_percent` of the virtual model's requests per minute: one
//! fixed window per minute, counted in atomics, whose allowance is the larger of this
//! minute's and the previous minute's request count (so a new minute does not start with
//! none). Nothing here does I/O or reads a clock: times are passed in.

use std::sync::atomic::{AtomicU64, Ordering};

const WINDOW_MS: u64 = 60_000;

/// How a hedged request's race ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeOutcome {
    /// The extra request answered first; the first attempt's connection was closed.
    Won,
    /// The first attempt answered first; the extra request's connection was closed.
    Lost,
    /// The budget had no room: no extra request was sent.
    Denied,
}

impl HedgeOutcome {
    pub const ALL: [HedgeOutcome; 3] =
        [HedgeOutcome::Won, HedgeOutcome::Lost, HedgeOutcome::Denied];

    pub fn name(self) -> &'static str {
        match self {
            HedgeOutcome::Won => "won",
            HedgeOutcome::Lost => "lost",
            HedgeOutcome::Denied => "denied",
        }
    }
}

/// The extra-request budget of one virtual model.
#[derive(Debug, Default)]
pub struct HedgeBudget {
    /// The minute (`now_ms / 60 s`) the counters below belong to.
    window: AtomicU64,
    requests: AtomicU64,
    previous_requests: AtomicU64,
    extras: AtomicU64,
}

impl HedgeBudget {
    /// Moves the counters to the minute of `now_ms` when it changed. Counts that race a
    /// change may land in either minute: the budget is a rate, not an exact ledger.
    fn roll(&self, now_ms: u64) {
        let w = now_ms / WINDOW_MS;
        let cur = self.window.load(Ordering::Acquire);
        if w > cur
            && self
                .window
                .compare_exchange(cur, w, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let n = self.requests.swap(0, Ordering::AcqRel);
            self.previous_requests
                .store(if w == cur + 1 { n } else { 0 }, Ordering::Release);
            self.extras.store(0, Ordering::Release);
        }
    }

    /// Counts one request of the virtual model.
    pub fn request(&self, now_ms: u64) {
        self.roll(now_ms);
        self.requests.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes room for one extra request, if the budget has it.
    pub fn try_extra(&self, now_ms: u64, budget_percent: f64) -> bool {
        self.roll(now_ms);
        let base = self
            .requests
            .load(Ordering::Acquire)
            .max(self.previous_requests.load(Ordering::Acquire));
        let allowed = (base as f64 * budget_percent / 100.0).floor() as u64;
        let mut used = self.extras.load(Ordering::Acquire);
        loop {
            if used >= allowed {
                return false;
            }
            match self.extras.compare_exchange_weak(
                used,
                used + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Extra requests sent this minute, and this minute's requests.
    pub fn usage(&self, now_ms: u64) -> (u64, u64) {
        self.roll(now_ms);
        (
            self.extras.load(Ordering::Acquire),
            self.requests.load(Ordering::Acquire),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extras_stay_within_the_percentage_of_requests() {
        let b = HedgeBudget::default();
        for _ in 0..100 {
            b.request(1_000);
        }
        let granted = (0..50).filter(|_| b.try_extra(2_000, 10.0)).count();
        assert_eq!(granted, 10);
        assert_eq!(b.usage(3_000), (10, 100));
    }

    #[test]
    fn too_few_requests_leave_no_room() {
        let b = HedgeBudget::default();
        b.request(0);
        assert!(!b.try_extra(0, 10.0));
        assert!(b.try_extra(0, 100.0));
        assert!(!b.try_extra(0, 100.0));
    }

    #[test]
    fn a_new_minute_starts_from_the_last_ones_traffic() {
        let b = HedgeBudget::default();
        for _ in 0..20 {
            b.request(0);
        }
        assert!(b.try_extra(0, 10.0) && b.try_extra(0, 10.0));
        assert!(!b.try_extra(0, 10.0));
        // The next minute: its allowance is the previous minute's 20 requests' 10 %.
        assert!(b.try_extra(WINDOW_MS, 10.0));
        assert!(b.try_extra(WINDOW_MS + 1, 10.0));
        assert!(!b.try_extra(WINDOW_MS + 2, 10.0));
        // A minute with no traffic before it starts empty.
        assert!(!b.try_extra(5 * WINDOW_MS, 10.0));
    }

    #[test]
    fn outcome_names() {
        assert_eq!(
            HedgeOutcome::ALL.map(HedgeOutcome::name),
            ["won", "lost", "denied"]
        );
    }
}
