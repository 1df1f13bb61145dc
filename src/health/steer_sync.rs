//! Rate-limit steering shared by every gateway through Redis (`REDIS_URL`): what one gateway
//! learns about a target (a 429's `Retry-After`, a provider's remaining share and its reset)
//! steers all of them.
//!
//! A background task runs one `round` every `INTERVAL`: a single Lua script call that merges the
//! targets this gateway observed since the last round into their keys (the later end of a 429's
//! wait, the newer reading; each key expires when nothing in it holds any more) and, when a
//! version key moved since this gateway's last read (any gateway wrote), answers every tracked
//! target's shared state, which is merged into the local atomics (`steer::Steer`). Only what
//! steers is marked for publishing (`Steer::observe`), so a fleet where nothing is rate limited
//! costs one small script call per gateway per round. The request path never waits for Redis: it
//! reads only the local state, so a state reaches another gateway within two rounds. Keys are
//! `{REDIS_KEY_PREFIX}steer:{provider/model}` and `...steer:version`, beside the limits'
//! counters, over the same connection (`limits::shared`).
//!
//! Redis out of reach: a round fails (bounded by the connection's timeout), is counted in
//! `/metrics`, and what was not published is published by the first round that succeeds; each
//! gateway steers on its own observations meanwhile. Requests never fail because of it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::steer::Exported;
use super::TargetMap;
use crate::limits::shared::{Shared, SharedError};

/// Time between two rounds.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// KEYS[1]: the version key (counts the rounds that wrote anything); KEYS[1 + i]: one per
/// tracked target. ARGV[1]: now (Unix ms); ARGV[2]: the version this gateway last read ("" to
/// read in any case); ARGV[2 + i]: the state to merge into KEYS[1 + i] ("limited_until
/// fraction_ppm fraction_until fraction_at", Unix ms) or "" for none.
/// Returns {version} when nothing changed since the version given, else {version, the state
/// of every target (nil: none)}.
const ROUND: &str = r"
local now = tonumber(ARGV[1])
local pat = '^(%d+) (%d+) (%d+) (%d+)$'
local wrote = false
for i = 2, #KEYS do
  local nl, nf, nfu, nat = string.match(ARGV[i + 1] or '', pat)
  if nl then
    local l, f, fu, at = 0, 0, 0, 0
    local cur = redis.call('GET', KEYS[i])
    if cur then
      local a, b, c, d = string.match(cur, pat)
      if a then l, f, fu, at = tonumber(a), tonumber(b), tonumber(c), tonumber(d) end
    end
    nl, nf, nfu, nat = tonumber(nl), tonumber(nf), tonumber(nfu), tonumber(nat)
    if nl > l then l = nl end
    if nfu > now and (nat >= at or fu <= now) then f, fu, at = nf, nfu, nat end
    local last = math.max(l, fu)
    if last > now then
      redis.call('SET', KEYS[i], string.format('%d %d %d %d', l, f, fu, at), 'PX', last - now)
      wrote = true
    end
  end
end
local v = redis.call('GET', KEYS[1]) or '0'
if wrote then
  v = tostring(redis.call('INCR', KEYS[1]))
  redis.call('EXPIRE', KEYS[1], 86400)
end
if v == ARGV[2] then return {v} end
local out = {v}
for i = 2, #KEYS do out[i] = redis.call('GET', KEYS[i]) or false end
return out
";

/// Every this many rounds (10 s) a round reads every target's state whatever the version says
/// (a Redis that restarted may count versions again from 0).
const FULL_READ_EVERY: u64 = 40;

/// The shared steering of this gateway: the round's script, what it last read, and its counts
/// for `/metrics`.
#[derive(Debug)]
pub struct SteerSync {
    script: redis::Script,
    /// Target states this gateway published.
    pub published: AtomicU64,
    /// Rounds that read every target's state (something changed since the last read).
    pub reads: AtomicU64,
    /// Rounds that failed: Redis out of reach.
    pub errors: AtomicU64,
    /// The version last read, plus one (0: none, read in any case).
    seen: AtomicU64,
    /// The generation of the target map last read (a new map is read whole).
    seen_generation: AtomicU64,
    rounds: AtomicU64,
    /// Whether the last round failed (its failure is logged once, as is the recovery).
    failing: AtomicBool,
}

impl Default for SteerSync {
    fn default() -> Self {
        SteerSync {
            script: redis::Script::new(ROUND),
            published: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            seen_generation: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        }
    }
}

/// A state as it is kept in Redis.
pub fn encode(e: &Exported) -> String {
    format!(
        "{} {} {} {}",
        e.limited_until, e.fraction_ppm, e.fraction_until, e.fraction_at
    )
}

/// A state read from Redis; `None` for anything else.
pub fn decode(v: &str) -> Option<Exported> {
    let mut it = v.split(' ').map(|n| n.parse::<u64>().ok());
    let e = Exported {
        limited_until: it.next()??,
        fraction_ppm: it.next()??,
        fraction_until: it.next()??,
        fraction_at: it.next()??,
    };
    it.next().is_none().then_some(e)
}

impl SteerSync {
    /// One round over `targets` (of map generation `generation`): publishes what this gateway
    /// observed, folds in what the others did. Failures are counted and logged (once per
    /// outage), never returned.
    pub async fn share(&self, targets: &TargetMap, generation: u64, shared: &Shared) {
        if targets.is_empty() {
            return;
        }
        match self.round(targets, generation, shared).await {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    log::info!("rate-limit steering is shared through Redis again");
                }
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.seen.store(0, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    log::warn!(
                        "{e}; rate-limit steering goes on with this gateway's own observations"
                    );
                }
            }
        }
    }

    async fn round(
        &self,
        targets: &TargetMap,
        generation: u64,
        shared: &Shared,
    ) -> Result<(), SharedError> {
        let prefix = &shared.settings.prefix;
        let now = crate::mono_clock::now_ms();
        let now_unix = crate::wall_clock::now_ms();
        let n = self.rounds.fetch_add(1, Ordering::Relaxed);
        let seen = match self.seen.load(Ordering::Relaxed) {
            _ if n % FULL_READ_EVERY == 0
                || generation != self.seen_generation.load(Ordering::Relaxed) =>
            {
                String::new()
            }
            0 => String::new(),
            v => (v - 1).to_string(),
        };
        let mut inv = self.script.prepare_invoke();
        inv.key(format!("{prefix}steer:version"));
        inv.arg(now_unix).arg(seen);
        let mut taken = Vec::new();
        for (name, h) in targets.iter() {
            inv.key(format!("{prefix}steer:{name}"));
            if h.steer.take_dirty() {
                inv.arg(encode(&h.steer.export(now, now_unix)));
                taken.push(h);
            } else {
                inv.arg("");
            }
        }
        let reply: Vec<Option<String>> = match shared.call(&inv).await {
            Ok(v) => v,
            Err(e) => {
                for h in taken {
                    h.steer.mark_dirty();
                }
                return Err(e);
            }
        };
        self.published
            .fetch_add(taken.len() as u64, Ordering::Relaxed);
        let mut reply = reply.into_iter();
        let version = reply
            .next()
            .flatten()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                SharedError::Redis(
                    crate::limits::shared::shown(&shared.settings.url),
                    "the steering script answered no version".to_string(),
                )
            })?;
        if !reply.as_slice().is_empty() {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let now = crate::mono_clock::now_ms();
            let now_unix = crate::wall_clock::now_ms();
            for ((_, h), state) in targets.iter().zip(reply) {
                if let Some(e) = state.as_deref().and_then(decode) {
                    h.steer.merge(&e, now, now_unix);
                }
            }
        }
        self.seen_generation.store(generation, Ordering::Relaxed);
        self.seen
            .store(version.saturating_add(1), Ordering::Relaxed);
        Ok(())
    }

    /// `/metrics` lines.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(
            out,
            "# HELP modelgate_steer_published_total Target steering states published to the other gateways through Redis.\n\
             # TYPE modelgate_steer_published_total counter\n\
             modelgate_steer_published_total {}\n\
             # HELP modelgate_steer_reads_total Steering rounds that read every target's shared state (something changed since the last read).\n\
             # TYPE modelgate_steer_reads_total counter\n\
             modelgate_steer_reads_total {}\n\
             # HELP modelgate_steer_store_errors_total Steering rounds that could not reach Redis (each gateway steered on its own meanwhile).\n\
             # TYPE modelgate_steer_store_errors_total counter\n\
             modelgate_steer_store_errors_total {}\n",
            self.published.load(Ordering::Relaxed),
            self.reads.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::TargetHealth;
    use crate::limits::config::RedisSettings;
    use crate::proxy::rate_limit::Reading;
    use std::sync::Arc;

    /// One simulated gateway routing to one target, `p/a`, with steering threshold 0.6.
    struct Gateway {
        targets: TargetMap,
        sync: SteerSync,
    }

    impl Gateway {
        fn new() -> Gateway {
            let h = Arc::new(TargetHealth::default());
            h.steer.set_share_below(0.6);
            Gateway {
                targets: [("p/a".to_string(), h)].into_iter().collect(),
                sync: SteerSync::default(),
            }
        }

        fn steer(&self) -> &crate::health::steer::Steer {
            &self.targets["p/a"].steer
        }

        async fn round(&self, shared: &Shared) {
            self.sync.share(&self.targets, 1, shared).await;
        }

        fn count(&self, c: &AtomicU64) -> u64 {
            let _ = self;
            c.load(Ordering::Relaxed)
        }
    }

    fn redis(url: &str) -> Shared {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Shared::new(RedisSettings {
            url: url.to_string(),
            prefix: format!("modelgate-test:steer-sync:{}:{nanos}:", std::process::id()),
        })
        .unwrap()
    }

    fn reading(fraction: Option<f64>, retry_after_ms: Option<u64>) -> Reading {
        Reading {
            remaining_fraction: fraction,
            reset_in_ms: Some(60_000),
            retry_after_ms,
        }
    }

    /// Needs the Redis on 127.0.0.1:6379 (as the black-box limit tests do); never skips.
    #[tokio::test]
    async fn gateways_merge_their_observations_through_redis() {
        let shared = redis("redis://127.0.0.1:6379");
        let (one, two, late) = (Gateway::new(), Gateway::new(), Gateway::new());
        let now = crate::mono_clock::now_ms();
        one.steer().observe(&reading(None, Some(30_000)), 429, now);
        two.steer().observe(&reading(Some(0.5), None), 200, now);
        // A low reading taken 5 s before the others, published after them.
        late.steer()
            .observe(&reading(Some(0.3), None), 200, now - 5_000);
        for g in [&one, &two, &late, &one] {
            g.round(&shared).await;
        }
        let now = crate::mono_clock::now_ms();
        for g in [&one, &two, &late] {
            assert_eq!(g.count(&g.sync.errors), 0);
            let s = g.steer().state(now);
            assert!(s.rate_limited, "{s:?}");
            assert!(s.for_ms > 20_000, "{s:?}");
            assert_eq!(s.remaining_fraction, Some(0.5), "{s:?}");
        }
        assert_eq!(one.count(&one.sync.published), 1);
        assert_eq!(two.count(&two.sync.published), 1);
        // `one` read everything twice: first (nothing read yet), then after the others wrote.
        assert_eq!(one.count(&one.sync.reads), 2);
        // Nothing new anywhere: a round publishes nothing and reads nothing.
        one.round(&shared).await;
        assert_eq!(
            (one.count(&one.sync.published), one.count(&one.sync.reads)),
            (1, 2)
        );
        // Plenty left is not shared; the first reading over the threshold after a low one is.
        // (A second later than the 0.5: the test does not wait for the clock to move.)
        two.steer()
            .observe(&reading(Some(0.7), None), 200, now + 1_000);
        two.round(&shared).await;
        one.round(&shared).await;
        assert_eq!(one.count(&one.sync.reads), 3);
        let s = one.steer().state(crate::mono_clock::now_ms());
        assert_eq!(s.remaining_fraction, Some(0.7), "{s:?}");
    }

    #[tokio::test]
    async fn a_round_without_redis_is_counted_and_published_later() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let shared = redis(&format!("redis://127.0.0.1:{port}"));
        let g = Gateway::new();
        let now = crate::mono_clock::now_ms();
        g.steer().observe(&reading(None, Some(30_000)), 429, now);
        g.round(&shared).await;
        assert_eq!(g.count(&g.sync.errors), 1);
        assert_eq!(g.count(&g.sync.published), 0);
        // Steering goes on locally, and the state waits for the next round that reaches Redis.
        assert!(g.steer().state(now).rate_limited);
        assert!(g.steer().take_dirty());
    }

    #[test]
    fn a_state_reads_back_as_written_and_nothing_else_reads() {
        let e = Exported {
            limited_until: 1_764_900_000_123,
            fraction_ppm: 20_000,
            fraction_until: 1_764_900_005_000,
            fraction_at: 1_764_899_999_000,
        };
        assert_eq!(decode(&encode(&e)), Some(e));
        for bad in ["", "1 2 3", "1 2 3 4 5", "1 2 x 4", "-1 2 3 4", "1  2 3 4"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
