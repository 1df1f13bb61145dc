//! Usage: tokens and cost per key, user path, virtual model and served model, kept in the
//! admin store as hourly rows. The request path hands one sample to a bounded queue
//! (`try_send`: a full queue drops the sample and counts it, never waits, and wakes nobody: the
//! writer polls the queue); a writer thread adds
//! samples up per hour and row and writes them in one transaction every
//! `STORE_USAGE_FLUSH_SECONDS` (default 10), so the store sees a write per interval, not per
//! request. A write that fails keeps its rows for the next one.
//!
//! Also the admin route `GET /admin/api/v1/usage`: rows of a time range, grouped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use smol_str::SmolStr;

use crate::api_error::ApiError;
use crate::keys::ManagedKey;
use crate::routing::user_path::UserPath;
use crate::store::{Store, UsageRow};

/// Samples waiting for the writer at most.
const QUEUE: usize = 16_384;
/// Rows held between writes at most (a store away for long drops the newest, counted).
const HELD_ROWS: usize = 100_000;
pub const DEFAULT_FLUSH_SECONDS: u64 = 10;

/// One request's usage.
#[derive(Debug)]
pub struct Sample {
    /// Unix seconds.
    pub at: u64,
    pub key: Option<Arc<ManagedKey>>,
    pub user_path: Option<UserPath>,
    pub virtual_model: Option<SmolStr>,
    pub model: SmolStr,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

/// The request path's end of the queue; inert until `start`.
#[derive(Default)]
pub struct Recorder {
    tx: OnceLock<SyncSender<Sample>>,
    pub dropped: AtomicU64,
}

impl Recorder {
    /// Starts the writer thread for `store`.
    pub fn start(&self, store: Arc<dyn Store>, flush: Duration) {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        if self.tx.set(tx).is_err() {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("modelgate-usage".into())
            .spawn(move || write_loop(&rx, store.as_ref(), flush));
        if let Err(e) = spawned {
            log::error!("usage: the writer thread did not start ({e}); usage is not recorded");
        }
    }

    /// Queues a sample; never blocks.
    pub fn record(&self, sample: Sample) {
        let Some(tx) = self.tx.get() else {
            return;
        };
        match tx.try_send(sample) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn is_started(&self) -> bool {
        self.tx.get().is_some()
    }

    /// `/metrics` lines.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP modelgate_usage_samples_dropped_total Usage samples dropped because the writer's queue was full.\n\
             # TYPE modelgate_usage_samples_dropped_total counter\n",
        );
        out.push_str(&format!(
            "modelgate_usage_samples_dropped_total {}\n",
            self.dropped.load(Ordering::Relaxed)
        ));
    }
}

/// Hour, key, user path, virtual model, model. `SmolStr`s, so that a sample for a row already
/// held (nearly every one) is added up without allocating.
type RowKey = (i64, SmolStr, SmolStr, SmolStr, SmolStr);
type Held = HashMap<RowKey, UsageRow, foldhash::fast::RandomState>;

fn add(held: &mut Held, s: Sample) {
    let hour = (s.at / 3600 * 3600) as i64;
    let key = (
        hour,
        s.key
            .as_ref()
            .map(|k| SmolStr::new(&k.name))
            .unwrap_or_default(),
        s.user_path
            .as_ref()
            .map(UserPath::to_smol)
            .unwrap_or_default(),
        s.virtual_model.unwrap_or_default(),
        s.model,
    );
    if held.len() >= HELD_ROWS && !held.contains_key(&key) {
        log::warn!("usage: {HELD_ROWS} rows wait for the store; a sample was dropped");
        return;
    }
    let row = held.entry(key).or_insert_with_key(|key| UsageRow {
        hour,
        key: key.1.to_string(),
        user_path: key.2.to_string(),
        virtual_model: key.3.to_string(),
        model: key.4.to_string(),
        requests: 0,
        input_tokens: 0,
        output_tokens: 0,
        cost_usd: 0.0,
    });
    row.requests += 1;
    row.input_tokens += s.input_tokens as i64;
    row.output_tokens += s.output_tokens as i64;
    row.cost_usd += s.cost_usd;
}

fn flush(held: &mut Held, store: &dyn Store) {
    if held.is_empty() {
        return;
    }
    let rows: Vec<UsageRow> = held.values().cloned().collect();
    match store.add_usage(&rows) {
        Ok(()) => held.clear(),
        Err(e) => log::warn!("usage: {e}; {} rows kept for the next write", rows.len()),
    }
}

/// How often the writer drains the queue. It polls rather than waits on the queue, so a
/// request's `try_send` never wakes a thread (no system call on the request path).
const DRAIN_EVERY: Duration = Duration::from_millis(200);

fn write_loop(rx: &Receiver<Sample>, store: &dyn Store, every: Duration) {
    let mut held = Held::default();
    let mut next = Instant::now() + every;
    loop {
        std::thread::sleep(DRAIN_EVERY.min(every));
        loop {
            match rx.try_recv() {
                Ok(s) => add(&mut held, s),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    flush(&mut held, store);
                    return;
                }
            }
        }
        if Instant::now() >= next {
            flush(&mut held, store);
            next = Instant::now() + every;
        }
    }
}

/// What `group_by` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Key,
    UserPath,
    VirtualModel,
    Model,
}

impl GroupBy {
    fn parse(s: &str) -> Result<GroupBy, ApiError> {
        match s {
            "key" => Ok(GroupBy::Key),
            "user_path" => Ok(GroupBy::UserPath),
            "virtual_model" => Ok(GroupBy::VirtualModel),
            "model" => Ok(GroupBy::Model),
            other => Err(bad_query(
                "group_by",
                format!(
                    "group_by {other:?} is unknown; use key, user_path, virtual_model or model"
                ),
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            GroupBy::Key => "key",
            GroupBy::UserPath => "user_path",
            GroupBy::VirtualModel => "virtual_model",
            GroupBy::Model => "model",
        }
    }

    fn of(self, r: &UsageRow) -> &str {
        match self {
            GroupBy::Key => &r.key,
            GroupBy::UserPath => &r.user_path,
            GroupBy::VirtualModel => &r.virtual_model,
            GroupBy::Model => &r.model,
        }
    }
}

fn bad_query(param: &str, message: String) -> ApiError {
    let mut e = ApiError::new(400, "invalid_request_error", "invalid_query", message);
    e.param = Some(param.to_string());
    e
}

fn time_param(name: &str, raw: &str) -> Result<i64, ApiError> {
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    let v = match decoded.trim().parse::<i64>() {
        Ok(n) => serde_json::Value::from(n),
        Err(_) => serde_json::Value::from(decoded.trim()),
    };
    crate::keys::spec::parse_time(&v).map_err(|e| bad_query(name, format!("{name}: {e}")))
}

/// `GET /admin/api/v1/usage?group_by=&from=&to=`: hourly rows of `[from, to)` (default: the
/// last 24 hours), each with its group, and totals per group. Times are unix seconds or
/// RFC 3339.
pub fn query(store: Option<&dyn Store>, query: Option<&str>, now: i64) -> Result<Value, ApiError> {
    let mut group = GroupBy::Model;
    let mut from = now - 86_400;
    let mut to = now + 1;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "group_by" => group = GroupBy::parse(v)?,
            "from" => from = time_param("from", v)?,
            "to" => to = time_param("to", v)?,
            other => {
                return Err(bad_query(
                    other,
                    format!("unknown query parameter {other:?}; use group_by, from, to"),
                ))
            }
        }
    }
    let store = store.ok_or_else(|| {
        ApiError::new(
            503,
            "service_unavailable",
            "store_unavailable",
            "no admin store is open",
        )
    })?;
    // An hour counts when it starts inside the range: `from` is taken back to its hour.
    let rows = store
        .usage(from.div_euclid(3600) * 3600, to)
        .map_err(|e| crate::admin::writes::store_failed(&e, "reading usage"))?;
    let mut series: std::collections::BTreeMap<(i64, String), UsageRow> = Default::default();
    let mut totals: std::collections::BTreeMap<String, (i64, i64, i64, f64)> = Default::default();
    for r in &rows {
        let g = group.of(r).to_string();
        let e = series
            .entry((r.hour, g.clone()))
            .or_insert_with(|| UsageRow {
                requests: 0,
                input_tokens: 0,
                output_tokens: 0,
                cost_usd: 0.0,
                ..r.clone()
            });
        e.requests += r.requests;
        e.input_tokens += r.input_tokens;
        e.output_tokens += r.output_tokens;
        e.cost_usd += r.cost_usd;
        let t = totals.entry(g).or_default();
        t.0 += r.requests;
        t.1 += r.input_tokens;
        t.2 += r.output_tokens;
        t.3 += r.cost_usd;
    }
    let name = group.name();
    let data: Vec<Value> = series
        .iter()
        .map(|((hour, g), r)| {
            json!({
                "hour": crate::admin::rfc3339(*hour),
                name: g,
                "requests": r.requests,
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "total_tokens": r.input_tokens + r.output_tokens,
                "cost_usd": r.cost_usd,
            })
        })
        .collect();
    let totals: Vec<Value> = totals
        .iter()
        .map(|(g, (n, i, o, c))| {
            json!({name: g, "requests": n, "input_tokens": i, "output_tokens": o,
                   "total_tokens": i + o, "cost_usd": c})
        })
        .collect();
    Ok(json!({
        "object": "list",
        "group_by": name,
        "from": crate::admin::rfc3339(from),
        "to": crate::admin::rfc3339(to),
        "data": data,
        "totals": totals,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: u64, model: &str, cost: f64) -> Sample {
        Sample {
            at,
            key: None,
            user_path: UserPath::parse("/t").ok(),
            virtual_model: None,
            model: model.into(),
            input_tokens: 3,
            output_tokens: 2,
            cost_usd: cost,
        }
    }

    #[test]
    fn samples_add_up_per_hour_and_row() {
        let mut held = Held::default();
        add(&mut held, sample(3600, "p/a", 0.5));
        add(&mut held, sample(7199, "p/a", 0.25));
        add(&mut held, sample(7200, "p/a", 1.0));
        add(&mut held, sample(3601, "p/b", 1.0));
        assert_eq!(held.len(), 3);
        let a = &held[&(
            3600,
            SmolStr::default(),
            "/t".into(),
            SmolStr::default(),
            "p/a".into(),
        )];
        assert_eq!((a.requests, a.input_tokens, a.cost_usd), (2, 6, 0.75));
    }

    #[test]
    fn the_query_names_what_is_wrong() {
        let e = query(None, Some("group_by=team"), 0).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("group_by")));
        let e = query(None, Some("from=yesterday"), 0).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("from"));
        let e = query(None, Some("until=1"), 0).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("until"));
    }
}
