//! Counters of one gateway: per limit, four atomics (requests and tokens in the current
//! minute, requests in flight, spend in the current budget period). A window's number and its
//! count share one `u64`, so moving to a new window and counting in it is one compare-and-swap;
//! nothing here takes a lock or allocates.
//!
//! Windows are calendar-aligned on the wall clock (minutes, and the budget's hour, day, week
//! or month in UTC), so local and shared counters agree on what "this minute" and "today" are.

use std::sync::atomic::{AtomicU64, Ordering};

/// Minute windows: window in the high 32 bits, count in the low 32.
const MINUTE_SHIFT: u32 = 32;
/// Budget periods: period in the high 20 bits, micro-USD in the low 44 (up to $17.5 million).
const PERIOD_SHIFT: u32 = 44;

/// One limit's counters.
#[derive(Debug, Default)]
pub struct Bucket {
    requests: AtomicU64,
    tokens: AtomicU64,
    in_flight: AtomicU64,
    spent: AtomicU64,
}

fn unpack(v: u64, shift: u32) -> (u64, u64) {
    (v >> shift, v & ((1u64 << shift) - 1))
}

fn pack(window: u64, count: u64, shift: u32) -> u64 {
    let max = (1u64 << shift) - 1;
    ((window & ((1u64 << (64 - shift)) - 1)) << shift) | count.min(max)
}

fn window_of(window: u64, shift: u32) -> u64 {
    window & ((1u64 << (64 - shift)) - 1)
}

/// Adds `amount` in `window` unless the count there has reached `limit` (the amount itself may
/// pass the limit: a request is judged by what was used before it). Returns the count after,
/// or the count that refused it.
fn take(
    cell: &AtomicU64,
    window: u64,
    shift: u32,
    amount: u64,
    limit: Option<u64>,
) -> Result<u64, u64> {
    let window = window_of(window, shift);
    let mut cur = cell.load(Ordering::Relaxed);
    loop {
        let (w, n) = unpack(cur, shift);
        let n = if w == window { n } else { 0 };
        if limit.is_some_and(|l| n >= l) {
            return Err(n);
        }
        let next = pack(window, n.saturating_add(amount), shift);
        match cell.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Ok(n.saturating_add(amount)),
            Err(seen) => cur = seen,
        }
    }
}

/// Adds `delta` (either sign) to the count of `window`; a window already gone is left alone.
fn adjust(cell: &AtomicU64, window: u64, shift: u32, delta: i64) {
    let window = window_of(window, shift);
    let mut cur = cell.load(Ordering::Relaxed);
    loop {
        let (w, n) = unpack(cur, shift);
        if w != window || delta == 0 {
            return;
        }
        let next = pack(window, n.saturating_add_signed(delta), shift);
        match cell.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => cur = seen,
        }
    }
}

/// The count of `window` now.
fn read(cell: &AtomicU64, window: u64, shift: u32) -> u64 {
    let (w, n) = unpack(cell.load(Ordering::Relaxed), shift);
    if w == window_of(window, shift) {
        n
    } else {
        0
    }
}

/// Which counter refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Concurrency,
    Requests,
    Tokens,
    Budget,
}

impl Bucket {
    pub fn enter(&self, max: Option<u64>) -> Result<(), Refusal> {
        let mut cur = self.in_flight.load(Ordering::Relaxed);
        loop {
            if max.is_some_and(|m| cur >= m) {
                return Err(Refusal::Concurrency);
            }
            match self.in_flight.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => cur = seen,
            }
        }
    }

    pub fn leave(&self) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in `minute`; returns the count after it.
    pub fn request(&self, minute: u64, rpm: Option<u64>) -> Result<u64, Refusal> {
        take(&self.requests, minute, MINUTE_SHIFT, 1, rpm).map_err(|_| Refusal::Requests)
    }

    /// Gives a request back (one that another limit refused).
    pub fn unrequest(&self, minute: u64) {
        adjust(&self.requests, minute, MINUTE_SHIFT, -1);
    }

    pub fn requests(&self, minute: u64) -> u64 {
        read(&self.requests, minute, MINUTE_SHIFT)
    }

    pub fn take_tokens(&self, minute: u64, amount: u64, tpm: Option<u64>) -> Result<u64, Refusal> {
        take(&self.tokens, minute, MINUTE_SHIFT, amount, tpm).map_err(|_| Refusal::Tokens)
    }

    pub fn adjust_tokens(&self, minute: u64, delta: i64) {
        adjust(&self.tokens, minute, MINUTE_SHIFT, delta);
    }

    pub fn tokens(&self, minute: u64) -> u64 {
        read(&self.tokens, minute, MINUTE_SHIFT)
    }

    pub fn spend(&self, period: u64, micro: u64, budget: Option<u64>) -> Result<u64, Refusal> {
        take(&self.spent, period, PERIOD_SHIFT, micro, budget).map_err(|_| Refusal::Budget)
    }

    pub fn adjust_spend(&self, period: u64, delta: i64) {
        adjust(&self.spent, period, PERIOD_SHIFT, delta);
    }

    pub fn spent(&self, period: u64) -> u64 {
        read(&self.spent, period, PERIOD_SHIFT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_counts_up_to_its_limit_and_the_next_starts_over() {
        let b = Bucket::default();
        assert_eq!(b.request(100, Some(2)), Ok(1));
        assert_eq!(b.request(100, Some(2)), Ok(2));
        assert_eq!(b.request(100, Some(2)), Err(Refusal::Requests));
        assert_eq!(b.request(101, Some(2)), Ok(1));
        b.unrequest(101);
        assert_eq!(b.requests(101), 0);
        // Giving back into a window that has passed changes nothing.
        b.unrequest(100);
        assert_eq!(b.requests(101), 0);
    }

    #[test]
    fn an_amount_is_judged_by_what_was_used_before_it() {
        let b = Bucket::default();
        assert_eq!(b.take_tokens(1, 500, Some(100)), Ok(500));
        assert_eq!(b.take_tokens(1, 1, Some(100)), Err(Refusal::Tokens));
        b.adjust_tokens(1, -450);
        assert_eq!(b.tokens(1), 50);
        assert_eq!(b.take_tokens(1, 10, Some(100)), Ok(60));
    }

    #[test]
    fn concurrency_slots_are_taken_and_freed() {
        let b = Bucket::default();
        assert!(b.enter(Some(1)).is_ok());
        assert_eq!(b.enter(Some(1)), Err(Refusal::Concurrency));
        b.leave();
        b.leave();
        assert_eq!(b.in_flight(), 0);
        assert!(b.enter(Some(1)).is_ok());
    }

    #[test]
    fn spend_is_kept_per_period_in_micro_dollars() {
        let b = Bucket::default();
        assert_eq!(b.spend(20_000, 999_999, Some(1_000_000)), Ok(999_999));
        assert_eq!(b.spend(20_000, 5, Some(1_000_000)), Ok(1_000_004));
        assert_eq!(b.spend(20_000, 1, Some(1_000_000)), Err(Refusal::Budget));
        b.adjust_spend(20_000, -4);
        assert_eq!(b.spent(20_000), 1_000_000);
        assert_eq!(b.spent(20_001), 0);
    }

    #[test]
    fn many_threads_never_pass_a_limit() {
        let b = std::sync::Arc::new(Bucket::default());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| b.request(7, Some(100)).is_ok())
                        .count()
                })
            })
            .collect();
        let passed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(passed, 100);
    }
}
