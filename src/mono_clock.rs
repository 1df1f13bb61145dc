//! The monotonic clock at millisecond-ish resolution, read cheaply: the time base of every
//! window the gateway keeps (breaker pauses and probe slots, latency and SLA windows, session pin
//! TTLs, the on-demand catalog refresh gap).
//!
//! A window must not move when the wall clock is stepped (NTP, an operator, a VM resumed), so
//! these read `CLOCK_MONOTONIC_COARSE` on Linux: the last scheduler tick (1 to 4 ms old), from the
//! vDSO without the time-stamp counter, like `wall_clock`'s coarse realtime clock. The value is
//! milliseconds from an arbitrary origin, meaningful only against another reading; it is never
//! below `ORIGIN_MS`, so 0 can keep meaning "never". Timestamps people read (`created`, log
//! lines, reload times) stay on `wall_clock`. The routing core reads no clock at all: readings
//! reach it as arguments.

/// Added to every reading: windows and breakers use 0 for "never", and a machine just booted
/// reads a monotonic clock near 0.
const ORIGIN_MS: u64 = 1_000_000;

/// Milliseconds on the monotonic clock (arbitrary origin, never below `ORIGIN_MS`).
pub fn now_ms() -> u64 {
    ORIGIN_MS + raw_ms()
}

#[cfg(target_os = "linux")]
fn raw_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call writes only into it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc != 0 || ts.tv_sec < 0 {
        return fallback_ms();
    }
    (ts.tv_sec as u64).saturating_mul(1000) + (ts.tv_nsec.clamp(0, 999_999_999) as u64) / 1_000_000
}

#[cfg(not(target_os = "linux"))]
fn raw_ms() -> u64 {
    fallback_ms()
}

/// `Instant` since the first reading: monotonic everywhere Rust runs.
fn fallback_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::providers::BreakerConfig;
    use crate::health::breaker::{Breaker, BreakerState};
    use crate::health::window::Window;

    #[test]
    fn never_goes_backwards_and_never_reads_zero() {
        let mut last = now_ms();
        assert!(last >= ORIGIN_MS);
        for _ in 0..10_000 {
            let t = now_ms();
            assert!(t >= last, "{t} < {last}");
            last = t;
        }
    }

    #[test]
    fn advances_with_elapsed_time_within_a_tick() {
        let start = std::time::Instant::now();
        let a = now_ms();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let b = now_ms();
        let elapsed = start.elapsed().as_millis() as u64;
        // The coarse clock lags by at most one scheduler tick (10 ms at HZ=100) at each end.
        assert!(b - a + 20 >= 30, "{a} -> {b}");
        assert!(b - a <= elapsed + 20, "{a} -> {b} in {elapsed} ms");
    }

    /// Two clocks over the same real minute: the monotonic one, and a wall clock stepped back an
    /// hour half-way (as NTP or an operator may). Each is injected into the same windows.
    fn readings(step_back_ms: u64) -> (Vec<u64>, Vec<u64>) {
        let mono: Vec<u64> = (0..=60).map(|s| ORIGIN_MS + s * 1_000).collect();
        let wall: Vec<u64> = (0..=60u64)
            .map(|s| {
                let t = 1_700_000_000_000 + s * 1_000;
                if s >= 30 {
                    t - step_back_ms
                } else {
                    t
                }
            })
            .collect();
        (mono, wall)
    }

    #[test]
    fn windows_on_the_monotonic_clock_ignore_a_wall_clock_step() {
        let (mono, wall) = readings(3_600_000);
        let cfg = BreakerConfig {
            failure_threshold: 1,
            open_seconds: 30,
            success_threshold: 1,
        };
        // A breaker opened at second 10 half-opens at second 40, 30 s later.
        let on = |clock: &[u64]| {
            let b = Breaker::default();
            b.record_failure(&cfg, clock[10]);
            (b.state(clock[39]), b.state(clock[40]))
        };
        assert_eq!(on(&mono), (BreakerState::Open, BreakerState::HalfOpen));
        // On the stepped wall clock it would still be open an hour later.
        assert_eq!(on(&wall).1, BreakerState::Open);

        // A latency window holds one sample a second: 20 in the last 20 s.
        let w = |clock: &[u64]| {
            let w = Window::new(100);
            for t in &clock[..60] {
                w.record(*t, 1);
            }
            w.mean(clock[60], 20_000).map_or(0, |(_, n)| n)
        };
        assert_eq!(w(&mono), 20);
        // On the stepped wall clock the samples from before the step look an hour in the future.
        assert_ne!(w(&wall), 20);
    }
}
