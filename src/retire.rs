//! Drops replaced state on a background thread, so that a reload returns as soon as its new
//! snapshot is live.
//!
//! A snapshot of 10,000 virtual models and the loaded config it was built from are hundreds of
//! thousands of allocations; freeing them took a third of a reload. Nothing observes when a
//! value is freed, so the reload hands the last reference it holds to this thread instead.
//! Requests still running on an old snapshot keep their own `Arc` and are unaffected. This module
//! runs nothing but destructors and, once no more arrives for `GIVE_BACK_AFTER`, one
//! `allocator::give_back`: the freed tables of a large config otherwise stay resident (after
//! reloads of 100,000 virtual models, 525 MiB against 248 MiB; BENCHMARKS.md).

use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::Duration;

/// How long the thread waits, after freeing, for more to free before it hands the memory back
/// to the operating system (`allocator::give_back`).
const GIVE_BACK_AFTER: Duration = Duration::from_secs(1);

type Retired = Box<dyn Send>;

/// A thread that drops what it is handed, in the order handed.
#[derive(Debug)]
pub struct Retirer {
    /// `None` when the thread could not be started: values are then dropped in place.
    tx: Option<Sender<Retired>>,
}

impl Default for Retirer {
    fn default() -> Self {
        Retirer::new()
    }
}

impl Retirer {
    /// Starts the thread; it ends when the `Retirer` is dropped and the queue is drained.
    pub fn new() -> Retirer {
        let (tx, rx) = channel::<Retired>();
        let started = std::thread::Builder::new()
            .name("retire".into())
            .spawn(move || {
                while let Ok(value) = rx.recv() {
                    drop(value);
                    // Hand the memory back once reloads settle: a reload that follows at once
                    // reuses the freed pages instead of faulting fresh ones in.
                    loop {
                        match rx.recv_timeout(GIVE_BACK_AFTER) {
                            Ok(more) => drop(more),
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    crate::allocator::give_back();
                }
            });
        let tx = match started {
            Ok(_) => Some(tx),
            Err(e) => {
                log::warn!("cannot start the thread that frees replaced snapshots: {e}; freeing them in place");
                None
            }
        };
        Retirer { tx }
    }

    /// Drops `value` on the background thread (in place if that thread is gone).
    pub fn retire<T: Send + 'static>(&self, value: T) {
        let value: Retired = Box::new(value);
        if let Some(tx) = &self.tx {
            // A send fails only when the thread is gone; the value then drops here.
            let _ = tx.send(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn retired_values_are_dropped() {
        let r = Retirer::new();
        let shared = Arc::new(vec![1u8; 16]);
        r.retire(shared.clone());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&shared) > 1 {
            assert!(
                Instant::now() < deadline,
                "the retired clone was never dropped"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
