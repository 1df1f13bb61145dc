//! The `modelgate` command line: `serve` (default), `check`, `resolve`, `reload`, `store copy`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use modelgate::app::{App, ConfigSource};
use modelgate::config;
use modelgate::config::settings::StoreKind;
use modelgate::store::endpoint::{Endpoint, PgUrl};
use modelgate::store::{PostgresStore, SqliteStore, Store};

#[global_allocator]
static ALLOCATOR: modelgate::Allocator = modelgate::Allocator;

#[derive(Parser)]
#[command(
    name = "modelgate",
    version,
    about = "An LLM gateway: virtual models, routing strategies and a streaming proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    common: Common,
    /// Address to listen on (default 0.0.0.0:$PORT, PORT default 8080).
    #[arg(long, global = true)]
    listen: Option<String>,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Config file (default: $MODELGATE_CONFIG, else config/config.yaml, else ./config.yaml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Env file read under the real environment (default: .env if present).
    #[arg(long, global = true)]
    env_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Validate the configuration and print the resolved table.
    Check,
    /// Show the plan the gateway would use for MODEL, without sending anything.
    Resolve {
        model: String,
        /// The caller's user path.
        #[arg(long)]
        user_path: Option<String>,
        /// Number of consecutive requests to plan.
        #[arg(long, default_value_t = 1)]
        n: usize,
        /// Request metadata as a JSON object, for targets with metadata_match.
        #[arg(long)]
        metadata: Option<String>,
        /// A sample chat request body (JSON), for the virtual model's request middleware: what
        /// its `router` rules would pick, or whether a `guard` would block it.
        #[arg(long)]
        body: Option<String>,
        /// The operation to plan: chat (default), completion, embedding, responses, messages,
        /// audio_transcription, audio_translation, text_to_speech, rerank, moderation,
        /// image_generation.
        #[arg(long, default_value = "chat")]
        operation: String,
    },
    /// Ask the running gateway to reload its config (SIGHUP to the pid in $PID_FILE).
    Reload,
    /// Admin store tools.
    Store {
        #[command(subcommand)]
        action: StoreCommand,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy every virtual model row from one store to another, keeping sources, etags and times.
    Copy {
        /// The store to read: sqlite:PATH or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE.
        #[arg(long)]
        from: String,
        /// The store to write (created and migrated when new), in the same forms.
        #[arg(long)]
        to: String,
        /// Replace the rows the target already holds (without it, a non-empty target is refused).
        #[arg(long)]
        replace: bool,
    },
}

fn source(common: &Common) -> anyhow::Result<ConfigSource> {
    let env_file = common.env_file.clone().or_else(|| {
        let p = PathBuf::from(".env");
        p.is_file().then_some(p)
    });
    if let Some(f) = &common.env_file {
        if !f.is_file() {
            anyhow::bail!("--env-file {}: no such file", f.display());
        }
    }
    let src = ConfigSource {
        path: None,
        env_file,
        overrides: Vec::new(),
    };
    let env = src.env().map_err(anyhow::Error::msg)?;
    let path = config::find_path(common.config.as_deref(), &env);
    if let Some(p) = &path {
        if !p.is_file() {
            anyhow::bail!("config file {} does not exist", p.display());
        }
    }
    Ok(ConfigSource { path, ..src })
}

/// Opens the admin store `STORAGE_TYPE` names. The SQLite file at `SQLITE_PATH`: `serve`
/// creates it; `check` and `resolve` read it only when it exists, so they create no files.
/// PostgreSQL at `POSTGRES_URL`: connected and migrated (an unreachable database stops start-up
/// with the reason).
fn open_store(src: &ConfigSource, create: bool) -> anyhow::Result<Option<Arc<dyn Store>>> {
    let loaded = src.load().map_err(anyhow::Error::msg)?;
    match &loaded.settings.store {
        StoreKind::Sqlite => {
            let path = PathBuf::from(&loaded.settings.sqlite_path);
            let store = if create {
                Some(SqliteStore::open(&path)?)
            } else {
                SqliteStore::open_existing(&path)?
            };
            Ok(store.map(|s| Arc::new(s) as Arc<dyn Store>))
        }
        StoreKind::Postgres { url } => {
            let url = PgUrl::parse(url, "POSTGRES_URL").map_err(anyhow::Error::msg)?;
            let poll = std::time::Duration::from_secs(loaded.settings.store_poll_s);
            Ok(Some(Arc::new(PostgresStore::open(&url, poll)?)))
        }
    }
}

fn main() {
    modelgate::allocator::without_huge_pages();
    let cli = Cli::parse();
    let result = run(cli);
    // Everything logged before the exit (and before the error below) reaches stderr first.
    modelgate::log_sink::flush();
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("modelgate: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn init_logging(json: bool) {
    let mut b = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,pingora=warn"),
    );
    if json {
        b.format(|buf, rec| {
            use std::io::Write;
            if rec.target() == modelgate::log_sink::ACCESS {
                writeln!(buf, "{}", rec.args())
            } else {
                let line = serde_json::json!({"level": rec.level().to_string(), "target": rec.target(), "message": rec.args().to_string()});
                writeln!(buf, "{line}")
            }
        });
    }
    // Lines go to a writer thread (one write per burst, none on the request path); without it
    // (it could not start), straight to stderr.
    match modelgate::log_sink::start(std::io::stderr()) {
        Ok(w) => {
            b.target(env_logger::Target::Pipe(Box::new(w)));
            let logger = b.build();
            let level = logger.filter();
            if log::set_boxed_logger(Box::new(modelgate::log_sink::Logger::new(logger, json)))
                .is_ok()
            {
                log::set_max_level(level);
            }
        }
        Err(_) => {
            let _ = b.try_init();
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let src = source(&cli.common)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let loaded = src.load().map_err(anyhow::Error::msg)?;
            init_logging(loaded.settings.log_json);
            match modelgate::fd_limit::raise() {
                Ok((before, after)) => log::info!(
                    "open files: soft limit {} -> {} (hard {})",
                    before.soft,
                    after.soft,
                    after.hard
                ),
                Err(e) => log::warn!("open files: the soft limit could not be raised: {e}"),
            }
            let store = open_store(&src, true)?;
            let app = Arc::new(App::start(src.clone(), store).map_err(anyhow::Error::msg)?);
            app.start_usage().map_err(anyhow::Error::msg)?;
            let snap = app.snapshot();
            for w in &snap.warnings {
                log::warn!("{w}");
            }
            if snap.settings.master_key.is_none() {
                log::warn!(
                    "no MODELGATE_MASTER_KEY set: the gateway is open to anyone who can reach it"
                );
            }
            log::info!(
                "config {} loaded: {} providers, {} virtual models",
                snap.label,
                snap.providers.len(),
                snap.table.models.len()
            );
            if let Some(store) = &app.store {
                log::info!(
                    "admin store: {} at {} (revision {}, {} rows in use); admin API and dashboard at /admin/dashboard",
                    store.kind(),
                    store.location(),
                    store.health().revision(),
                    snap.origin_counts().store
                );
            }
            app.follow_store();
            modelgate::reload::on_sighup(app.clone()).context("installing the SIGHUP handler")?;
            let _watcher = match &src.path {
                Some(p) => Some(
                    modelgate::reload::watch_file(app.clone(), p)
                        .context("watching the config file")?,
                ),
                None => None,
            };
            let listen = cli.listen.unwrap_or_else(|| snap.settings.listen.clone());
            drop(snap);
            modelgate::server::run(app, &listen)
        }
        Command::Check => {
            let store = open_store(&src, false)?;
            let app = App::start(src, store).map_err(anyhow::Error::msg)?;
            print!("{}", modelgate::cli::check_table(&app.snapshot()));
            let snap = app.snapshot();
            print!(
                "{}",
                modelgate::cli::store_line(app.store.as_deref(), &snap.settings)
            );
            if let Ok(limits) = modelgate::fd_limit::current() {
                println!("{}", modelgate::fd_limit::check_line(limits));
            }
            println!("config is valid");
            Ok(())
        }
        Command::Resolve {
            model,
            user_path,
            n,
            metadata,
            body,
            operation,
        } => {
            let Some(operation) = modelgate::routing::model::Operation::parse(&operation) else {
                anyhow::bail!(
                    "--operation {operation:?} is unknown; use {}",
                    modelgate::routing::model::Operation::NAMES
                );
            };
            let body = match body.as_deref() {
                None => None,
                Some(raw) => match serde_json::from_str::<serde_json::Value>(raw) {
                    Ok(v @ serde_json::Value::Object(_)) => Some(v),
                    _ => anyhow::bail!(
                        "--body {raw:?} is not a JSON object; give a chat request, e.g. '{{\"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}'"
                    ),
                },
            };
            let store = open_store(&src, false)?;
            let app = App::start(src, store).map_err(anyhow::Error::msg)?;
            let up = match user_path {
                Some(p) => Some(
                    modelgate::routing::user_path::UserPath::parse(&p)
                        .map_err(|e| anyhow::anyhow!("--user-path: {e}"))?,
                ),
                None => None,
            };
            let metadata = match metadata.as_deref() {
                None => None,
                Some(raw) => match serde_json::from_str::<serde_json::Value>(raw) {
                    Ok(serde_json::Value::Object(m)) => Some(m),
                    _ => anyhow::bail!(
                        "--metadata {raw:?} is not a JSON object; write it as on the X-Modelgate-Metadata header, e.g. '{{\"tier\": \"gold\"}}'"
                    ),
                },
            };
            let shared_at = app.limiter.shared().map(|s| {
                format!(
                    "{} (keys {}steer:*)",
                    modelgate::limits::shared::shown(&s.settings.url),
                    s.settings.prefix
                )
            });
            let question = modelgate::cli::Question {
                model: &model,
                user_path: up.as_ref(),
                metadata: metadata.as_ref(),
                n: n.max(1),
                body: body.as_ref(),
                operation,
                steering_shared_at: shared_at.as_deref(),
            };
            print!("{}", modelgate::cli::explain(&app.snapshot(), &question));
            Ok(())
        }
        Command::Store {
            action: StoreCommand::Copy { from, to, replace },
        } => {
            use modelgate::store::copy;
            let from = Endpoint::parse(&from, "--from").map_err(anyhow::Error::msg)?;
            let to = Endpoint::parse(&to, "--to").map_err(anyhow::Error::msg)?;
            let source = copy::open(&from, false)?;
            let target = copy::open(&to, true)?;
            let done = copy::copy(source.as_ref(), target.as_ref(), replace)?;
            println!(
                "copied {} virtual models, {} API keys and {} usage rows from {} to {} (replaced {} virtual models; target revision {})",
                done.rows,
                done.keys,
                done.usage,
                from.shown(),
                to.shown(),
                done.replaced,
                done.revision
            );
            Ok(())
        }
        Command::Reload => {
            let env = src.env().map_err(anyhow::Error::msg)?;
            let Some(pid_file) = env.get("PID_FILE") else {
                anyhow::bail!(
                    "PID_FILE is not set, so the running gateway cannot be found; set PID_FILE for both, or send the signal yourself: kill -HUP <pid>"
                );
            };
            let raw = std::fs::read_to_string(pid_file)
                .with_context(|| format!("reading PID_FILE {pid_file}"))?;
            let pid: i32 = raw
                .trim()
                .parse()
                .with_context(|| format!("PID_FILE {pid_file} does not hold a pid"))?;
            let rc = std::process::Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .context("running kill")?;
            if !rc.success() {
                anyhow::bail!("could not signal pid {pid} (is modelgate running?)");
            }
            println!("sent SIGHUP to {pid}");
            Ok(())
        }
    }
}
