//! The request's walk along its plan: which attempt is current, how many tries each target
//! had, and, after a failure, whether to retry the same target, fall back to the next one, or
//! give up.
//!
//! One owner for this state: the exchange loop (`proxy::exchange`) reports what happened and
//! carries out the answer. Nothing here knows about Pingora, the clock or the network.

use crate::routing::model::{RetryPolicy, Target, DEFAULT_FALLBACK_ON};

/// Longest `Retry-After` we wait before retrying the same target.
pub const RETRY_AFTER_CAP_MS: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The upstream answered with this status.
    Status(u16),
    /// Connecting failed, or the connection broke before a response.
    Connection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try the same target again after this many milliseconds.
    Retry { delay_ms: u64 },
    /// Move to the next attempt of the plan.
    Fallback,
    /// Let the client have this outcome.
    GiveUp,
}

/// Where a request stands in its plan. Counts every upstream request it made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempts {
    /// Index into the plan's attempts of the current one.
    pub index: usize,
    /// Tries made on the current target, the one under way included.
    pub tries_on_target: u32,
    /// Upstream requests made, retries included (`X-Modelgate-Attempts`).
    pub made: u32,
    /// Moves to a later attempt of the plan.
    pub fallbacks: u32,
    /// Tries that ended without a response (connect or read failures, timeouts).
    pub connect_failures: u32,
}

impl Attempts {
    /// A try of the current attempt begins: one more upstream request.
    pub fn begin(&mut self) {
        self.made += 1;
        self.tries_on_target += 1;
    }

    /// A fallback to the attempt at `index` that is answered without an upstream request (the
    /// mock provider): it counts as a request made, as a proxied one would.
    pub fn answer_locally(&mut self, index: usize) {
        if index != self.index {
            self.index = index;
            self.fallbacks += 1;
        }
        self.tries_on_target = 1;
        self.made += 1;
    }

    /// Decides what follows a failure of the current try and moves the cursor accordingly.
    ///
    /// `opened_breaker`: this failure opened the target's circuit, so it gets no further try
    /// now, not even one its retry policy allows. `next_usable`: the index of the next attempt
    /// of the plan that can be tried, if any. `retry_after_s`: the upstream's `Retry-After`.
    pub fn on_failure(
        &mut self,
        failure: Failure,
        target: Option<&Target>,
        opened_breaker: bool,
        next_usable: Option<usize>,
        retry_after_s: Option<u64>,
    ) -> Next {
        if failure == Failure::Connection {
            self.connect_failures += 1;
        }
        let tries = if opened_breaker {
            u32::MAX
        } else {
            self.tries_on_target
        };
        let next = decide(failure, target, tries, next_usable.is_some(), retry_after_s);
        match (next, next_usable) {
            (Next::Fallback, Some(i)) => {
                self.index = i;
                self.tries_on_target = 0;
                self.fallbacks += 1;
            }
            (Next::Fallback, None) => return Next::GiveUp,
            (Next::Retry { .. } | Next::GiveUp, _) => {}
        }
        next
    }
}

/// Decides what follows a failure.
/// `tries` counts the tries already made on this target; `has_next` says whether the plan has a
/// further attempt; `retry_after_s` is the upstream's `Retry-After`, if any.
pub fn decide(
    failure: Failure,
    target: Option<&Target>,
    tries: u32,
    has_next: bool,
    retry_after_s: Option<u64>,
) -> Next {
    let default_retry = RetryPolicy::default();
    let retry = target.map_or(&default_retry, |t| &t.retry);
    let retryable = match failure {
        Failure::Status(s) => retry.on_status.contains(&s),
        Failure::Connection => true,
    };
    if retryable && tries < retry.attempts {
        let wait = retry_after_s
            .map(|s| (s * 1000).min(RETRY_AFTER_CAP_MS))
            .unwrap_or(0);
        return Next::Retry {
            delay_ms: retry.delay_ms.max(wait),
        };
    }
    if !has_next {
        return Next::GiveUp;
    }
    let falls_back = match failure {
        Failure::Connection => true,
        Failure::Status(s) => target.map_or(DEFAULT_FALLBACK_ON.contains(&s), |t| {
            t.fallback_on.contains(&s)
        }),
    };
    if falls_back {
        Next::Fallback
    } else {
        Next::GiveUp
    }
}

/// Whether a status counts against a target's health.
pub fn is_failure_status(status: u16) -> bool {
    status == 429 || status >= 500
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk() -> Attempts {
        let mut a = Attempts::default();
        a.begin();
        a
    }

    #[test]
    fn a_retry_keeps_the_attempt_and_counts_the_try() {
        let t = target(2);
        let mut a = walk();
        let next = a.on_failure(Failure::Status(503), Some(&t), false, Some(1), None);
        assert_eq!(next, Next::Retry { delay_ms: 100 });
        a.begin();
        assert_eq!(
            (a.index, a.tries_on_target, a.made, a.fallbacks),
            (0, 2, 2, 0)
        );
        // The target's tries are used up: on to the next attempt.
        let next = a.on_failure(Failure::Status(503), Some(&t), false, Some(1), None);
        assert_eq!(next, Next::Fallback);
        a.begin();
        assert_eq!(
            (a.index, a.tries_on_target, a.made, a.fallbacks),
            (1, 1, 3, 1)
        );
    }

    #[test]
    fn a_failure_that_opened_the_breaker_falls_back_at_once() {
        let t = target(3);
        let mut a = walk();
        let next = a.on_failure(Failure::Status(500), Some(&t), true, Some(2), None);
        assert_eq!(next, Next::Fallback);
        assert_eq!(a.index, 2);
    }

    #[test]
    fn a_failure_that_opened_the_breaker_on_the_last_attempt_gives_up() {
        let t = target(3);
        let mut a = walk();
        let next = a.on_failure(Failure::Status(500), Some(&t), true, None, None);
        assert_eq!(next, Next::GiveUp);
        assert_eq!(a.index, 0);
    }

    #[test]
    fn listed_statuses_outside_the_defaults_are_acted_on() {
        let t = Target {
            retry: RetryPolicy {
                attempts: 2,
                delay_ms: 0,
                on_status: vec![408],
            },
            fallback_on: vec![409, 400],
            ..Target::new(Some(0), "m", "p/m")
        };
        let mut a = walk();
        assert_eq!(
            a.on_failure(Failure::Status(408), Some(&t), false, Some(1), None),
            Next::Retry { delay_ms: 0 }
        );
        a.begin();
        assert_eq!(
            a.on_failure(Failure::Status(408), Some(&t), false, Some(1), None),
            Next::GiveUp,
            "408 is retried, not listed for fallback"
        );
        let mut a = walk();
        assert_eq!(
            a.on_failure(Failure::Status(409), Some(&t), false, Some(1), None),
            Next::Fallback
        );
        let mut a = walk();
        assert_eq!(
            a.on_failure(Failure::Status(400), Some(&t), false, Some(1), None),
            Next::Fallback
        );
    }

    #[test]
    fn connection_failures_are_counted() {
        let t = target(2);
        let mut a = walk();
        a.on_failure(Failure::Connection, Some(&t), false, None, None);
        assert_eq!(a.connect_failures, 1);
    }

    #[test]
    fn a_local_answer_after_a_failure_counts_as_a_fallback_and_a_request() {
        let mut a = walk();
        a.on_failure(Failure::Status(500), None, true, Some(1), None);
        a.answer_locally(1);
        assert_eq!((a.index, a.made, a.fallbacks), (1, 2, 1));
        let mut first = Attempts::default();
        first.answer_locally(0);
        assert_eq!((first.index, first.made, first.fallbacks), (0, 1, 0));
    }

    fn target(attempts: u32) -> Target {
        Target {
            retry: RetryPolicy {
                attempts,
                ..RetryPolicy::default()
            },
            ..Target::new(Some(0), "m", "p/m")
        }
    }

    #[test]
    fn retries_retryable_status_until_attempts_used() {
        let t = target(2);
        assert_eq!(
            decide(Failure::Status(500), Some(&t), 1, true, None),
            Next::Retry { delay_ms: 100 }
        );
        assert_eq!(
            decide(Failure::Status(500), Some(&t), 2, true, None),
            Next::Fallback
        );
        assert_eq!(
            decide(Failure::Status(500), Some(&t), 2, false, None),
            Next::GiveUp
        );
    }

    #[test]
    fn client_errors_outside_the_lists_go_to_the_client() {
        let t = target(2);
        assert_eq!(
            decide(Failure::Status(400), Some(&t), 1, true, None),
            Next::GiveUp
        );
        assert_eq!(
            decide(Failure::Status(401), Some(&t), 1, true, None),
            Next::Fallback
        );
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let t = target(3);
        assert_eq!(
            decide(Failure::Status(429), Some(&t), 1, true, Some(2)),
            Next::Retry { delay_ms: 2000 }
        );
        assert_eq!(
            decide(Failure::Status(429), Some(&t), 1, true, Some(3600)),
            Next::Retry {
                delay_ms: RETRY_AFTER_CAP_MS
            }
        );
    }

    #[test]
    fn connection_failures_retry_then_fall_back() {
        let t = target(1);
        assert_eq!(
            decide(Failure::Connection, Some(&t), 1, true, None),
            Next::Fallback
        );
        assert_eq!(
            decide(Failure::Connection, Some(&t), 1, false, None),
            Next::GiveUp
        );
    }
}
