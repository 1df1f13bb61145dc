//! Assembles and runs the Pingora server: the proxy service, the catalog refresher, the shared
//! steering rounds, signal handling and graceful shutdown.
//!
//! SIGTERM stops accepting, lets in-flight requests and streams finish within the grace period
//! and exits 0 as soon as nothing is in flight. SIGINT exits at once. SIGHUP reloads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};

use crate::app::App;
use crate::catalog::discovery;
use crate::proxy::{accept, Gateway};

/// Requests in flight (a `Ctx` alive), for draining on SIGTERM.
pub static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Runs until a termination signal. `listen` is an `ADDR:PORT`.
pub fn run(app: Arc<App>, listen: &str) -> anyhow::Result<()> {
    let snap = app.snapshot();
    let settings = &snap.settings;
    let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
        anyhow::anyhow!("--listen {listen:?} is not an ADDR:PORT such as 0.0.0.0:8080")
    })?;
    // Bound here, so that a taken or forbidden address fails with a clear message at once.
    let listening =
        accept::bind(addr).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;

    let conf = server_conf(settings.threads, settings.grace_period_s);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    // The gateway is the HTTP application itself (`proxy::connection`), not a hook set of
    // Pingora's proxy framework, and it accepts its connections itself (`proxy::accept`).
    let gateway = Arc::new(Gateway::new(
        app.clone(),
        Arc::new(crate::metrics::Metrics::default()),
    ));
    server.add_service(accept::Accepting::new(listening, gateway));
    server.add_service(background_service(
        "catalog refresh",
        CatalogRefresher { app: app.clone() },
    ));
    server.add_service(background_service(
        "steering sync",
        SteerSharing { app: app.clone() },
    ));
    if let Some(pid_file) = &settings.pid_file {
        std::fs::write(pid_file, std::process::id().to_string())
            .map_err(|e| anyhow::anyhow!("cannot write PID_FILE {pid_file}: {e}"))?;
        let _ = PID_FILE.set(pid_file.clone());
    }
    log::info!("modelgate listening on {addr}");
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            grace: Duration::from_secs(settings.grace_period_s),
        }),
    });
    remove_pid_file();
    Ok(())
}

/// Bytes the client connection's write buffer holds before a write goes out. Pingora's 1,460
/// (one packet) splits a typical non-stream answer (header and a few KiB of JSON, sent with its
/// Content-Length and flushed once at its end) into two or three writes; 16 KiB sends it in one.
/// Streams flush every event whatever the size.
pub const CLIENT_WRITE_BUFFER: usize = 16 * 1024;

/// The `PID_FILE` this process wrote, removed on every way out so that `modelgate reload`
/// never signals a stale pid.
static PID_FILE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn remove_pid_file() {
    if let Some(pid_file) = PID_FILE.get() {
        let _ = std::fs::remove_file(pid_file);
    }
}

/// The Pingora server settings. Public so that the benchmark's bare Pingora pass-through runs
/// with exactly the same ones.
pub fn server_conf(threads: usize, grace_period_s: u64) -> ServerConf {
    let tmp = std::env::temp_dir();
    ServerConf {
        threads,
        grace_period_seconds: Some(grace_period_s),
        graceful_shutdown_timeout_seconds: Some(1),
        // Timeouts of a second or more (upstream reads, the pool's idle watch) on tokio's timer
        // wheel instead of Pingora's shared 10 ms timer map: a cancelled tokio timer leaves the
        // wheel at once, where Pingora keeps it until its deadline, and under load the proxy
        // spent about 3% less user time per request (BENCHMARKS.md).
        fast_timeout_to_tokio_threshold_seconds: Some(0),
        pid_file: tmp
            .join(format!("modelgate-{}.pid", std::process::id()))
            .display()
            .to_string(),
        upgrade_sock: tmp
            .join(format!("modelgate-{}.sock", std::process::id()))
            .display()
            .to_string(),
        ..ServerConf::default()
    }
}

/// SIGTERM: graceful, with an early exit once drained; SIGINT: fast; SIGQUIT: upgrade.
struct Signals {
    grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            log::error!("cannot install signal handlers; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => {
                log::info!("SIGTERM: draining in-flight requests (grace period {}s)", self.grace.as_secs());
                exit_when_drained(self.grace);
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
        }
    }
}

/// Exits 0 as soon as no request is in flight (Pingora alone would wait the whole grace period).
fn exit_when_drained(grace: Duration) {
    let _ = std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || {
            let start = std::time::Instant::now();
            // Let the listeners stop first.
            std::thread::sleep(Duration::from_millis(100));
            while start.elapsed() < grace {
                if IN_FLIGHT.load(Ordering::Acquire) == 0 {
                    log::info!("drained; exiting");
                    remove_pid_file();
                    crate::log_sink::flush();
                    std::process::exit(0);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
}

/// Fetches provider catalogs at start-up, every `CACHE_REFRESH_INTERVAL`, and after a reload.
struct CatalogRefresher {
    app: Arc<App>,
}

#[async_trait]
impl BackgroundService for CatalogRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut everything = true;
        loop {
            let snap = self.app.snapshot();
            // On a timer every provider is refreshed; after a reload only the ones never fetched.
            let tasks: Vec<_> = snap
                .providers
                .iter()
                .filter(|p| everything || p.state.discovered.load().refreshed_at_ms.is_none())
                .map(|p| tokio::spawn(discovery::refresh(p.config.clone(), p.state.clone())))
                .collect();
            for t in tasks {
                let _ = t.await;
            }
            let interval = Duration::from_secs(snap.settings.cache_refresh_interval_s);
            drop(snap);
            tokio::select! {
                _ = tokio::time::sleep(interval) => everything = true,
                _ = self.app.refresh_wakeup.notified() => everything = false,
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Shares rate-limit steering through Redis every `steer_sync::INTERVAL` while `REDIS_URL` is
/// set (read again each round, so a reload that sets or clears it takes effect).
struct SteerSharing {
    app: Arc<App>,
}

#[async_trait]
impl BackgroundService for SteerSharing {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(crate::health::steer_sync::INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if let Some(shared) = self.app.limiter.shared() {
                self.app.health.share_steering(&shared).await;
            }
        }
    }
}
