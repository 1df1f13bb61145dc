//! The gateway's shared state: the current snapshot, state that survives reloads, and how to
//! rebuild the snapshot from its sources.
//!
//! Snapshots are written only through `install`, by `App::reload` (config changed), by an admin
//! write, and by `App::refresh_store` (another gateway wrote the shared store): each builds a
//! complete new snapshot off the request path and swaps it in, or keeps the old one and records
//! why.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::catalog::discovery::now_ms;
use crate::catalog::StateRegistry;
use crate::config::env::Env;
use crate::config::schema::VirtualModelSpec;
use crate::config::{self, LoadedConfig};
use crate::health::Health;
use crate::keys::KeyTable;
use crate::retire::Retirer;
use crate::snapshot::Snapshot;
use crate::store::Store;

/// Where configuration comes from, so a reload can read it again.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    /// A `.env` file read under the real environment.
    pub env_file: Option<PathBuf>,
    /// Extra variables layered over everything (tests, `--listen`).
    pub overrides: Vec<(String, String)>,
}

impl ConfigSource {
    pub fn env(&self) -> Result<Env, String> {
        let mut env = match &self.env_file {
            Some(f) if f.is_file() => Env::from_process_and_file(f)?,
            _ => Env::from_process(),
        };
        for (k, v) in &self.overrides {
            env.set(k, v);
        }
        Ok(env)
    }

    pub fn load(&self) -> Result<LoadedConfig, String> {
        let env = self.env()?;
        config::load(self.path.as_deref(), &env)
    }
}

/// The outcome of the last reload, for the status API and metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    pub at_ms: Option<u64>,
    pub ok: bool,
    pub error: Option<String>,
    pub ok_count: u64,
    pub failed_count: u64,
}

pub struct App {
    pub source: ConfigSource,
    snapshot: ArcSwap<Snapshot>,
    pub registry: StateRegistry,
    pub health: Health,
    pub reload_status: ArcSwap<ReloadStatus>,
    /// Serializes snapshot rebuilds (reloads and admin writes); never taken on the request path.
    pub rebuild_lock: Mutex<()>,
    pub store: Option<Arc<dyn Store>>,
    /// The managed API keys, by the hash of their secrets: swapped whole whenever the store's
    /// keys are read (start, reload, a key write, another gateway's write); one load per
    /// request that presents a key other than the master key.
    pub keys: ArcSwap<KeyTable>,
    /// Rate limits and budgets: rebuilt whenever the config or the keys change.
    pub limiter: crate::limits::Limiter,
    /// Usage samples on their way to the store's hourly rows (started by `serve`).
    pub usage: crate::usage::Recorder,
    /// The config the current snapshot was built from (admin writes validate against it, so
    /// a broken file on disk does not block them).
    loaded: ArcSwap<LoadedConfig>,
    pub refresh_wakeup: tokio::sync::Notify,
    /// Frees replaced snapshots and configs off the reload path.
    retirer: Retirer,
}

impl App {
    /// Loads everything start-up needs; the error is what start-up prints.
    pub fn start(source: ConfigSource, store: Option<Arc<dyn Store>>) -> Result<App, String> {
        let loaded = source.load()?;
        let mut keys = KeyTable::default();
        let rows = match &store {
            Some(s) => {
                let current = s.load().map_err(|e| e.to_string())?;
                s.health().applied(current.revision);
                keys = key_table(&current.keys);
                current.rows.into_iter().map(|r| r.spec).collect()
            }
            None => Vec::new(),
        };
        let registry = StateRegistry::default();
        let snap = Snapshot::build(&loaded, &rows, None, &registry).map_err(|e| e.join("\n"))?;
        let health = Health::default();
        health.sync(&snap);
        let limiter = crate::limits::Limiter::default();
        limiter.configure(&loaded.limits, &keys);
        Ok(App {
            source,
            snapshot: ArcSwap::from_pointee(snap),
            registry,
            health,
            reload_status: ArcSwap::from_pointee(ReloadStatus {
                at_ms: Some(now_ms()),
                ok: true,
                ..ReloadStatus::default()
            }),
            rebuild_lock: Mutex::new(()),
            store,
            keys: ArcSwap::from_pointee(keys),
            limiter,
            usage: crate::usage::Recorder::default(),
            loaded: ArcSwap::from_pointee(loaded),
            refresh_wakeup: tokio::sync::Notify::new(),
            retirer: Retirer::new(),
        })
    }

    /// The current snapshot: one atomic load.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The config as a reload reads it. A file that is empty, caught between a writer's
    /// truncation and its write (or a ConfigMap mounted empty), is refused: loaded, it would be
    /// the built-in defaults, dropping every provider and virtual model.
    fn source_for_reload(&self) -> Result<LoadedConfig, String> {
        if let Some(p) = self.source.path.as_deref() {
            if std::fs::read(p).is_ok_and(|b| b.iter().all(u8::is_ascii_whitespace)) {
                return Err(format!(
                    "{}: the config file is empty; keeping the last good config",
                    p.display()
                ));
            }
        }
        self.source.load()
    }

    /// Re-reads the config and the store and swaps in a new snapshot, or keeps the old one.
    pub fn reload(&self) -> Result<(), String> {
        let _guard = self.rebuild_lock.lock().unwrap_or_else(|p| p.into_inner());
        let built = self.source_for_reload().and_then(|loaded| {
            let (rows, revision) = match &self.store {
                Some(s) => match s.load() {
                    Ok(current) => {
                        self.set_keys(key_table(&current.keys));
                        let specs = current.rows.into_iter().map(|r| r.spec).collect();
                        (specs, Some(current.revision))
                    }
                    // A config change still applies while a shared store is away: with the
                    // rows the live snapshot has (the follower catches up once it is back).
                    Err(e) if e.is_unavailable() => {
                        log::warn!(
                            "{e}; reloading the config with the store rows of revision {}",
                            s.health().revision()
                        );
                        (self.snapshot.load().store_rows.clone(), None)
                    }
                    Err(e) => return Err(e.to_string()),
                },
                None => (Vec::new(), None),
            };
            let snap = self
                .build_snapshot(&loaded, &rows)
                .map_err(|e| e.join("\n"))?;
            Ok((Arc::new(loaded), snap, revision))
        });
        let prev = self.reload_status.load();
        // The status is recorded before the new snapshot goes live, so whoever sees the new
        // routing also sees the reload that brought it.
        match built {
            Ok((loaded, snap, revision)) => {
                self.reload_status.store(Arc::new(ReloadStatus {
                    at_ms: Some(now_ms()),
                    ok: true,
                    error: None,
                    ok_count: prev.ok_count + 1,
                    failed_count: prev.failed_count,
                }));
                self.install(loaded, snap);
                if let (Some(s), Some(rev)) = (&self.store, revision) {
                    s.health().applied(rev);
                }
                Ok(())
            }
            Err(e) => {
                log::error!("reload failed, keeping the last good config: {e}");
                self.reload_status.store(Arc::new(ReloadStatus {
                    at_ms: Some(now_ms()),
                    ok: false,
                    error: Some(e.clone()),
                    ok_count: prev.ok_count,
                    failed_count: prev.failed_count + 1,
                }));
                Err(e)
            }
        }
    }

    /// Builds a snapshot from a loaded config and store rows and swaps it in. Callers hold
    /// `rebuild_lock`.
    pub fn build_and_swap(
        &self,
        loaded: Arc<LoadedConfig>,
        rows: &[VirtualModelSpec],
    ) -> Result<(), String> {
        let snap = self
            .build_snapshot(&loaded, rows)
            .map_err(|e| e.join("\n"))?;
        self.install(loaded, snap);
        Ok(())
    }

    /// Builds and validates a snapshot without swapping it in; every error comes back.
    pub fn build_snapshot(
        &self,
        loaded: &LoadedConfig,
        rows: &[VirtualModelSpec],
    ) -> Result<Snapshot, Vec<String>> {
        let prev = self.snapshot.load_full();
        Snapshot::build(loaded, rows, Some(&prev), &self.registry)
    }

    /// Swaps in a snapshot built from `loaded`. Callers hold `rebuild_lock`.
    ///
    /// The replaced snapshot and config are freed on the retirer's thread: the caller returns
    /// once the new snapshot is live, and requests still holding the old one finish on it.
    pub fn install(&self, loaded: Arc<LoadedConfig>, snap: Snapshot) {
        {
            let prev = self.snapshot.load();
            let known: HashSet<&str> = prev.warnings.iter().map(String::as_str).collect();
            for w in snap.warnings.iter().filter(|w| !known.contains(w.as_str())) {
                log::warn!("{w}");
            }
        }
        self.health.sync(&snap);
        self.limiter.configure(&loaded.limits, &self.keys.load());
        self.retirer.retire(self.snapshot.swap(Arc::new(snap)));
        self.retirer.retire(self.loaded.swap(loaded));
        self.refresh_wakeup.notify_one();
    }

    /// The config the current snapshot was built from.
    pub fn loaded(&self) -> Arc<LoadedConfig> {
        self.loaded.load_full()
    }

    /// Rebuilds the snapshot from the store's current rows and the config the live snapshot was
    /// built from (a broken file on disk does not hold back other gateways' writes). Called by
    /// the store's follower when another gateway wrote or the connection came back.
    pub fn refresh_store(&self) -> Result<(), String> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let _guard = self.rebuild_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = store.load().map_err(|e| e.to_string())?;
        // Keys first: a revoked key stops working even when the rows do not validate.
        self.set_keys(key_table(&current.keys));
        if current.revision == store.health().revision() {
            // Already live (this gateway wrote it, or an earlier rebuild read it).
            return Ok(());
        }
        let specs: Vec<VirtualModelSpec> = current.rows.into_iter().map(|r| r.spec).collect();
        let loaded = self.loaded();
        match self.build_snapshot(&loaded, &specs) {
            Ok(snap) => {
                self.install(loaded, snap);
                store.health().applied(current.revision);
                log::info!(
                    "admin store {}: revision {} is live",
                    store.location(),
                    current.revision
                );
                Ok(())
            }
            Err(errors) => {
                let e = format!(
                    "admin store revision {} does not validate against this gateway's config; keeping the last snapshot: {}",
                    current.revision,
                    errors.join("\n")
                );
                log::error!("{e}");
                store.health().error(&e);
                Err(e)
            }
        }
    }

    /// Starts following the store's writes by other gateways (a no-op for a store only this
    /// process writes). The follower holds the app weakly: it stops rebuilding once the app is
    /// gone.
    pub fn follow_store(self: &Arc<Self>) {
        let Some(store) = &self.store else {
            return;
        };
        let app = Arc::downgrade(self);
        store.follow(Arc::new(move || {
            if let Some(app) = app.upgrade() {
                let _ = app.refresh_store();
            }
        }));
    }

    /// Starts recording usage into the store (`serve` only), flushed every
    /// `STORE_USAGE_FLUSH_SECONDS`.
    pub fn start_usage(&self) -> Result<(), String> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let env = self.source.env()?;
        let secs = match env.get("STORE_USAGE_FLUSH_SECONDS") {
            None => crate::usage::DEFAULT_FLUSH_SECONDS,
            Some(v) => v.trim().parse::<u64>().ok().filter(|s| *s > 0).ok_or_else(|| {
                format!("STORE_USAGE_FLUSH_SECONDS: {v:?} is not a whole number of seconds (1 or more)")
            })?,
        };
        self.usage
            .start(store.clone(), std::time::Duration::from_secs(secs));
        Ok(())
    }

    /// Re-reads the store's keys after this gateway wrote one (the rows are the follower's
    /// business: a key write changes none).
    pub fn refresh_keys(&self) -> Result<(), String> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let current = store.load().map_err(|e| e.to_string())?;
        self.set_keys(key_table(&current.keys));
        Ok(())
    }

    /// Swaps in a new key table and the limits of its keys.
    fn set_keys(&self, table: KeyTable) {
        self.limiter.configure(&self.loaded.load().limits, &table);
        self.keys.store(Arc::new(table));
    }

    /// Validates `rows` as the store's new content against the current config, without swapping.
    pub fn check_rows(&self, rows: &[VirtualModelSpec]) -> Result<(), String> {
        let loaded = self.loaded();
        Snapshot::build(&loaded, rows, None, &self.registry)
            .map(|_| ())
            .map_err(|e| e.join("\n"))
    }
}

/// The key table of stored keys; a key that cannot be read is logged and authenticates nobody.
fn key_table(rows: &[crate::keys::StoredKey]) -> KeyTable {
    let (table, warnings) = KeyTable::build(rows);
    for w in warnings {
        log::warn!("{w}");
    }
    table
}
