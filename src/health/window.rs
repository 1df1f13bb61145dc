//! A fixed-size, lock-free window of timestamped samples (the last N within a time span).
//!
//! Each slot packs the sample time in seconds (high 32 bits) and the value (low 32 bits) into one
//! `AtomicU64`, so a writer never tears a sample and a reader never blocks.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct Window {
    slots: Box<[AtomicU64]>,
    next: AtomicU64,
}

impl Window {
    pub fn new(size: usize) -> Window {
        Window {
            slots: (0..size.max(1)).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicU64::new(0),
        }
    }

    /// Records `value` (saturated to u32) at time `now_ms`.
    pub fn record(&self, now_ms: u64, value: u64) {
        let secs = (now_ms / 1000).clamp(1, u32::MAX as u64);
        let v = value.min(u32::MAX as u64);
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.slots.len();
        self.slots[i].store((secs << 32) | v, Ordering::Relaxed);
    }

    /// Mean and count of the samples younger than `span_ms`.
    pub fn mean(&self, now_ms: u64, span_ms: u64) -> Option<(f64, u32)> {
        let oldest = now_ms.saturating_sub(span_ms) / 1000;
        let (mut sum, mut n) = (0u64, 0u32);
        for s in self.slots.iter() {
            let raw = s.load(Ordering::Relaxed);
            let t = raw >> 32;
            if t == 0 || t < oldest {
                continue;
            }
            sum += raw & 0xffff_ffff;
            n += 1;
        }
        (n > 0).then(|| (sum as f64 / n as f64, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_n() {
        let w = Window::new(3);
        for v in [100, 1, 2, 3] {
            w.record(10_000, v);
        }
        assert_eq!(w.mean(10_000, 60_000), Some((2.0, 3)));
    }

    #[test]
    fn drops_samples_older_than_the_span() {
        let w = Window::new(10);
        w.record(1_000, 50);
        w.record(100_000, 10);
        assert_eq!(w.mean(100_000, 30_000), Some((10.0, 1)));
        assert_eq!(w.mean(1_000_000, 30_000), None);
    }
}
