//! Rate limits and budgets: requests and tokens per minute, requests in flight, and a USD
//! budget per period, for a managed key, a user path or a virtual model (`limits:` in
//! config.yaml and `limits` on a key).
//!
//! A request that falls under limits reserves its estimate (input characters / 4 plus its
//! `max_tokens`, or a default; priced with its first target) before it goes upstream, and
//! settles with the usage the upstream reported once it ends (streams included); a request
//! that fails, or whose client leaves, gives its reservation and its concurrency slot back when
//! its `Reservation` is dropped. Each counter judges a request by what was used before it, so
//! concurrent requests overshoot a limit by at most one request's estimate.
//!
//! Counters are this gateway's (`local`) or, with `REDIS_URL`, shared by every gateway through
//! atomic scripts (`shared`). The rules are rebuilt off the request path whenever the config
//! or the keys change and swapped in whole; with no limit anywhere the request path pays one
//! atomic load and one branch. Nothing here reads a request or writes a response.

pub mod config;
pub mod estimate;
pub mod gomodel;
pub mod local;
pub mod shared;
pub mod spec;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use smallvec::SmallVec;

use crate::api_error::ApiError;
use crate::keys::KeyTable;
use crate::routing::user_path::UserPath;
pub use config::LimitsConfig;
use local::{Bucket, Refusal};
pub use spec::{LimitSpec, Matcher, Period};

/// One limit, compiled, with its counters.
#[derive(Debug)]
pub struct Limit {
    /// Stable across reloads (the counters' key): what it matches and its place.
    pub id: String,
    /// How messages name it: `key "ci"`, `user path /team`, `virtual model smart`.
    pub scope: String,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u64>,
    /// Micro-USD per period.
    pub budget: Option<(u64, Period)>,
    pub bucket: Arc<Bucket>,
}

/// Everything the request path needs to find a request's limits.
#[derive(Debug, Default)]
pub struct Rules {
    by_key: HashMap<String, Vec<Arc<Limit>>>,
    by_virtual_model: HashMap<String, Vec<Arc<Limit>>>,
    by_user_path: Vec<(UserPath, Arc<Limit>)>,
    pub fail_open: bool,
    pub default_max_tokens: u64,
    /// The shared counters, when `REDIS_URL` is set.
    pub shared: Option<Arc<shared::Shared>>,
}

/// Who a request is, for matching limits.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub key: Option<&'a str>,
    pub user_path: Option<&'a UserPath>,
    pub virtual_model: Option<&'a str>,
}

pub type Matched = SmallVec<[Arc<Limit>; 4]>;

impl Rules {
    /// The limits a request falls under (none: it is not limited).
    pub fn matching(&self, who: &Who<'_>) -> Matched {
        let mut out = Matched::new();
        if let Some(list) = who.key.and_then(|k| self.by_key.get(k)) {
            out.extend(list.iter().cloned());
        }
        if let Some(list) = who.virtual_model.and_then(|v| self.by_virtual_model.get(v)) {
            out.extend(list.iter().cloned());
        }
        for (p, l) in &self.by_user_path {
            if p.is_root() || who.user_path.is_some_and(|u| p.covers(u)) {
                out.push(l.clone());
            }
        }
        out
    }
}

/// A request's estimate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Estimate {
    pub tokens: u64,
    pub micro_usd: u64,
}

/// The `x-ratelimit-*` values of an answer under a limit: (limit, remaining, seconds to reset)
/// for requests, for tokens and for a budget (micro-USD), and (limit, remaining) for requests
/// in flight, from the tightest limit of each that applied.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateHeaders {
    pub requests: Option<(u64, u64, u64)>,
    pub tokens: Option<(u64, u64, u64)>,
    pub budget: Option<(u64, u64, u64)>,
    pub concurrent: Option<(u64, u64)>,
}

impl RateHeaders {
    /// The headers as (name, value) pairs.
    pub fn pairs(&self) -> SmallVec<[(&'static str, String); 11]> {
        let mut out = SmallVec::new();
        if let Some((l, r, s)) = self.requests {
            out.push(("x-ratelimit-limit-requests", l.to_string()));
            out.push(("x-ratelimit-remaining-requests", r.to_string()));
            out.push(("x-ratelimit-reset-requests", format!("{s}s")));
        }
        if let Some((l, r, s)) = self.tokens {
            out.push(("x-ratelimit-limit-tokens", l.to_string()));
            out.push(("x-ratelimit-remaining-tokens", r.to_string()));
            out.push(("x-ratelimit-reset-tokens", format!("{s}s")));
        }
        // OpenAI's headers have no money dimension; the budget follows their pattern, in USD.
        if let Some((l, r, s)) = self.budget {
            out.push(("x-ratelimit-limit-budget", usd(l)));
            out.push(("x-ratelimit-remaining-budget", usd(r)));
            out.push(("x-ratelimit-reset-budget", format!("{s}s")));
        }
        // Requests in flight have no window to reset.
        if let Some((l, r)) = self.concurrent {
            out.push(("x-ratelimit-limit-concurrent", l.to_string()));
            out.push(("x-ratelimit-remaining-concurrent", r.to_string()));
        }
        out
    }

    fn tighten_concurrent(&mut self, limit: u64, in_flight: u64) {
        let remaining = limit.saturating_sub(in_flight);
        if self.concurrent.is_none_or(|(_, r)| remaining < r) {
            self.concurrent = Some((limit, remaining));
        }
    }

    fn tighten(slot: &mut Option<(u64, u64, u64)>, limit: u64, used: u64, reset: u64) {
        let remaining = limit.saturating_sub(used);
        if slot.is_none_or(|(_, r, _)| remaining < r) {
            *slot = Some((limit, remaining, reset));
        }
    }
}

/// A request that a limit refused: its answer, and the headers it carries.
#[derive(Debug)]
pub struct Refused {
    pub error: Box<ApiError>,
    /// Boxed: a refusal is the rare answer, and the headers are over a hundred bytes.
    pub headers: Box<RateHeaders>,
}

/// Counts for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub rate_limited: AtomicU64,
    pub budget_exceeded: AtomicU64,
    /// Shared counters out of reach (served under `LIMITS_FAIL_OPEN=true`, else 503).
    pub store_errors: AtomicU64,
}

/// The limits of the gateway: the current rules and the counters that outlive them.
#[derive(Default)]
pub struct Limiter {
    rules: ArcSwapOption<Rules>,
    /// The shared counters, kept while `REDIS_URL` and the prefix stay the same.
    shared: ArcSwapOption<shared::Shared>,
    /// Local counters by limit id, kept across reloads and key changes.
    buckets: papaya::HashMap<String, Arc<Bucket>>,
    pub counters: Arc<Counters>,
}

/// The current minute and the seconds left in it.
fn minute(now: u64) -> (u64, u64) {
    (now / 60, 60 - now % 60)
}

impl Limiter {
    /// The rules, when any limit exists: the request path's one load and one branch.
    pub fn active(&self) -> Option<Arc<Rules>> {
        let g = self.rules.load();
        g.as_ref().map(Arc::clone)
    }

    /// The Redis connection shared counters (and shared steering) use, when `REDIS_URL` is set.
    pub fn shared(&self) -> Option<Arc<shared::Shared>> {
        self.shared.load_full()
    }

    /// Whether any limit exists (for the request path's branch).
    pub fn is_active(&self) -> bool {
        self.rules.load().is_some()
    }

    /// Rebuilds the rules from the config's limits and the keys' own. Off the request path.
    pub fn configure(&self, config: &LimitsConfig, keys: &KeyTable) {
        let buckets = self.buckets.pin();
        let mut used = std::collections::HashSet::new();
        let mut compile = |id: String, scope: String, spec: &LimitSpec| {
            let bucket = buckets
                .get_or_insert_with(id.clone(), Default::default)
                .clone();
            used.insert(id.clone());
            Arc::new(Limit {
                id,
                scope,
                rpm: spec.rpm,
                tpm: spec.tpm,
                max_concurrent: spec.max_concurrent,
                budget: spec
                    .budget
                    .as_ref()
                    .map(|b| ((b.usd * 1e6).round() as u64, b.period)),
                bucket,
            })
        };
        let mut rules = Rules {
            fail_open: config.fail_open,
            default_max_tokens: config.default_max_tokens,
            shared: self.shared_for(config),
            ..Rules::default()
        };
        for (i, (matcher, spec)) in config.rules.iter().enumerate() {
            match matcher {
                Matcher::Key(k) => {
                    let l = compile(format!("cfg:{i}:key:{k}"), format!("key {k:?}"), spec);
                    rules.by_key.entry(k.clone()).or_default().push(l);
                }
                Matcher::UserPath(p) => {
                    let l = compile(format!("cfg:{i}:path:{p}"), format!("user path {p}"), spec);
                    rules.by_user_path.push((p.clone(), l));
                }
                Matcher::VirtualModel(v) => {
                    let l = compile(
                        format!("cfg:{i}:vm:{v}"),
                        format!("virtual model {v}"),
                        spec,
                    );
                    rules.by_virtual_model.entry(v.clone()).or_default().push(l);
                }
            }
        }
        for key in &keys.keys {
            for (i, spec) in key.limits.iter().enumerate() {
                let l = compile(
                    format!("key:{}:{i}:{}", key.name, key.created_at),
                    format!("key {:?}", key.name),
                    spec,
                );
                rules.by_key.entry(key.name.clone()).or_default().push(l);
            }
        }
        let any = !rules.by_key.is_empty()
            || !rules.by_virtual_model.is_empty()
            || !rules.by_user_path.is_empty();
        // Counters of limits that are gone are dropped; requests holding them finish on them.
        let stale: Vec<String> = buckets
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        for k in stale {
            buckets.remove(&k);
        }
        self.rules.store(any.then(|| Arc::new(rules)));
    }

    /// The shared counters for `config`: the current ones when their settings did not change.
    fn shared_for(&self, config: &LimitsConfig) -> Option<Arc<shared::Shared>> {
        let Some(settings) = &config.redis else {
            self.shared.store(None);
            return None;
        };
        if let Some(cur) = self.shared.load_full() {
            if cur.settings == *settings {
                return Some(cur);
            }
        }
        match shared::Shared::new(settings.clone()) {
            Ok(s) => {
                let s = Arc::new(s);
                self.shared.store(Some(s.clone()));
                Some(s)
            }
            Err(e) => {
                // `REDIS_URL` was checked at load; a client that still cannot be made is
                // treated as Redis being down.
                log::error!("{e}");
                self.shared.store(None);
                None
            }
        }
    }

    /// Reserves `est` under `limits`, on the shared counters when there are any. Ok(None): the
    /// shared counters are out of reach and `LIMITS_FAIL_OPEN` lets the request through
    /// unlimited (counted in `/metrics`).
    pub async fn reserve(
        &self,
        rules: &Rules,
        limits: Matched,
        est: Estimate,
        now: u64,
    ) -> Result<Option<Reservation>, Refused> {
        let Some(sh) = &rules.shared else {
            return self.reserve_local(limits, est, now).map(Some);
        };
        match sh.reserve(&limits, est, now).await {
            Ok(shared::Reserved::Held(held, headers)) => Ok(Some(Reservation {
                limits,
                est,
                at: now,
                settled: false,
                shared: Some(held),
                headers,
            })),
            Ok(shared::Reserved::Refused(i, why, headers)) => Err(Refused {
                error: Box::new(self.refusal(&limits[i], why, now)),
                headers: Box::new(headers),
            }),
            Err(e) => {
                let n = self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
                // The first failure and then one in a thousand: a Redis that is down must not
                // flood the log.
                if n % 1000 == 0 {
                    log::warn!(
                        "{e}; {}",
                        if rules.fail_open {
                            "serving without limits (LIMITS_FAIL_OPEN=true)"
                        } else {
                            "refusing limited requests with 503 (LIMITS_FAIL_OPEN=false)"
                        }
                    );
                }
                if rules.fail_open {
                    return Ok(None);
                }
                let mut error = ApiError::new(
                    503,
                    "service_unavailable",
                    "limits_unavailable",
                    "the shared rate-limit counters are out of reach; retry shortly",
                );
                error.retry_after_s = Some(1);
                Err(Refused {
                    error: Box::new(error),
                    headers: Box::default(),
                })
            }
        }
    }

    /// Reserves `est` under `limits` on this gateway's counters, at `now` (unix seconds).
    pub fn reserve_local(
        &self,
        limits: Matched,
        est: Estimate,
        now: u64,
    ) -> Result<Reservation, Refused> {
        let mut headers = RateHeaders::default();
        for (i, l) in limits.iter().enumerate() {
            if let Err(why) = take_one(l, est, now) {
                for done in &limits[..i] {
                    give_back(done, est, now, true);
                }
                let err = self.refusal(l, why, now);
                fill_headers(&mut headers, &limits, now);
                return Err(Refused {
                    error: Box::new(err),
                    headers: Box::new(headers),
                });
            }
        }
        fill_headers(&mut headers, &limits, now);
        Ok(Reservation {
            limits,
            est,
            at: now,
            settled: false,
            shared: None,
            headers,
        })
    }

    /// The 429 for a refusal by `l`, counted.
    pub fn refusal(&self, l: &Limit, why: Refusal, now: u64) -> ApiError {
        let (_, min_left) = minute(now);
        let (code, message, retry) = match why {
            Refusal::Requests => (
                "rate_limited",
                format!(
                    "rate limit of {}: {} requests per minute reached",
                    l.scope,
                    l.rpm.unwrap_or(0)
                ),
                min_left,
            ),
            Refusal::Tokens => (
                "rate_limited",
                format!(
                    "rate limit of {}: {} tokens per minute reached",
                    l.scope,
                    l.tpm.unwrap_or(0)
                ),
                min_left,
            ),
            Refusal::Concurrency => (
                "rate_limited",
                format!(
                    "rate limit of {}: {} requests in flight at once",
                    l.scope,
                    l.max_concurrent.unwrap_or(0)
                ),
                1,
            ),
            Refusal::Budget => {
                let (micro, period) = l.budget.unwrap_or((0, Period::Day));
                (
                    "budget_exceeded",
                    format!(
                        "budget of {}: ${:.2} per {} spent",
                        l.scope,
                        micro as f64 / 1e6,
                        period.name()
                    ),
                    period.at(now).1,
                )
            }
        };
        let counter = if code == "budget_exceeded" {
            &self.counters.budget_exceeded
        } else {
            &self.counters.rate_limited
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut e = ApiError::new(
            429,
            "rate_limit_error",
            code,
            format!("{message}; retry in {retry} s"),
        );
        e.retry_after_s = Some(retry.max(1));
        e
    }

    /// `/metrics` lines.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let c = &self.counters;
        let _ = write!(
            out,
            "# HELP modelgate_limits_refused_total Requests refused by a rate limit or budget.\n\
             # TYPE modelgate_limits_refused_total counter\n\
             modelgate_limits_refused_total{{code=\"rate_limited\"}} {}\n\
             modelgate_limits_refused_total{{code=\"budget_exceeded\"}} {}\n\
             # HELP modelgate_limits_store_errors_total Shared limit counters (Redis) out of reach.\n\
             # TYPE modelgate_limits_store_errors_total counter\n\
             modelgate_limits_store_errors_total {}\n",
            c.rate_limited.load(Ordering::Relaxed),
            c.budget_exceeded.load(Ordering::Relaxed),
            c.store_errors.load(Ordering::Relaxed),
        );
    }
}

/// Takes one limit's share of a request; on refusal nothing of this limit is held.
fn take_one(l: &Limit, est: Estimate, now: u64) -> Result<(), Refusal> {
    let (min, _) = minute(now);
    l.bucket.enter(l.max_concurrent)?;
    if let Err(r) = l.bucket.request(min, l.rpm) {
        l.bucket.leave();
        return Err(r);
    }
    if let Err(r) = l.bucket.take_tokens(min, est.tokens, l.tpm) {
        l.bucket.unrequest(min);
        l.bucket.leave();
        return Err(r);
    }
    if let Some((micro, period)) = l.budget {
        if let Err(r) = l.bucket.spend(period.at(now).0, est.micro_usd, Some(micro)) {
            l.bucket.adjust_tokens(min, -(est.tokens as i64));
            l.bucket.unrequest(min);
            l.bucket.leave();
            return Err(r);
        }
    }
    Ok(())
}

/// Gives a limit's share back: the estimate (and, for a request another limit refused, its
/// request count), and its concurrency slot.
fn give_back(l: &Limit, est: Estimate, at: u64, unrequest: bool) {
    let (min, _) = minute(at);
    if unrequest {
        l.bucket.unrequest(min);
    }
    l.bucket.adjust_tokens(min, -(est.tokens as i64));
    if let Some((_, period)) = l.budget {
        l.bucket
            .adjust_spend(period.at(at).0, -(est.micro_usd as i64));
    }
    l.bucket.leave();
}

/// Micro-USD as dollars: at least two decimals, no trailing zeros past them (`1.00`, `0.123456`).
fn usd(micro: u64) -> String {
    let mut s = format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000);
    while s.len() > s.find('.').map_or(0, |d| d + 3) && s.ends_with('0') {
        s.pop();
    }
    s
}

fn fill_headers(h: &mut RateHeaders, limits: &[Arc<Limit>], now: u64) {
    let (min, left) = minute(now);
    for l in limits {
        if let Some((micro, period)) = l.budget {
            let (p, p_left) = period.at(now);
            RateHeaders::tighten(&mut h.budget, micro, l.bucket.spent(p), p_left);
        }
        if let Some(max) = l.max_concurrent {
            h.tighten_concurrent(max, l.bucket.in_flight());
        }
        if let Some(rpm) = l.rpm {
            RateHeaders::tighten(&mut h.requests, rpm, l.bucket.requests(min), left);
        }
        if let Some(tpm) = l.tpm {
            RateHeaders::tighten(&mut h.tokens, tpm, l.bucket.tokens(min), left);
        }
    }
}

/// What a request holds under its limits until it settles or is dropped.
#[derive(Debug)]
pub struct Reservation {
    limits: Matched,
    est: Estimate,
    /// Unix seconds when reserved: the windows its estimate went into.
    at: u64,
    settled: bool,
    /// Set when the counters are shared: settling goes to Redis.
    shared: Option<shared::Held>,
    pub headers: RateHeaders,
}

impl Reservation {
    /// The estimate this reservation holds.
    pub fn estimate(&self) -> Estimate {
        self.est
    }

    /// Replaces the estimate with what the request used, and frees its concurrency slots.
    pub fn settle(mut self, used: Estimate) {
        self.finish(used);
    }

    fn finish(&mut self, used: Estimate) {
        if self.settled {
            return;
        }
        self.settled = true;
        if let Some(held) = self.shared.take() {
            held.settle(self.est, used);
            return;
        }
        let (min, _) = minute(self.at);
        let dt = used.tokens as i64 - self.est.tokens as i64;
        let dc = used.micro_usd as i64 - self.est.micro_usd as i64;
        for l in &self.limits {
            l.bucket.adjust_tokens(min, dt);
            if let Some((_, period)) = l.budget {
                l.bucket.adjust_spend(period.at(self.at).0, dc);
            }
            l.bucket.leave();
        }
    }
}

impl Drop for Reservation {
    /// A request that never settled (it failed, or its client left) gives its estimate back.
    fn drop(&mut self) {
        self.finish(Estimate::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(yaml: &str) -> Limiter {
        let specs: Vec<LimitSpec> = serde_yaml::from_str(yaml).unwrap();
        let config = LimitsConfig {
            rules: specs
                .into_iter()
                .map(|s| (s.check_in_config().unwrap(), s))
                .collect(),
            fail_open: true,
            default_max_tokens: 100,
            redis: None,
        };
        let l = Limiter::default();
        l.configure(&config, &KeyTable::default());
        l
    }

    fn who<'a>(path: Option<&'a UserPath>, vm: Option<&'a str>) -> Who<'a> {
        Who {
            key: None,
            user_path: path,
            virtual_model: vm,
        }
    }

    #[test]
    fn headers_name_only_the_limited_dimensions() {
        let h = RateHeaders {
            requests: Some((10, 4, 12)),
            tokens: None,
            budget: Some((1_000_000, 123_450, 3_600)),
            concurrent: Some((4, 3)),
        };
        let pairs: Vec<(&str, String)> = h.pairs().into_iter().collect();
        assert_eq!(
            pairs,
            [
                ("x-ratelimit-limit-requests", "10".to_string()),
                ("x-ratelimit-remaining-requests", "4".to_string()),
                ("x-ratelimit-reset-requests", "12s".to_string()),
                ("x-ratelimit-limit-budget", "1.00".to_string()),
                ("x-ratelimit-remaining-budget", "0.12345".to_string()),
                ("x-ratelimit-reset-budget", "3600s".to_string()),
                ("x-ratelimit-limit-concurrent", "4".to_string()),
                ("x-ratelimit-remaining-concurrent", "3".to_string()),
            ]
        );
        assert_eq!(usd(0), "0.00");
        assert_eq!(usd(2_500_000), "2.50");
        assert_eq!(usd(1), "0.000001");
        let mut slot = Some((10, 4, 12));
        RateHeaders::tighten(&mut slot, 100, 99, 30);
        assert_eq!(slot, Some((100, 1, 30)));
        RateHeaders::tighten(&mut slot, 5, 0, 30);
        assert_eq!(slot, Some((100, 1, 30)));
    }

    #[test]
    fn nothing_configured_means_no_rules() {
        assert!(limiter("[]").active().is_none());
    }

    #[test]
    fn requests_per_minute_are_refused_past_the_limit_with_headers() {
        let l = limiter("[{match: {virtual_model: smart}, rpm: 2}]");
        let rules = l.active().unwrap();
        let m = || rules.matching(&who(None, Some("smart")));
        assert!(rules.matching(&who(None, Some("other"))).is_empty());
        let est = Estimate {
            tokens: 10,
            micro_usd: 0,
        };
        let now = 6_000;
        let a = l.reserve_local(m(), est, now).unwrap();
        assert_eq!(a.headers.requests, Some((2, 1, 60)));
        let _b = l.reserve_local(m(), est, now + 1).unwrap();
        let refused = l.reserve_local(m(), est, now + 2).unwrap_err();
        assert_eq!(
            (refused.error.status, refused.error.code),
            (429, "rate_limited")
        );
        assert_eq!(refused.error.retry_after_s, Some(58));
        assert_eq!(refused.headers.requests, Some((2, 0, 58)));
        // The next minute starts over.
        assert!(l.reserve_local(m(), est, now + 60).is_ok());
    }

    #[test]
    fn a_dropped_reservation_gives_back_its_tokens_and_slot() {
        let l = limiter("[{match: {user_path: /team}, tpm: 100, max_concurrent: 1}]");
        let rules = l.active().unwrap();
        let p = UserPath::parse("/team/a").unwrap();
        let est = Estimate {
            tokens: 150,
            micro_usd: 0,
        };
        let r = l
            .reserve_local(rules.matching(&who(Some(&p), None)), est, 60)
            .unwrap();
        let e = l
            .reserve_local(rules.matching(&who(Some(&p), None)), est, 60)
            .unwrap_err();
        assert!(e.error.message.contains("in flight"), "{}", e.error.message);
        drop(r);
        // Slot and tokens are back: the next request passes.
        let r = l
            .reserve_local(rules.matching(&who(Some(&p), None)), est, 61)
            .unwrap();
        r.settle(Estimate {
            tokens: 20,
            micro_usd: 0,
        });
        let r = l
            .reserve_local(rules.matching(&who(Some(&p), None)), est, 62)
            .unwrap();
        assert_eq!(r.headers.tokens, Some((100, 0, 58)));
    }

    #[test]
    fn a_budget_is_spent_by_settled_usage_and_then_refused() {
        let l = limiter("[{match: {user_path: /}, budget: {usd: 1, period: day}}]");
        let rules = l.active().unwrap();
        let est = Estimate {
            tokens: 1,
            micro_usd: 400_000,
        };
        let now = 86_400 * 10;
        for _ in 0..2 {
            l.reserve_local(rules.matching(&who(None, None)), est, now)
                .unwrap()
                .settle(Estimate {
                    tokens: 1,
                    micro_usd: 500_000,
                });
        }
        let e = l
            .reserve_local(rules.matching(&who(None, None)), est, now)
            .unwrap_err();
        assert_eq!(e.error.code, "budget_exceeded");
        assert_eq!(e.error.retry_after_s, Some(86_400));
        assert!(
            e.error.message.contains("$1.00 per day"),
            "{}",
            e.error.message
        );
        assert!(l
            .reserve_local(rules.matching(&who(None, None)), est, now + 86_400)
            .is_ok());
    }

    #[test]
    fn a_refusal_by_one_limit_releases_what_the_others_took() {
        let l = limiter(
            "[{match: {virtual_model: v}, rpm: 10}, {match: {virtual_model: v}, max_concurrent: 1}]",
        );
        let rules = l.active().unwrap();
        let est = Estimate::default();
        let _held = l
            .reserve_local(rules.matching(&who(None, Some("v"))), est, 0)
            .unwrap();
        assert!(l
            .reserve_local(rules.matching(&who(None, Some("v"))), est, 0)
            .is_err());
        let rpm = &rules.by_virtual_model["v"][0];
        assert_eq!(rpm.bucket.requests(0), 1);
    }

    #[test]
    fn counters_survive_a_reload() {
        let l = limiter("[{match: {virtual_model: v}, rpm: 1}]");
        let rules = l.active().unwrap();
        let _r = l.reserve_local(
            rules.matching(&who(None, Some("v"))),
            Estimate::default(),
            0,
        );
        let config = LimitsConfig {
            rules: vec![(
                Matcher::VirtualModel("v".into()),
                serde_yaml::from_str("{match: {virtual_model: v}, rpm: 1}").unwrap(),
            )],
            fail_open: true,
            default_max_tokens: 1,
            redis: None,
        };
        l.configure(&config, &KeyTable::default());
        let rules = l.active().unwrap();
        assert!(l
            .reserve_local(
                rules.matching(&who(None, Some("v"))),
                Estimate::default(),
                1
            )
            .is_err());
    }
}
