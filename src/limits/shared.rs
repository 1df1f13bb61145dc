//! Counters shared by every gateway through Redis (`REDIS_URL`), and the connection that
//! rate-limit steering shares its state over too (`health::steer_sync`): a reservation and a
//! settlement are each one Lua script, so a request's check and its counting across all its
//! limits happen atomically in Redis, whichever gateway runs it. Keys live under
//! `REDIS_KEY_PREFIX` (default `modelgate:`): `{prefix}{limit}:r:{minute}` (requests),
//! `:t:{minute}` (tokens), `:c` (in flight), `:b:{period}` (micro-USD spent); each expires on
//! its own once its window is over.
//!
//! One multiplexed connection, opened on first use and again after a failure (at most once a
//! second, so a Redis that is down costs a request nothing but a failed check). Every call is
//! bounded by a timeout. Nothing here decides what a failure means: the limiter does
//! (`LIMITS_FAIL_OPEN`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;

use super::config::RedisSettings;
use super::local::Refusal;
use super::{Estimate, Limit, RateHeaders};

/// Bounds one script call (and the connection it may open first).
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// How long after a failed connection the next attempt waits.
const RETRY_AFTER_MS: u64 = 1000;

/// Checks every limit first, then counts in all of them: the request and its estimate go in
/// together or not at all. ARGV: limits, tokens, micro-USD, then per limit rpm, tpm,
/// max_concurrent, budget (-1: none) and the seconds the budget period has left.
/// Returns {-1, 0, requests_1, tokens_1, spent_1, in_flight_1, ...} (spent 0 without a budget)
/// or {refusing limit (0-based), what refused}.
const RESERVE: &str = r"
local n = tonumber(ARGV[1])
local tok = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
for i = 0, n - 1 do
  local a = 4 + i * 5
  local k = i * 4
  local rpm, tpm, conc, bud = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  if conc >= 0 and tonumber(redis.call('GET', KEYS[k + 3]) or '0') >= conc then return {i, 1} end
  if rpm >= 0 and tonumber(redis.call('GET', KEYS[k + 1]) or '0') >= rpm then return {i, 2} end
  if tpm >= 0 and tonumber(redis.call('GET', KEYS[k + 2]) or '0') >= tpm then return {i, 3} end
  if bud >= 0 and tonumber(redis.call('GET', KEYS[k + 4]) or '0') >= bud then return {i, 4} end
end
local out = {-1, 0}
for i = 0, n - 1 do
  local a = 4 + i * 5
  local k = i * 4
  local r = redis.call('INCR', KEYS[k + 1])
  redis.call('EXPIRE', KEYS[k + 1], 120)
  local t = redis.call('INCRBY', KEYS[k + 2], tok)
  redis.call('EXPIRE', KEYS[k + 2], 120)
  local c = redis.call('INCR', KEYS[k + 3])
  redis.call('EXPIRE', KEYS[k + 3], 3600)
  local s = 0
  if tonumber(ARGV[a + 3]) >= 0 then
    s = redis.call('INCRBY', KEYS[k + 4], cost)
    redis.call('EXPIRE', KEYS[k + 4], tonumber(ARGV[a + 4]) + 60)
  end
  table.insert(out, r)
  table.insert(out, t)
  table.insert(out, s)
  table.insert(out, c)
end
return out
";

/// Replaces the estimate with the usage and frees the slots. ARGV: limits, token delta,
/// micro-USD delta, then per limit whether it has a budget (1/0).
const SETTLE: &str = r"
local n = tonumber(ARGV[1])
local dt = tonumber(ARGV[2])
local dc = tonumber(ARGV[3])
for i = 0, n - 1 do
  local k = i * 4
  if dt ~= 0 and redis.call('EXISTS', KEYS[k + 2]) == 1 then redis.call('INCRBY', KEYS[k + 2], dt) end
  if dc ~= 0 and ARGV[4 + i] == '1' and redis.call('EXISTS', KEYS[k + 4]) == 1 then
    redis.call('INCRBY', KEYS[k + 4], dc)
  end
  if redis.call('DECR', KEYS[k + 3]) < 0 then redis.call('SET', KEYS[k + 3], 0) end
end
return 1
";

/// A Redis URL without its password, for messages.
pub fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("Redis at {0}: {1}")]
    Redis(String, String),
    #[error("Redis at {0}: no answer within {1} ms")]
    Timeout(String, u128),
    #[error("Redis at {0}: not retried until a second after the last failure")]
    Resting(String),
}

/// The shared counters of one Redis.
pub struct Shared {
    pub settings: RedisSettings,
    client: redis::Client,
    conn: ArcSwapOption<MultiplexedConnection>,
    /// Monotonic ms before which no new connection is tried.
    rest_until: AtomicU64,
    reserve: redis::Script,
    settle: redis::Script,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("url", &shown(&self.settings.url))
            .field("prefix", &self.settings.prefix)
            .finish()
    }
}

/// What a request holds in Redis until it settles.
#[derive(Debug)]
pub struct Held {
    shared: Arc<Shared>,
    keys: Vec<String>,
    budgets: Vec<bool>,
}

/// What a shared reservation came to.
pub enum Reserved {
    Held(Held, RateHeaders),
    /// Limit `usize` of the request's list refused it.
    Refused(usize, Refusal, RateHeaders),
}

impl Shared {
    pub fn new(settings: RedisSettings) -> Result<Shared, SharedError> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| SharedError::Redis(shown(&settings.url), e.to_string()))?;
        Ok(Shared {
            settings,
            client,
            conn: ArcSwapOption::empty(),
            rest_until: AtomicU64::new(0),
            reserve: redis::Script::new(RESERVE),
            settle: redis::Script::new(SETTLE),
        })
    }

    fn where_(&self) -> String {
        shown(&self.settings.url)
    }

    async fn connection(&self) -> Result<MultiplexedConnection, SharedError> {
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        if crate::mono_clock::now_ms() < self.rest_until.load(Ordering::Relaxed) {
            return Err(SharedError::Resting(self.where_()));
        }
        let opened =
            tokio::time::timeout(CALL_TIMEOUT, self.client.get_multiplexed_async_connection())
                .await;
        match opened {
            Ok(Ok(c)) => {
                self.conn.store(Some(Arc::new(c.clone())));
                Ok(c)
            }
            Ok(Err(e)) => {
                self.rest();
                Err(SharedError::Redis(self.where_(), e.to_string()))
            }
            Err(_) => {
                self.rest();
                Err(SharedError::Timeout(
                    self.where_(),
                    CALL_TIMEOUT.as_millis(),
                ))
            }
        }
    }

    fn rest(&self) {
        self.conn.store(None);
        self.rest_until.store(
            crate::mono_clock::now_ms() + RETRY_AFTER_MS,
            Ordering::Relaxed,
        );
    }

    /// Runs a script on the connection (opened first if needed), within the call timeout.
    pub async fn call<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, SharedError> {
        let mut c = self.connection().await?;
        match tokio::time::timeout(CALL_TIMEOUT, inv.invoke_async(&mut c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.rest();
                Err(SharedError::Redis(self.where_(), e.to_string()))
            }
            Err(_) => {
                self.rest();
                Err(SharedError::Timeout(
                    self.where_(),
                    CALL_TIMEOUT.as_millis(),
                ))
            }
        }
    }

    fn keys(&self, limits: &[Arc<Limit>], now: u64) -> Vec<String> {
        let minute = now / 60;
        let p = &self.settings.prefix;
        let mut keys = Vec::with_capacity(limits.len() * 4);
        for l in limits {
            let period = l.budget.map_or(0, |(_, per)| per.at(now).0);
            keys.push(format!("{p}{}:r:{minute}", l.id));
            keys.push(format!("{p}{}:t:{minute}", l.id));
            keys.push(format!("{p}{}:c", l.id));
            keys.push(format!("{p}{}:b:{period}", l.id));
        }
        keys
    }

    /// Reserves `est` under every limit at once, or learns which refused.
    pub async fn reserve(
        self: &Arc<Self>,
        limits: &[Arc<Limit>],
        est: Estimate,
        now: u64,
    ) -> Result<Reserved, SharedError> {
        let keys = self.keys(limits, now);
        let mut inv = self.reserve.prepare_invoke();
        for k in &keys {
            inv.key(k);
        }
        inv.arg(limits.len()).arg(est.tokens).arg(est.micro_usd);
        let opt = |v: Option<u64>| v.map_or(-1i64, |n| n.min(i64::MAX as u64) as i64);
        for l in limits {
            inv.arg(opt(l.rpm))
                .arg(opt(l.tpm))
                .arg(opt(l.max_concurrent))
                .arg(opt(l.budget.map(|(m, _)| m)))
                .arg(l.budget.map_or(0, |(_, p)| p.at(now).1));
        }
        let out: Vec<i64> = self.call(&inv).await?;
        let left = 60 - now % 60;
        let mut headers = RateHeaders::default();
        match out.first().copied() {
            Some(-1) => {
                for (i, l) in limits.iter().enumerate() {
                    let used = |j: usize| out.get(2 + 4 * i + j).map_or(0, |v| (*v).max(0) as u64);
                    if let Some(rpm) = l.rpm {
                        RateHeaders::tighten(&mut headers.requests, rpm, used(0), left);
                    }
                    if let Some(tpm) = l.tpm {
                        RateHeaders::tighten(&mut headers.tokens, tpm, used(1), left);
                    }
                    if let Some((micro, period)) = l.budget {
                        let p_left = period.at(now).1;
                        RateHeaders::tighten(&mut headers.budget, micro, used(2), p_left);
                    }
                    if let Some(max) = l.max_concurrent {
                        headers.tighten_concurrent(max, used(3));
                    }
                }
                let held = Held {
                    shared: self.clone(),
                    keys,
                    budgets: limits.iter().map(|l| l.budget.is_some()).collect(),
                };
                Ok(Reserved::Held(held, headers))
            }
            Some(i) if i >= 0 && (i as usize) < limits.len() => {
                let why = match out.get(1).copied() {
                    Some(1) => Refusal::Concurrency,
                    Some(2) => Refusal::Requests,
                    Some(3) => Refusal::Tokens,
                    _ => Refusal::Budget,
                };
                let l = &limits[i as usize];
                match why {
                    Refusal::Requests => headers.requests = l.rpm.map(|r| (r, 0, left)),
                    Refusal::Tokens => headers.tokens = l.tpm.map(|t| (t, 0, left)),
                    Refusal::Budget => {
                        headers.budget =
                            l.budget.map(|(micro, period)| (micro, 0, period.at(now).1))
                    }
                    Refusal::Concurrency => headers.concurrent = l.max_concurrent.map(|m| (m, 0)),
                }
                Ok(Reserved::Refused(i as usize, why, headers))
            }
            _ => Err(SharedError::Redis(
                self.where_(),
                format!("unexpected answer from the reserve script: {out:?}"),
            )),
        }
    }
}

impl Held {
    /// Settles in the background: the request's answer never waits for Redis.
    pub fn settle(self, est: Estimate, used: Estimate) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let mut inv = self.shared.settle.prepare_invoke();
            for k in &self.keys {
                inv.key(k);
            }
            inv.arg(self.budgets.len())
                .arg(used.tokens as i64 - est.tokens as i64)
                .arg(used.micro_usd as i64 - est.micro_usd as i64);
            for b in &self.budgets {
                inv.arg(if *b { "1" } else { "0" });
            }
            if let Err(e) = self.shared.call::<i64>(&inv).await {
                log::warn!("{e}; a request's usage was not settled");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(shown("redis://:pw@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(shown("redis://h:6379"), "redis://h:6379");
    }
}
