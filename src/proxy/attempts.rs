//! The request's walk along its plan: which attempt is current, how many tries each target
//! had, and, after a failure, whether to retry the same target, fall back to the next one, or
//! give up.
//!
//! One owner for this state: the exchange loop (`proxy::exchange`) reports what happened and
//! carries out the answer. Nothing here knows about Pingora, the clock or the network.

use crate::routing::error_class::ErrorClass;
use crate::routing::model::{RetryPolicy, Target, DEFAULT_FALLBACK_ON};

/// Longest `Retry-After` we wait before retrying the same target.
pub const RETRY_AFTER_CAP_MS: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The upstream answered with this status, which with its body says this class.
    Status(u16, ErrorClass),
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
    /// Extra requests a hedge sent (counted in `made` too).
    pub hedges: u32,
    /// Which of the plan's first 64 attempts were tried (bit i: attempt i).
    tried: u64,
}

impl Attempts {
    /// A try of the current attempt begins: one more upstream request.
    pub fn begin(&mut self) {
        self.made += 1;
        self.tries_on_target += 1;
        self.mark_tried();
    }

    fn mark_tried(&mut self) {
        self.mark(self.index);
    }

    fn mark(&mut self, index: usize) {
        if let Some(bit) = 1u64.checked_shl(index as u32) {
            self.tried |= bit;
        }
    }

    /// A hedge sends the same request to the attempt at `index` while the current one is
    /// under way: one more upstream request.
    pub fn begin_hedge(&mut self, index: usize) {
        self.made += 1;
        self.hedges += 1;
        self.mark(index);
    }

    /// The hedge to `index` answered first: it becomes the current attempt, with one try.
    pub fn hedge_won(&mut self, index: usize) {
        self.index = index;
        self.tries_on_target = 1;
    }

    /// Whether the attempt at `index` was tried (answered locally included). Attempts past
    /// the 64th count as tried: their probe slots are left to expire.
    pub fn was_tried(&self, index: usize) -> bool {
        1u64.checked_shl(index as u32)
            .is_none_or(|bit| self.tried & bit != 0)
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
        self.mark_tried();
    }

    /// Decides what follows a failure of the current try and moves the cursor accordingly.
    ///
    /// `opened_breaker`: this failure opened the target's circuit, so it gets no further try
    /// now, not even one its retry policy allows. `next_usable`: the index of the next attempt
    /// of the plan that can be tried, if any. `retry_after_s`: the upstream's `Retry-After`.
    /// `provider_retry` applies when the attempt has no target (a concrete model requested
    /// directly); `random_unit` in [0, 1) draws the retry delay's jitter.
    #[allow(clippy::too_many_arguments)]
    pub fn on_failure(
        &mut self,
        failure: Failure,
        target: Option<&Target>,
        provider_retry: &RetryPolicy,
        opened_breaker: bool,
        next_usable: Option<usize>,
        retry_after_s: Option<u64>,
        random_unit: f64,
    ) -> Next {
        if failure == Failure::Connection {
            self.connect_failures += 1;
        }
        let tries = if opened_breaker {
            u32::MAX
        } else {
            self.tries_on_target
        };
        let next = decide(
            failure,
            target,
            provider_retry,
            tries,
            next_usable.is_some(),
            retry_after_s,
            random_unit,
        );
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
/// `provider_retry` is the retry policy of the attempt's provider, which applies when no target
/// does (a concrete model requested directly); `tries` counts the tries already made on this
/// target; `has_next` says whether the plan has a further attempt; `retry_after_s` is the
/// upstream's `Retry-After`, if any; `random_unit` (in [0, 1)) picks the backoff's jitter.
pub fn decide(
    failure: Failure,
    target: Option<&Target>,
    provider_retry: &RetryPolicy,
    tries: u32,
    has_next: bool,
    retry_after_s: Option<u64>,
    random_unit: f64,
) -> Next {
    let retry = target.map_or(provider_retry, |t| &*t.retry);
    let retryable = match failure {
        Failure::Status(s, _) => retry.on_status.contains(&s),
        Failure::Connection => true,
    };
    let falls_back = match failure {
        Failure::Connection => true,
        Failure::Status(s, class) => target.map_or(DEFAULT_FALLBACK_ON.contains(&s), |t| {
            t.fallback_on.contains(&s) || t.extras().fallback_on_errors.contains(&class)
        }),
    };
    // A 429 with `Retry-After` takes the target out until then (rate-limit steering): when
    // the plan can fall back, it does so at once instead of waiting to retry.
    let steered_away =
        matches!(failure, Failure::Status(429, _)) && retry_after_s.is_some() && has_next;
    if retryable && tries < retry.attempts && !(steered_away && falls_back) {
        let wait = retry_after_s
            .map(|s| (s * 1000).min(RETRY_AFTER_CAP_MS))
            .unwrap_or(0);
        return Next::Retry {
            delay_ms: retry.delay_ms(tries, random_unit).max(wait),
        };
    }
    if !has_next {
        return Next::GiveUp;
    }
    if falls_back {
        Next::Fallback
    } else {
        Next::GiveUp
    }
}

/// Whether a failure of class `class` on a target with context window `failed_window` may
/// fall back to an attempt with `candidate_window`: a prompt too long for one model goes only
/// to a model with a larger known window (any known window, when the failed one's is not
/// known). Every other class may go anywhere.
pub fn admits_fallback(
    class: Option<ErrorClass>,
    failed_window: Option<u64>,
    candidate_window: Option<u64>,
) -> bool {
    match class {
        Some(ErrorClass::ContextLengthExceeded) => match (failed_window, candidate_window) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(f), Some(c)) => c > f,
        },
        Some(
            ErrorClass::RateLimited
            | ErrorClass::ContentFiltered
            | ErrorClass::Overloaded
            | ErrorClass::Auth
            | ErrorClass::InvalidRequest
            | ErrorClass::Server,
        )
        | None => true,
    }
}

/// Whether a status counts against a target's health.
pub fn is_failure_status(status: u16) -> bool {
    status == 429 || status >= 500
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::error_class::from_status;
    use crate::routing::model::TargetExtras;

    fn status(s: u16) -> Failure {
        Failure::Status(s, from_status(s))
    }

    fn walk() -> Attempts {
        let mut a = Attempts::default();
        a.begin();
        a
    }

    #[test]
    fn a_retry_keeps_the_attempt_and_counts_the_try() {
        let t = target(2);
        let mut a = walk();
        let next = a.on_failure(
            status(503),
            Some(&t),
            &RetryPolicy::default(),
            false,
            Some(1),
            None,
            0.5,
        );
        assert_eq!(next, Next::Retry { delay_ms: 100 });
        a.begin();
        assert_eq!(
            (a.index, a.tries_on_target, a.made, a.fallbacks),
            (0, 2, 2, 0)
        );
        // The target's tries are used up: on to the next attempt.
        let next = a.on_failure(
            status(503),
            Some(&t),
            &RetryPolicy::default(),
            false,
            Some(1),
            None,
            0.5,
        );
        assert_eq!(next, Next::Fallback);
        a.begin();
        assert_eq!(
            (a.index, a.tries_on_target, a.made, a.fallbacks),
            (1, 1, 3, 1)
        );
    }

    #[test]
    fn the_attempts_tried_are_known() {
        let t = target(1);
        let mut a = walk();
        a.on_failure(
            Failure::Connection,
            Some(&t),
            &RetryPolicy::default(),
            false,
            Some(2),
            None,
            0.5,
        );
        a.begin();
        assert!(a.was_tried(0) && !a.was_tried(1) && a.was_tried(2) && !a.was_tried(3));
        assert!(a.was_tried(64), "beyond the mask counts as tried");
    }

    #[test]
    fn a_failure_that_opened_the_breaker_falls_back_at_once() {
        let t = target(3);
        let mut a = walk();
        let next = a.on_failure(
            status(500),
            Some(&t),
            &RetryPolicy::default(),
            true,
            Some(2),
            None,
            0.5,
        );
        assert_eq!(next, Next::Fallback);
        assert_eq!(a.index, 2);
    }

    #[test]
    fn a_failure_that_opened_the_breaker_on_the_last_attempt_gives_up() {
        let t = target(3);
        let mut a = walk();
        let next = a.on_failure(
            status(500),
            Some(&t),
            &RetryPolicy::default(),
            true,
            None,
            None,
            0.5,
        );
        assert_eq!(next, Next::GiveUp);
        assert_eq!(a.index, 0);
    }

    #[test]
    fn listed_statuses_outside_the_defaults_are_acted_on() {
        let t = Target {
            retry: std::sync::Arc::new(RetryPolicy {
                attempts: 2,
                initial_delay_ms: 0,
                on_status: vec![408],
                ..RetryPolicy::default()
            }),
            fallback_on: [409, 400].into(),
            ..Target::new(Some(0), "m", "p/m")
        };
        let mut a = walk();
        assert_eq!(
            a.on_failure(
                status(408),
                Some(&t),
                &RetryPolicy::default(),
                false,
                Some(1),
                None,
                0.5
            ),
            Next::Retry { delay_ms: 0 }
        );
        a.begin();
        assert_eq!(
            a.on_failure(
                status(408),
                Some(&t),
                &RetryPolicy::default(),
                false,
                Some(1),
                None,
                0.5
            ),
            Next::GiveUp,
            "408 is retried, not listed for fallback"
        );
        let mut a = walk();
        assert_eq!(
            a.on_failure(
                status(409),
                Some(&t),
                &RetryPolicy::default(),
                false,
                Some(1),
                None,
                0.5
            ),
            Next::Fallback
        );
        let mut a = walk();
        assert_eq!(
            a.on_failure(
                status(400),
                Some(&t),
                &RetryPolicy::default(),
                false,
                Some(1),
                None,
                0.5
            ),
            Next::Fallback
        );
    }

    #[test]
    fn connection_failures_are_counted() {
        let t = target(2);
        let mut a = walk();
        a.on_failure(
            Failure::Connection,
            Some(&t),
            &RetryPolicy::default(),
            false,
            None,
            None,
            0.5,
        );
        assert_eq!(a.connect_failures, 1);
    }

    #[test]
    fn a_local_answer_after_a_failure_counts_as_a_fallback_and_a_request() {
        let mut a = walk();
        a.on_failure(
            status(500),
            None,
            &RetryPolicy::default(),
            true,
            Some(1),
            None,
            0.5,
        );
        a.answer_locally(1);
        assert_eq!((a.index, a.made, a.fallbacks), (1, 2, 1));
        let mut first = Attempts::default();
        first.answer_locally(0);
        assert_eq!((first.index, first.made, first.fallbacks), (0, 1, 0));
    }

    fn target(attempts: u32) -> Target {
        Target {
            retry: std::sync::Arc::new(RetryPolicy {
                attempts,
                ..RetryPolicy::default()
            }),
            ..Target::new(Some(0), "m", "p/m")
        }
    }

    #[test]
    fn retries_retryable_status_until_attempts_used() {
        let t = target(2);
        assert_eq!(
            decide(
                status(500),
                Some(&t),
                &RetryPolicy::default(),
                1,
                true,
                None,
                0.5
            ),
            Next::Retry { delay_ms: 100 }
        );
        assert_eq!(
            decide(
                status(500),
                Some(&t),
                &RetryPolicy::default(),
                2,
                true,
                None,
                0.5
            ),
            Next::Fallback
        );
        assert_eq!(
            decide(
                status(500),
                Some(&t),
                &RetryPolicy::default(),
                2,
                false,
                None,
                0.5
            ),
            Next::GiveUp
        );
    }

    #[test]
    fn client_errors_outside_the_lists_go_to_the_client() {
        let t = target(2);
        assert_eq!(
            decide(
                status(400),
                Some(&t),
                &RetryPolicy::default(),
                1,
                true,
                None,
                0.5
            ),
            Next::GiveUp
        );
        assert_eq!(
            decide(
                status(401),
                Some(&t),
                &RetryPolicy::default(),
                1,
                true,
                None,
                0.5
            ),
            Next::Fallback
        );
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let t = target(3);
        assert_eq!(
            decide(
                status(429),
                Some(&t),
                &RetryPolicy::default(),
                1,
                false,
                Some(2),
                0.5
            ),
            Next::Retry { delay_ms: 2000 }
        );
        assert_eq!(
            decide(
                status(429),
                Some(&t),
                &RetryPolicy::default(),
                1,
                false,
                Some(3600),
                0.5
            ),
            Next::Retry {
                delay_ms: RETRY_AFTER_CAP_MS
            }
        );
    }

    #[test]
    fn retries_back_off_exponentially() {
        let t = Target {
            retry: std::sync::Arc::new(RetryPolicy {
                attempts: 4,
                initial_delay_ms: 1000,
                ..RetryPolicy::default()
            }),
            ..Target::new(Some(0), "m", "p/m")
        };
        let waits: Vec<Next> = (1..=3)
            .map(|n| {
                decide(
                    status(500),
                    Some(&t),
                    &RetryPolicy::default(),
                    n,
                    true,
                    None,
                    0.5,
                )
            })
            .collect();
        assert_eq!(
            waits,
            [1000, 2000, 4000].map(|delay_ms| Next::Retry { delay_ms })
        );
    }

    #[test]
    fn a_concrete_model_follows_its_providers_policy() {
        let provider = RetryPolicy {
            attempts: 3,
            initial_delay_ms: 7,
            backoff_factor: 1.0,
            ..RetryPolicy::default()
        };
        assert_eq!(
            decide(status(503), None, &provider, 2, false, None, 0.5),
            Next::Retry { delay_ms: 7 }
        );
        assert_eq!(
            decide(status(503), None, &provider, 3, false, None, 0.5),
            Next::GiveUp
        );
    }

    #[test]
    fn connection_failures_retry_then_fall_back() {
        let t = target(1);
        assert_eq!(
            decide(
                Failure::Connection,
                Some(&t),
                &RetryPolicy::default(),
                1,
                true,
                None,
                0.5
            ),
            Next::Fallback
        );
        assert_eq!(
            decide(
                Failure::Connection,
                Some(&t),
                &RetryPolicy::default(),
                1,
                false,
                None,
                0.5
            ),
            Next::GiveUp
        );
    }

    #[test]
    fn a_429_with_retry_after_falls_back_at_once_when_it_can() {
        let t = target(3);
        let p = RetryPolicy::default();
        assert_eq!(
            decide(status(429), Some(&t), &p, 1, true, Some(5), 0.5),
            Next::Fallback
        );
        // Without Retry-After, the retry policy applies as before.
        assert_eq!(
            decide(status(429), Some(&t), &p, 1, true, None, 0.5),
            Next::Retry { delay_ms: 100 }
        );
        // When 429 does not fall back, the retry (with its wait) stays.
        let no_fallback = Target {
            fallback_on: [500].into(),
            ..target(3)
        };
        assert_eq!(
            decide(status(429), Some(&no_fallback), &p, 1, true, Some(1), 0.5),
            Next::Retry { delay_ms: 1000 }
        );
    }

    #[test]
    fn error_classes_add_to_the_fallback_statuses() {
        let t = Target {
            extras: TargetExtras {
                fallback_on_errors: vec![ErrorClass::ContextLengthExceeded],
                ..TargetExtras::default()
            }
            .boxed(),
            ..target(1)
        };
        let p = RetryPolicy::default();
        let too_long = Failure::Status(400, ErrorClass::ContextLengthExceeded);
        assert_eq!(
            decide(too_long, Some(&t), &p, 1, true, None, 0.5),
            Next::Fallback
        );
        // The same status of another class goes to the client.
        let invalid = Failure::Status(400, ErrorClass::InvalidRequest);
        assert_eq!(
            decide(invalid, Some(&t), &p, 1, true, None, 0.5),
            Next::GiveUp
        );
        // Without the class listed, a context-length 400 is the client's.
        assert_eq!(
            decide(too_long, Some(&target(1)), &p, 1, true, None, 0.5),
            Next::GiveUp
        );
        let filtered = Target {
            extras: TargetExtras {
                fallback_on_errors: vec![ErrorClass::ContentFiltered],
                ..TargetExtras::default()
            }
            .boxed(),
            ..target(1)
        };
        assert_eq!(
            decide(
                Failure::Status(400, ErrorClass::ContentFiltered),
                Some(&filtered),
                &p,
                1,
                true,
                None,
                0.5
            ),
            Next::Fallback
        );
    }

    #[test]
    fn a_prompt_too_long_falls_back_only_to_a_larger_window() {
        let ctx = Some(ErrorClass::ContextLengthExceeded);
        assert!(admits_fallback(ctx, Some(8_000), Some(128_000)));
        assert!(!admits_fallback(ctx, Some(128_000), Some(128_000)));
        assert!(!admits_fallback(ctx, Some(128_000), Some(8_000)));
        assert!(!admits_fallback(ctx, Some(8_000), None));
        assert!(admits_fallback(ctx, None, Some(8_000)));
        assert!(!admits_fallback(ctx, None, None));
        for c in ErrorClass::ALL
            .into_iter()
            .filter(|c| *c != ErrorClass::ContextLengthExceeded)
        {
            assert!(
                admits_fallback(Some(c), Some(128_000), Some(8_000)),
                "{c:?}"
            );
        }
        assert!(admits_fallback(None, Some(128_000), None));
    }

    #[test]
    fn a_hedge_counts_as_a_request_and_its_win_moves_the_cursor() {
        let mut a = walk();
        a.begin_hedge(2);
        assert_eq!((a.index, a.made, a.hedges, a.fallbacks), (0, 2, 1, 0));
        assert!(a.was_tried(2) && !a.was_tried(1));
        a.hedge_won(2);
        assert_eq!((a.index, a.tries_on_target, a.made), (2, 1, 2));
    }
}
