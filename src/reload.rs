//! What triggers a reload: changes to the config file (its directory is watched, so editors'
//! rename-over saves and Kubernetes ConfigMap symlink swaps are seen) and SIGHUP.
//!
//! Bursts of file events are debounced into one reload. A reload that fails keeps the last good
//! snapshot (see `App::reload`); nothing here decides what a valid config is.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};

use crate::app::App;

/// Quiet time after the last file event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Starts a thread that reloads on SIGHUP. Installed before the server runs, so an early
/// SIGHUP never takes the process down.
pub fn on_sighup(app: Arc<App>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new()
        .name("sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                log::info!("SIGHUP received: reloading the config");
                // A failure is logged (with file, entry and field) by App::reload.
                if app.reload().is_ok() {
                    log::info!("config reloaded");
                }
            }
        })?;
    Ok(())
}

/// Watches the config file's directory and reloads on relevant changes. The returned watcher
/// must be kept alive.
pub fn watch_file(app: Arc<App>, path: &Path) -> notify::Result<notify::RecommendedWatcher> {
    let file: PathBuf = path.to_path_buf();
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file.file_name().map(|n| n.to_os_string());
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        // Our own reads show up as access events: only changes count.
        if !matches!(
            ev.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        ) {
            return;
        }
        let relevant = ev.paths.iter().any(|p| {
            let n = p.file_name();
            n == name.as_deref() || n.is_some_and(|n| n.to_string_lossy().starts_with("..data"))
        });
        if relevant {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    std::thread::Builder::new()
        .name("config-watch".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                // Debounce: wait until events stop for a moment.
                while rx.recv_timeout(DEBOUNCE).is_ok() {}
                if !file.exists() {
                    // Mid-swap (rename-over): the next event brings the new file.
                    continue;
                }
                log::info!("config file changed: reloading");
                // A failure is logged (with file, entry and field) by App::reload.
                if app.reload().is_ok() {
                    log::info!("config reloaded");
                }
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(watcher)
}
