//! The wall clock at millisecond-ish resolution, read cheaply.
//!
//! For timestamps only (`created` stamps, log lines, reload and catalog refresh times): time
//! windows (breakers, latency and SLA windows, session pins) run on `mono_clock`, which a step of
//! the wall clock does not move. Both need milliseconds at most and are read several times per
//! request. On Linux this reads
//! `CLOCK_REALTIME_COARSE`: the time of the last scheduler tick (1 to 4 ms old), served from the
//! vDSO without reading the CPU's time-stamp counter, which a virtual machine makes slow.
//! Durations (time to first byte, request time) keep using `Instant`.

/// Milliseconds since the Unix epoch (0 before it).
pub fn now_ms() -> u64 {
    let (secs, nanos) = now();
    secs.saturating_mul(1000) + u64::from(nanos / 1_000_000)
}

/// Whole seconds since the Unix epoch (0 before it).
pub fn now_secs() -> u64 {
    now().0
}

#[cfg(target_os = "linux")]
fn now() -> (u64, u32) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call writes only into it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc != 0 || ts.tv_sec < 0 {
        return precise();
    }
    (ts.tv_sec as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

#[cfg(not(target_os = "linux"))]
fn now() -> (u64, u32) {
    precise()
}

fn precise() -> (u64, u32) {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_precise_clock_within_a_tick() {
        for _ in 0..100 {
            let before = precise();
            let coarse = now_ms();
            let secs = now_secs();
            let after = precise();
            let before_ms = before.0 * 1000 + u64::from(before.1 / 1_000_000);
            let after_ms = after.0 * 1000 + u64::from(after.1 / 1_000_000);
            // The coarse clock lags by at most one scheduler tick (10 ms at HZ=100).
            assert!(coarse <= after_ms, "{coarse} after {after_ms}");
            assert!(
                coarse + 20 >= before_ms,
                "{coarse} too far before {before_ms}"
            );
            assert!(
                secs + 1 >= before.0 && secs <= after.0,
                "{secs} outside {before:?}..{after:?}"
            );
        }
    }

    #[test]
    fn never_goes_backwards() {
        let mut last = now_ms();
        for _ in 0..10_000 {
            let t = now_ms();
            assert!(t >= last, "{t} < {last}");
            last = t;
        }
    }
}
