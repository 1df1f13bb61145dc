//! After a failed attempt: retry the same target, fall back to the next one, or give up.
//!
//! A named, separately tested piece: the proxy only reports what happened and carries out the
//! decision. Nothing here knows about Pingora.

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
    let retry = target.map_or(provider_retry, |t| &t.retry);
    let retryable = match failure {
        Failure::Status(s) => retry.on_status.contains(&s),
        Failure::Connection => true,
    };
    if retryable && tries < retry.attempts {
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
            decide(
                Failure::Status(500),
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
                Failure::Status(500),
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
                Failure::Status(500),
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
                Failure::Status(400),
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
                Failure::Status(401),
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
                Failure::Status(429),
                Some(&t),
                &RetryPolicy::default(),
                1,
                true,
                Some(2),
                0.5
            ),
            Next::Retry { delay_ms: 2000 }
        );
        assert_eq!(
            decide(
                Failure::Status(429),
                Some(&t),
                &RetryPolicy::default(),
                1,
                true,
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
            retry: RetryPolicy {
                attempts: 4,
                initial_delay_ms: 1000,
                ..RetryPolicy::default()
            },
            ..Target::new(Some(0), "m", "p/m")
        };
        let waits: Vec<Next> = (1..=3)
            .map(|n| {
                decide(
                    Failure::Status(500),
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
            decide(Failure::Status(503), None, &provider, 2, false, None, 0.5),
            Next::Retry { delay_ms: 7 }
        );
        assert_eq!(
            decide(Failure::Status(503), None, &provider, 3, false, None, 0.5),
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
}
