//! Counters of the middleware pipelines for `/metrics`: per middleware (each runs in one phase)
//! the calls and the time spent, the requests `guard` blocked, and what became of webhook
//! records. Plain atomics in one static, indexed by `Kind`: recording is a relaxed add, with no
//! lookup and no lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Kind;

const KINDS: usize = Kind::ALL.len();

#[derive(Debug)]
pub struct Counters {
    calls: [AtomicU64; KINDS],
    nanos: [AtomicU64; KINDS],
    blocks: [AtomicU64; KINDS],
    webhook_sent: AtomicU64,
    webhook_failed: AtomicU64,
    webhook_dropped: AtomicU64,
}

/// The process's counters, rendered by `metrics`.
pub static COUNTERS: Counters = Counters::new();

/// One middleware's counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KindCounts {
    pub kind: Kind,
    pub calls: u64,
    pub seconds: f64,
    pub blocks: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

impl Counters {
    pub const fn new() -> Self {
        Self {
            calls: [const { AtomicU64::new(0) }; KINDS],
            nanos: [const { AtomicU64::new(0) }; KINDS],
            blocks: [const { AtomicU64::new(0) }; KINDS],
            webhook_sent: AtomicU64::new(0),
            webhook_failed: AtomicU64::new(0),
            webhook_dropped: AtomicU64::new(0),
        }
    }

    pub(super) fn spent(&self, kind: Kind, took: Duration) {
        let i = kind as usize;
        self.calls[i].fetch_add(1, Ordering::Relaxed);
        self.nanos[i].fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    pub(super) fn blocked(&self, kind: Kind) {
        self.blocks[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn webhook_sent(&self) {
        self.webhook_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn webhook_failed(&self) -> u64 {
        self.webhook_failed.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(super) fn webhook_dropped(&self) {
        self.webhook_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Every middleware that has run at least once, in `Kind::ALL` order.
    pub fn kinds(&self) -> Vec<KindCounts> {
        Kind::ALL
            .iter()
            .map(|&kind| {
                let i = kind as usize;
                KindCounts {
                    kind,
                    calls: self.calls[i].load(Ordering::Relaxed),
                    seconds: self.nanos[i].load(Ordering::Relaxed) as f64 / 1e9,
                    blocks: self.blocks[i].load(Ordering::Relaxed),
                }
            })
            .filter(|c| c.calls > 0)
            .collect()
    }

    /// Webhook records (sent, failed, dropped because the queue was full).
    pub fn webhook(&self) -> (u64, u64, u64) {
        (
            self.webhook_sent.load(Ordering::Relaxed),
            self.webhook_failed.load(Ordering::Relaxed),
            self.webhook_dropped.load(Ordering::Relaxed),
        )
    }
}
