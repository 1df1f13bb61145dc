//! The bound on an answer's quiet time: how long the gateway waits for the next piece of an
//! upstream answer before it gives the answer up (a provider's `timeouts.idle_ms`).
//!
//! One timer per answer, not one per piece. A stream relays thousands of events, and a timer per
//! event was registered on the runtime's timer wheel and taken off it again for each (a clock
//! read to set it, a lock on the wheel to insert it and another to cancel it). Here a piece only
//! notes when it came, on the coarse monotonic clock; the one timer fires once per bound, and
//! then either ends the wait (nothing came for the whole bound) or sets itself again for what is
//! left of the bound after the last piece.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::mono_clock::now_ms;

/// The quiet-time bound of one answer, kept by the timer it is given.
pub(super) struct Quiet<'a> {
    bound_ms: u64,
    /// When the last piece came (or the wait began), on `mono_clock`.
    heard_ms: u64,
    timer: Pin<&'a mut Sleep>,
}

impl<'a> Quiet<'a> {
    /// Starts the wait for the first piece: `timer` is set to fire after `bound`.
    pub(super) fn new(mut timer: Pin<&'a mut Sleep>, bound: Duration) -> Self {
        timer.as_mut().reset(Instant::now() + bound);
        Quiet {
            bound_ms: u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
            heard_ms: now_ms(),
            timer,
        }
    }

    /// A piece came: the quiet time starts again from now.
    pub(super) fn heard(&mut self) {
        self.heard_ms = now_ms();
    }

    /// Completes when no piece has come for the whole bound.
    pub(super) async fn over(&mut self) {
        loop {
            self.timer.as_mut().await;
            match left(self.bound_ms, self.heard_ms, now_ms()) {
                None => return,
                Some(rest) => self.timer.as_mut().reset(Instant::now() + rest),
            }
        }
    }
}

/// What is left of a quiet-time bound of `bound_ms` at `now_ms` when the last piece came at
/// `heard_ms`; None when the bound has run out.
fn left(bound_ms: u64, heard_ms: u64, now_ms: u64) -> Option<Duration> {
    let quiet = now_ms.saturating_sub(heard_ms);
    (quiet < bound_ms).then(|| Duration::from_millis(bound_ms - quiet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_runs_from_the_last_piece() {
        // A piece 700 ms ago under a 1 s bound: 300 ms are left.
        assert_eq!(left(1000, 5_000, 5_700), Some(Duration::from_millis(300)));
        // Just heard: the whole bound.
        assert_eq!(left(1000, 5_000, 5_000), Some(Duration::from_secs(1)));
    }

    #[test]
    fn the_bound_runs_out_at_its_length_and_after() {
        assert_eq!(left(1000, 5_000, 6_000), None);
        assert_eq!(left(1000, 5_000, 9_000), None);
    }

    #[test]
    fn a_reading_older_than_the_last_piece_leaves_the_whole_bound() {
        // The coarse clock read by another thread may trail the piece's reading.
        assert_eq!(left(1000, 5_000, 4_990), Some(Duration::from_secs(1)));
    }

    #[tokio::test]
    async fn pieces_inside_the_bound_keep_the_wait_going_and_silence_ends_it() {
        let timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let mut quiet = Quiet::new(timer, Duration::from_millis(600));
        // Pieces every 100 ms for 1.5 s, two and a half times the bound: the wait goes on.
        for _ in 0..15 {
            let piece = tokio::time::sleep(Duration::from_millis(100));
            tokio::select! {
                biased;
                () = quiet.over() => panic!("the bound ran out while pieces came"),
                () = piece => quiet.heard(),
            }
        }
        // Then silence: the wait ends, and not before the bound (less a tick of the coarse
        // clock).
        let silent = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(10), quiet.over())
            .await
            .expect("the bound never ran out");
        assert!(silent.elapsed() >= Duration::from_millis(550));
    }
}
