//! The PostgreSQL store (`STORAGE_TYPE=postgresql`): one database shared by a fleet of gateways.
//!
//! Same `virtual_models` table and columns as the SQLite store, plus a one-row revision table.
//! A write runs in one transaction that first locks the revision row (`SELECT ... FOR UPDATE`),
//! so every writer of the fleet is serialized there: the rows a write decides from (its
//! `If-Match`, whether a source is free) are the rows it commits over, and of two gateways racing
//! on one etag exactly one wins. The same transaction bumps the revision and `NOTIFY`s it.
//!
//! Every gateway follows the store on a connection of its own (`LISTEN`), and rebuilds its
//! snapshot on a notification of a newer revision, after each (re)connect, and when a poll of
//! the revision (`STORE_POLL_SECONDS`) finds it moved (a notification lost with a connection).
//!
//! The store runs its connections on a small runtime of its own, so it does not depend on
//! which runtime calls it; its methods block and are called from blocking threads (admin
//! calls, rebuilds, the command line), never on the request path. It never validates rows.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_postgres::{AsyncMessage, Client, GenericClient, NoTls};

use super::columns::{self, Columns};
use super::endpoint::PgUrl;
use super::sqlite::{decode, RawRow};
use super::{
    pg_migrations, Change, Health, KeyChange, OnChange, Outcome, Revisioned, Store, StoreError,
    StoredRow, UsageRow,
};
use crate::keys::StoredKey;

/// The channel writes notify on; the payload is the new revision.
pub const CHANNEL: &str = "modelgate_store";
/// Bounds a connection attempt to a database that does not answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds one operation (a write waits here for other gateways' writes at most this long).
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// The follower's reconnect backoff: doubling from the first to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(1);

const SELECT: &str = "SELECT source, targets, strategy, session_affinity, provider_name, model,
    user_paths, description, enabled, created_at, updated_at, spec, etag
    FROM virtual_models ORDER BY source";

const UPSERT: &str = "INSERT INTO virtual_models (source, targets, strategy, session_affinity,
    provider_name, model, user_paths, description, enabled, created_at, updated_at, spec, etag)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
    ON CONFLICT (source) DO UPDATE SET targets = excluded.targets, strategy = excluded.strategy,
    session_affinity = excluded.session_affinity, provider_name = excluded.provider_name,
    model = excluded.model, user_paths = excluded.user_paths, description = excluded.description,
    enabled = excluded.enabled, created_at = excluded.created_at, updated_at = excluded.updated_at,
    spec = excluded.spec, etag = excluded.etag";

pub struct PostgresStore {
    url: PgUrl,
    /// Some until the store is dropped (then shut down without blocking the dropping thread).
    rt: Option<tokio::runtime::Runtime>,
    /// The connection for reads and writes; reconnected on the next call once lost.
    client: Mutex<Option<Client>>,
    health: Arc<Health>,
    poll: Duration,
}

impl PostgresStore {
    /// Connects, runs the migrations and reads the revision. `poll` is how often the follower
    /// checks the revision besides notifications.
    pub fn open(url: &PgUrl, poll: Duration) -> Result<PostgresStore, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(4)
            .thread_name("modelgate-store")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable {
                location: url.shown.clone(),
                message: format!("cannot start its runtime: {e}"),
            })?;
        let store = PostgresStore {
            url: url.clone(),
            rt: Some(rt),
            client: Mutex::new(None),
            health: Arc::new(Health::default()),
            poll: poll.max(Duration::from_secs(1)),
        };
        let location = store.url.shown.clone();
        let revision = store.with_client(async |c: &mut Client| {
            pg_migrations::run(c, &location).await?;
            read_revision(c, &location).await
        })?;
        store.health.applied(revision);
        Ok(store)
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        // Set in `open`, taken only in `drop`.
        self.rt
            .as_ref()
            .unwrap_or_else(|| unreachable!("runtime used after drop"))
    }

    fn slot(&self) -> MutexGuard<'_, Option<Client>> {
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `op` on the store's connection (connecting first when there is none or it was
    /// lost), bounded by `OP_TIMEOUT`. A lost connection is dropped and recorded.
    fn with_client<T>(
        &self,
        op: impl AsyncFnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.slot();
        let location = self.url.shown.clone();
        let result = self.rt().block_on(async {
            let run = async {
                if slot.as_ref().is_none_or(Client::is_closed) {
                    *slot = Some(connect(&self.url, &self.rt().handle().clone(), None).await?);
                }
                match slot.as_mut() {
                    Some(c) => op(c).await,
                    None => Err(unavailable(&location, "not connected")),
                }
            };
            match tokio::time::timeout(OP_TIMEOUT, run).await {
                Ok(r) => r,
                Err(_) => Err(unavailable(
                    &location,
                    &format!("no answer within {} s", OP_TIMEOUT.as_secs()),
                )),
            }
        });
        match &result {
            Ok(_) => self.health.connected(),
            Err(e) if e.is_unavailable() => {
                *slot = None;
                self.health.failed(&e.to_string());
            }
            Err(_) => {}
        }
        result
    }

    /// Whether the store holds no rows (`store copy` refuses to overwrite a non-empty target).
    pub fn count(&self) -> Result<i64, StoreError> {
        let location = self.url.shown.clone();
        self.with_client(async |c: &mut Client| {
            c.query_one("SELECT COUNT(*) FROM virtual_models", &[])
                .await
                .and_then(|r| r.try_get(0))
                .map_err(|e| classify(&location, e))
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks; a store dropped on an async thread must not.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn unavailable(location: &str, message: &str) -> StoreError {
    StoreError::Unavailable {
        location: location.to_string(),
        message: message.to_string(),
    }
}

/// A driver error: the database being out of reach (connection refused, lost or closed, the
/// server shutting down, the database gone or closed to connections) is `Unavailable`; anything
/// else is a fault.
fn classify(location: &str, e: tokio_postgres::Error) -> StoreError {
    let out_of_reach = match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            // 08: connection exception; 57: operator intervention (shutdown, terminated);
            // 53: insufficient resources; 3D000: no such database; 55000: connections disallowed.
            code.starts_with("08")
                || code.starts_with("57")
                || code.starts_with("53")
                || code == "3D000"
                || code == "55000"
        }
        None => {
            e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
        }
    };
    if out_of_reach {
        let message = match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        };
        unavailable(location, &message)
    } else {
        StoreError::Postgres {
            location: location.to_string(),
            source: e,
        }
    }
}

/// Connects and spawns the connection's driver on `rt`. With `notify`, the driver forwards the
/// revision of every notification on `CHANNEL` there and drops it when the connection ends.
async fn connect(
    url: &PgUrl,
    rt: &tokio::runtime::Handle,
    notify: Option<tokio::sync::watch::Sender<i64>>,
) -> Result<Client, StoreError> {
    let mut config = url.config.clone();
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("modelgate");
    let (client, mut conn) = config
        .connect(NoTls)
        .await
        .map_err(|e| unavailable(&url.shown, &connect_message(&e)))?;
    let shown = url.shown.clone();
    rt.spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let (Some(tx), Ok(rev)) = (&notify, n.payload().parse::<i64>()) else {
                        continue;
                    };
                    tx.send_modify(|seen| *seen = (*seen).max(rev));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    log::debug!("admin store {shown}: connection ended: {e}");
                    break;
                }
                None => break,
            }
        }
    });
    Ok(client)
}

/// What a failed connection attempt says, with the database's own words when it answered.
fn connect_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("cannot connect: {}", db.message()),
        None => format!("cannot connect: {e}"),
    }
}

async fn read_revision(c: &impl GenericClient, location: &str) -> Result<i64, StoreError> {
    c.query_one(
        "SELECT revision FROM modelgate_store_revision WHERE id = 1",
        &[],
    )
    .await
    .and_then(|r| r.try_get(0))
    .map_err(|e| classify(location, e))
}

async fn read_rows(c: &impl GenericClient, location: &str) -> Result<Vec<StoredRow>, StoreError> {
    let rows = c
        .query(SELECT, &[])
        .await
        .map_err(|e| classify(location, e))?;
    rows.iter()
        .map(|r| raw_row(r).map_err(|e| classify(location, e)))
        .map(|raw| raw.and_then(decode))
        .collect()
}

async fn read_keys(c: &impl GenericClient, location: &str) -> Result<Vec<StoredKey>, StoreError> {
    let rows = c
        .query(
            "SELECT name, hash, spec, created_at FROM modelgate_api_keys ORDER BY name",
            &[],
        )
        .await
        .map_err(|e| classify(location, e))?;
    rows.iter()
        .map(|r| {
            Ok(StoredKey {
                name: r.try_get(0)?,
                hash: r.try_get(1)?,
                spec: r.try_get(2)?,
                created_at: r.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        .map_err(|e| classify(location, e))
}

/// SQLite's `?N` parameters in PostgreSQL's `$N` spelling.
fn pg_params(sql: &str) -> String {
    sql.replace('?', "$")
}

/// Bumps the revision and notifies the fleet, inside `tx` (delivered when it commits).
async fn bump_and_notify(
    tx: &tokio_postgres::Transaction<'_>,
    location: &str,
) -> Result<i64, StoreError> {
    let pg = |e| classify(location, e);
    let revision: i64 = tx
        .query_one(
            "UPDATE modelgate_store_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision",
            &[],
        )
        .await
        .and_then(|r| r.try_get(0))
        .map_err(pg)?;
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &revision.to_string()],
    )
    .await
    .map_err(pg)?;
    Ok(revision)
}

fn raw_row(r: &tokio_postgres::Row) -> Result<RawRow, tokio_postgres::Error> {
    Ok(RawRow {
        columns: Columns {
            source: r.try_get(0)?,
            targets: r.try_get(1)?,
            strategy: r.try_get(2)?,
            session_affinity: r.try_get(3)?,
            provider_name: r.try_get(4)?,
            model: r.try_get(5)?,
            user_paths: r.try_get(6)?,
            description: r.try_get(7)?,
            enabled: r.try_get(8)?,
        },
        created_at: r.try_get(9)?,
        updated_at: r.try_get(10)?,
        spec: r.try_get(11)?,
        etag: r.try_get(12)?,
    })
}

async fn write_change(
    tx: &tokio_postgres::Transaction<'_>,
    change: &Change,
    location: &str,
) -> Result<(), StoreError> {
    match change {
        Change::Upsert(row) => {
            let c = columns::from_spec(&row.spec);
            let spec = serde_json::to_string(&row.spec).map_err(|e| StoreError::BadRow {
                source_name: c.source.clone(),
                message: e.to_string(),
            })?;
            tx.execute(
                UPSERT,
                &[
                    &c.source,
                    &c.targets,
                    &c.strategy,
                    &c.session_affinity,
                    &c.provider_name,
                    &c.model,
                    &c.user_paths,
                    &c.description,
                    &c.enabled,
                    &row.created_at,
                    &row.updated_at,
                    &spec,
                    &row.etag,
                ],
            )
            .await
        }
        Change::Delete(source) => {
            tx.execute("DELETE FROM virtual_models WHERE source = $1", &[source])
                .await
        }
    }
    .map(|_| ())
    .map_err(|e| classify(location, e))
}

impl Store for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgresql"
    }

    fn location(&self) -> String {
        self.url.shown.clone()
    }

    fn location_field(&self) -> &'static str {
        "url"
    }

    fn load(&self) -> Result<Revisioned, StoreError> {
        let location = self.url.shown.clone();
        self.with_client(async |c: &mut Client| {
            // One snapshot of the database: the rows are those of the revision read.
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(|e| classify(&location, e))?;
            let revision = read_revision(&tx, &location).await?;
            let rows = read_rows(&tx, &location).await?;
            let keys = read_keys(&tx, &location).await?;
            tx.commit().await.map_err(|e| classify(&location, e))?;
            Ok(Revisioned {
                rows,
                keys,
                revision,
            })
        })
    }

    fn transact(
        &self,
        decide: &mut dyn FnMut(&[StoredRow]) -> Outcome,
    ) -> Result<Option<i64>, StoreError> {
        let location = self.url.shown.clone();
        self.with_client(async |c: &mut Client| {
            let pg = |e| classify(&location, e);
            let tx = c.transaction().await.map_err(pg)?;
            // The fleet's write lock: held until commit or rollback. The transaction is READ
            // COMMITTED, so the rows read next (a new statement) include everything the writer
            // before us committed while we waited here.
            tx.query_one(
                "SELECT revision FROM modelgate_store_revision WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(pg)?;
            let rows = read_rows(&tx, &location).await?;
            let changes = match decide(&rows) {
                Outcome::Commit(changes) => changes,
                Outcome::Abort => {
                    tx.rollback().await.map_err(pg)?;
                    return Ok(None);
                }
            };
            for change in &changes {
                write_change(&tx, change, &location).await?;
            }
            // Delivered to every listener when (and only if) the transaction commits.
            let revision = bump_and_notify(&tx, &location).await?;
            tx.commit().await.map_err(pg)?;
            Ok(Some(revision))
        })
    }

    fn write_key(&self, change: &KeyChange) -> Result<Option<i64>, StoreError> {
        let location = self.url.shown.clone();
        self.with_client(async |c: &mut Client| {
            let pg = |e| classify(&location, e);
            let tx = c.transaction().await.map_err(pg)?;
            tx.query_one(
                "SELECT revision FROM modelgate_store_revision WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(pg)?;
            let changed = match change {
                KeyChange::Create(k) => tx
                    .execute(
                        "INSERT INTO modelgate_api_keys (name, hash, spec, created_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (name) DO NOTHING",
                        &[&k.name, &k.hash, &k.spec, &k.created_at],
                    )
                    .await
                    .map_err(pg)?,
                KeyChange::Delete(name) => tx
                    .execute("DELETE FROM modelgate_api_keys WHERE name = $1", &[name])
                    .await
                    .map_err(pg)?,
            };
            if changed == 0 {
                tx.rollback().await.map_err(pg)?;
                return Ok(None);
            }
            let revision = bump_and_notify(&tx, &location).await?;
            tx.commit().await.map_err(pg)?;
            Ok(Some(revision))
        })
    }

    fn add_usage(&self, rows: &[UsageRow]) -> Result<(), StoreError> {
        let location = self.url.shown.clone();
        let upsert = pg_params(super::sqlite::USAGE_UPSERT);
        self.with_client(async |c: &mut Client| {
            let pg = |e| classify(&location, e);
            let tx = c.transaction().await.map_err(pg)?;
            for r in rows {
                tx.execute(
                    upsert.as_str(),
                    &[
                        &r.hour,
                        &r.key,
                        &r.user_path,
                        &r.virtual_model,
                        &r.model,
                        &r.requests,
                        &r.input_tokens,
                        &r.output_tokens,
                        &r.cost_usd,
                    ],
                )
                .await
                .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)
        })
    }

    fn usage(&self, from: i64, to: i64) -> Result<Vec<UsageRow>, StoreError> {
        let location = self.url.shown.clone();
        let select = pg_params(super::sqlite::USAGE_SELECT);
        self.with_client(async |c: &mut Client| {
            let rows = c
                .query(select.as_str(), &[&from, &to])
                .await
                .map_err(|e| classify(&location, e))?;
            rows.iter()
                .map(|r| {
                    Ok(UsageRow {
                        hour: r.try_get(0)?,
                        key: r.try_get(1)?,
                        user_path: r.try_get(2)?,
                        virtual_model: r.try_get(3)?,
                        model: r.try_get(4)?,
                        requests: r.try_get(5)?,
                        input_tokens: r.try_get(6)?,
                        output_tokens: r.try_get(7)?,
                        cost_usd: r.try_get(8)?,
                    })
                })
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()
                .map_err(|e| classify(&location, e))
        })
    }

    fn clear_usage(&self) -> Result<(), StoreError> {
        let location = self.url.shown.clone();
        self.with_client(async |c: &mut Client| {
            c.execute("DELETE FROM modelgate_usage", &[])
                .await
                .map(|_| ())
                .map_err(|e| classify(&location, e))
        })
    }

    fn health(&self) -> &Health {
        &self.health
    }

    fn follow(&self, on_change: OnChange) {
        let follower = Follower {
            url: self.url.clone(),
            rt: self.rt().handle().clone(),
            health: self.health.clone(),
            poll: self.poll,
            on_change,
        };
        self.rt().spawn(follower.run());
    }
}

/// The `LISTEN` side: its own connection, reconnected with backoff while the database is away.
struct Follower {
    url: PgUrl,
    rt: tokio::runtime::Handle,
    health: Arc<Health>,
    poll: Duration,
    on_change: OnChange,
}

impl Follower {
    async fn run(self) {
        let mut backoff = BACKOFF_FIRST;
        let mut was_down = false;
        loop {
            let mut listened = false;
            let Err(e) = self.session(&mut listened).await;
            if listened {
                // It was up: start over quickly.
                backoff = BACKOFF_FIRST;
                was_down = false;
            }
            if !was_down {
                log::warn!("{e}; serving the last snapshot and reconnecting");
            }
            was_down = true;
            self.health.failed(&e.to_string());
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_CAP);
        }
    }

    /// One connection's life: listen, rebuild, then rebuild on every newer revision until the
    /// connection ends (the error says how).
    async fn session(&self, listened: &mut bool) -> Result<Infallible, StoreError> {
        let location = &self.url.shown;
        let (tx, mut rx) = tokio::sync::watch::channel(0i64);
        let client = connect(&self.url, &self.rt, Some(tx)).await?;
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| classify(location, e))?;
        *listened = true;
        self.health.connected();
        log::info!("admin store {location}: following writes (LISTEN {CHANNEL})");
        // Anything written while this gateway was not listening is read now.
        self.rebuild().await;
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Err(unavailable(location, "the connection was closed"));
                    }
                    let rev = *rx.borrow_and_update();
                    if rev > self.health.revision() {
                        self.rebuild().await;
                    }
                }
                _ = tick.tick() => {
                    let rev = tokio::time::timeout(OP_TIMEOUT, read_revision(&client, location))
                        .await
                        .unwrap_or_else(|_| Err(unavailable(location, "no answer to the revision poll")))?;
                    if rev != self.health.revision() {
                        log::info!("admin store {location}: revision {rev} found by the poll");
                        self.rebuild().await;
                    }
                }
            }
        }
    }

    async fn rebuild(&self) {
        let f = self.on_change.clone();
        if tokio::task::spawn_blocking(move || f()).await.is_err() {
            log::error!("admin store {}: the rebuild panicked", self.url.shown);
        }
    }
}
