//! Smooth weighted round-robin as a precomputed schedule.
//!
//! nginx's smooth algorithm interleaves picks (weights 2:1 give A B A, never A A B). Running it
//! per request needs a lock around all current weights, so instead the schedule of one whole
//! period is computed once, when a snapshot is built, and a request only does one atomic
//! `fetch_add` on a counter and indexes the schedule: lock-free, and the long-run shares are
//! exact. Weights are turned into integers with three decimals of precision and reduced by their
//! greatest common divisor; a period longer than `MAX_PERIOD` is scaled down proportionally.

use smallvec::SmallVec;

/// Longest schedule kept per virtual model.
pub const MAX_PERIOD: u64 = 4096;

/// One period of target indices. Periods of up to 8 picks (equal weights over up to 8 targets,
/// 2:1, 3:1, ...) are held inside the virtual model itself: the same size as a `Vec`, and no
/// separate block for a request to load.
pub type Schedule = SmallVec<[u16; 8]>;

/// The schedule of target indices for one period, or empty when no target has a weight above 0.
pub fn build(weights: &[f64]) -> Schedule {
    let mut ints: Vec<u64> = weights
        .iter()
        .map(|w| {
            if w.is_finite() && *w > 0.0 {
                ((w * 1000.0).round() as u64).max(1)
            } else {
                0
            }
        })
        .collect();
    let g = ints.iter().copied().filter(|w| *w > 0).fold(0, gcd);
    if g == 0 {
        return Schedule::new();
    }
    for w in ints.iter_mut() {
        *w /= g;
    }
    let total: u64 = ints.iter().sum();
    if total > MAX_PERIOD {
        let scale = MAX_PERIOD as f64 / total as f64;
        for w in ints.iter_mut() {
            if *w > 0 {
                *w = ((*w as f64 * scale).round() as u64).max(1);
            }
        }
    }
    let total: i64 = ints.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; ints.len()];
    let mut out = Schedule::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = usize::MAX;
        for (i, w) in ints.iter().enumerate() {
            if *w == 0 {
                continue;
            }
            current[i] += *w as i64;
            if best == usize::MAX || current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u16);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_to_one_interleaves() {
        assert_eq!(build(&[2.0, 1.0]).to_vec(), vec![0, 1, 0]);
    }

    #[test]
    fn five_one_one_matches_nginx() {
        // nginx's documented example: a a b a c a a
        assert_eq!(build(&[5.0, 1.0, 1.0]).to_vec(), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn zero_weight_never_scheduled() {
        let s = build(&[1.0, 0.0, 1.0]);
        assert_eq!(s.to_vec(), vec![0, 2]);
    }

    #[test]
    fn fractional_weights_keep_ratio() {
        let s = build(&[0.5, 1.5]);
        assert_eq!(s.iter().filter(|i| **i == 1).count(), 3);
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn all_zero_is_empty() {
        assert!(build(&[0.0, 0.0]).is_empty());
    }

    #[test]
    fn long_periods_are_bounded() {
        let s = build(&[9999.0, 1.0]);
        assert!(s.len() as u64 <= MAX_PERIOD + 1);
        assert!(s.contains(&1));
    }
}
