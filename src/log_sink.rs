//! Log output off the request path: formatted lines go through a channel to one writer thread,
//! which writes them to stderr in batches (one `write(2)` per batch instead of one per line).
//!
//! Sending a line never wakes the writer (no system call on the request path): it wakes every
//! `PERIOD` and writes what has arrived. Lines that matter at once (anything but the access log:
//! warnings, reload results, start-up) wake it immediately through `wake`. `flush` waits
//! (bounded) for everything logged so far, and runs before the process exits.
//!
//! The queue is bounded (`QUEUE_LINES`) and lossy: when the writer falls behind (stderr is a
//! pipe nobody reads fast enough), a line that finds it full is dropped and counted in
//! `dropped()` (`modelgate_log_lines_dropped_total`), and the request that logged it never waits.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Duration;

/// How long an access line may wait for the writer.
const PERIOD: Duration = Duration::from_millis(10);

/// Lines the queue holds: at one line a request, 8,192 lines are 10 ms at 800,000 requests a
/// second, far beyond what the writer drains each period; the queue fills only when the output
/// itself stalls.
pub const QUEUE_LINES: usize = 8_192;

/// Lines dropped because the queue was full, since start.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Lines dropped because the queue was full, since start (for `/metrics`).
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

static SINK: OnceLock<(SyncSender<Msg>, Thread)> = OnceLock::new();

/// Queues a line without waiting: a full queue drops it and counts the drop in `dropped`. A
/// writer thread that is gone (only at exit) drops the line rather than the request.
fn send_line(tx: &SyncSender<Msg>, line: Vec<u8>, dropped: &AtomicU64) {
    match tx.try_send(Msg::Line(line)) {
        Ok(()) | Err(TrySendError::Disconnected(_)) => {}
        Err(TrySendError::Full(_)) => {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A `Write` that hands each write to the writer thread.
pub struct ChannelWriter {
    tx: SyncSender<Msg>,
    dropped: &'static AtomicU64,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send_line(&self.tx, buf.to_vec(), self.dropped);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Starts the writer thread (once) writing to `out`, and returns a writer for the logger.
pub fn start(out: impl Write + Send + 'static) -> io::Result<ChannelWriter> {
    if let Some((tx, _)) = SINK.get() {
        return Ok(ChannelWriter {
            tx: tx.clone(),
            dropped: &DROPPED,
        });
    }
    let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
    let handle = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_loop(rx, io::BufWriter::with_capacity(64 * 1024, out), PERIOD))?;
    let (tx, _) = SINK.get_or_init(|| (tx, handle.thread().clone()));
    Ok(ChannelWriter {
        tx: tx.clone(),
        dropped: &DROPPED,
    })
}

/// Has the writer write what it holds now rather than at its next period.
pub fn wake() {
    if let Some((_, writer)) = SINK.get() {
        writer.unpark();
    }
}

fn write_loop(rx: Receiver<Msg>, mut out: impl Write, period: Duration) {
    loop {
        std::thread::park_timeout(period);
        let mut wrote = false;
        loop {
            match rx.try_recv() {
                Ok(Msg::Line(line)) => {
                    let _ = out.write_all(&line);
                    wrote = true;
                }
                Ok(Msg::Flush(ack)) => {
                    let _ = out.flush();
                    let _ = ack.send(());
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        if wrote {
            let _ = out.flush();
        }
    }
}

/// Waits until every line logged so far is written (at most one second).
pub fn flush() {
    let Some((tx, writer)) = SINK.get() else {
        return;
    };
    let (ack_tx, ack_rx) = mpsc::sync_channel(1);
    // Off the request path (exit, logger flush): a full queue is drained within a period, so
    // this may wait for room, as the acknowledgement below waits (at most a second).
    writer.unpark();
    if tx.send(Msg::Flush(ack_tx)).is_ok() {
        writer.unpark();
        let _ = ack_rx.recv_timeout(Duration::from_secs(1));
    }
}

/// The target of access lines.
pub const ACCESS: &str = "access";

/// The process's logger: env_logger's filter and format, writing through the sink, waking the
/// writer for every line that is not an access line.
///
/// Access lines (one per request) skip env_logger's formatter: they are written here, in the
/// same layout (`[<time> INFO  access] <line>`, or the bare line in JSON mode), with the
/// timestamp formatted once per second instead of once per line.
pub struct Logger {
    inner: env_logger::Logger,
    json: bool,
}

impl Logger {
    /// `json`: access lines are JSON documents and go out without the text prefix.
    pub fn new(inner: env_logger::Logger, json: bool) -> Logger {
        JSON_ACCESS.store(json, std::sync::atomic::Ordering::Relaxed);
        Logger { inner, json }
    }
}

/// The installed `Logger`'s `json`.
static JSON_ACCESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Logs one access line that `body` writes (without the newline), when access lines are
/// enabled. With the sink running, the line is laid out here and handed to the writer
/// directly: one buffer, no trip through `log`'s formatting. Otherwise it goes through `log`.
pub fn access(body: impl FnOnce(&mut String)) {
    if !log::log_enabled!(target: ACCESS, log::Level::Info) {
        return;
    }
    match SINK.get() {
        Some((tx, _)) => {
            // Room for the prefix and a text line with long names, without a regrowth.
            let mut line = String::with_capacity(384);
            if !JSON_ACCESS.load(std::sync::atomic::Ordering::Relaxed) {
                push_prefix(&mut line);
            }
            body(&mut line);
            line.push('\n');
            send_line(tx, line.into_bytes(), &DROPPED);
        }
        None => {
            let mut line = String::new();
            body(&mut line);
            log::info!(target: ACCESS, "{line}");
        }
    }
}

/// `[<time> INFO  access] `, as env_logger's default format starts an access line.
fn push_prefix(line: &mut String) {
    line.push('[');
    push_timestamp(line);
    line.push_str(" INFO  ");
    line.push_str(ACCESS);
    line.push_str("] ");
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if !self.inner.matches(record) {
            return;
        }
        if record.target() == ACCESS {
            if let Some((tx, _)) = SINK.get() {
                send_line(tx, access_line(self.json, record), &DROPPED);
                return;
            }
        }
        self.inner.log(record);
        if record.target() != ACCESS {
            wake();
        }
    }

    fn flush(&self) {
        flush();
    }
}

/// One access line, laid out as env_logger's default format lays it out.
fn access_line(json: bool, record: &log::Record) -> Vec<u8> {
    let mut line = String::with_capacity(256);
    if !json {
        line.push('[');
        push_timestamp(&mut line);
        let level = record.level().as_str();
        line.push(' ');
        line.push_str(level);
        line.extend(std::iter::repeat_n(' ', 5usize.saturating_sub(level.len())));
        line.push(' ');
        line.push_str(record.target());
        line.push_str("] ");
    }
    let _ = std::fmt::Write::write_fmt(&mut line, format_args!("{}", record.args()));
    line.push('\n');
    line.into_bytes()
}

/// Appends the current time as RFC 3339 in whole seconds, UTC (`2026-01-02T03:04:05Z`), as
/// env_logger writes it. Formatted once per second per thread.
fn push_timestamp(out: &mut String) {
    use std::cell::RefCell;
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let secs = crate::wall_clock::now_secs();
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != secs {
            text.clear();
            if let Ok(ts) = jiff::Timestamp::from_second(secs as i64) {
                let _ = std::fmt::Write::write_fmt(text, format_args!("{ts:.0}"));
            }
            *at = secs;
        }
        out.push_str(text);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// An access line from env_logger's own formatter, for comparison.
    fn env_logger_line(args: std::fmt::Arguments<'_>) -> Vec<u8> {
        let out = Shared::default();
        let logger = env_logger::Builder::new()
            .parse_filters("info")
            .target(env_logger::Target::Pipe(Box::new(out.clone())))
            .build();
        log::Log::log(
            &logger,
            &log::Record::builder()
                .args(args)
                .target(ACCESS)
                .level(log::Level::Info)
                .build(),
        );
        let line = out.0.lock().expect("lock").clone();
        line
    }

    #[test]
    fn the_direct_access_prefix_is_the_logged_one() {
        // Bounded: the two lines can straddle a second boundary, never three times in a row.
        let same = (0..3).any(|_| {
            let mut direct = String::new();
            push_prefix(&mut direct);
            direct.push_str("mg-1 /v1/chat/completions status=200\n");
            let logged = access_line(
                false,
                &log::Record::builder()
                    .args(format_args!("mg-1 /v1/chat/completions status=200"))
                    .target(ACCESS)
                    .level(log::Level::Info)
                    .build(),
            );
            direct.into_bytes() == logged
        });
        assert!(same);
    }

    /// A text line's timestamp (after `[`, up to the first space) and the rest of the line.
    fn split_time(line: &[u8]) -> (jiff::Timestamp, String) {
        let text = String::from_utf8(line.to_vec()).expect("utf-8");
        let body = text.strip_prefix('[').expect("starts with [");
        let (ts, rest) = body.split_once(' ').expect("a space after the time");
        (ts.parse().expect("an RFC 3339 time"), rest.to_string())
    }

    #[test]
    fn access_lines_match_env_logger_default_format() {
        let ours = access_line(
            false,
            &log::Record::builder()
                .args(format_args!("mg-1 /v1/chat/completions status={}", 200))
                .target(ACCESS)
                .level(log::Level::Info)
                .build(),
        );
        let theirs = env_logger_line(format_args!("mg-1 /v1/chat/completions status={}", 200));
        // The same line but for the time, which our coarse clock may put one tick (and so,
        // at a second boundary, one second) behind env_logger's precise one.
        let ((our_time, our_rest), (their_time, their_rest)) =
            (split_time(&ours), split_time(&theirs));
        assert_eq!(our_rest, their_rest);
        assert_eq!(ours.len(), theirs.len(), "{ours:?} vs {theirs:?}");
        let apart = their_time.as_second() - our_time.as_second();
        assert!((0..=1).contains(&apart), "{ours:?} vs {theirs:?}");
        let json = access_line(
            true,
            &log::Record::builder()
                .args(format_args!("{{\"status\":200}}"))
                .target(ACCESS)
                .level(log::Level::Info)
                .build(),
        );
        assert_eq!(json, b"{\"status\":200}\n");
    }

    #[test]
    fn lines_arrive_whole_and_in_order_and_flush_waits_for_them() {
        static DROPS: AtomicU64 = AtomicU64::new(0);
        let out = Shared::default();
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        let seen = out.clone();
        let writer = std::thread::spawn(move || write_loop(rx, out, Duration::from_millis(1)));
        let mut w = ChannelWriter {
            tx: tx.clone(),
            dropped: &DROPS,
        };
        for i in 0..1000 {
            w.write_all(format!("line {i}\n").as_bytes())
                .expect("write");
        }
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        tx.send(Msg::Flush(ack_tx)).expect("send");
        writer.thread().unpark();
        ack_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("flushed");
        let text = String::from_utf8(seen.0.lock().expect("lock").clone()).expect("utf8");
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
        drop((w, tx));
        writer
            .join()
            .expect("writer ends when every sender is gone");
    }

    #[test]
    fn a_full_queue_drops_lines_counts_them_and_never_blocks() {
        static DROPS: AtomicU64 = AtomicU64::new(0);
        let out = Shared::default();
        let seen = out.clone();
        // A queue of 4 and a writer that is not running yet: the sender must not wait.
        let (tx, rx) = mpsc::sync_channel(4);
        let mut w = ChannelWriter {
            tx: tx.clone(),
            dropped: &DROPS,
        };
        for i in 0..10 {
            w.write_all(format!("line {i}\n").as_bytes())
                .expect("write");
        }
        assert_eq!(DROPS.load(Ordering::Relaxed), 6);
        // The writer then writes the four that fit, the oldest, in order.
        let writer = std::thread::spawn(move || write_loop(rx, out, Duration::from_millis(1)));
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        tx.send(Msg::Flush(ack_tx)).expect("send");
        writer.thread().unpark();
        ack_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("flushed");
        let text = String::from_utf8(seen.0.lock().expect("lock").clone()).expect("utf8");
        assert_eq!(text, "line 0\nline 1\nline 2\nline 3\n");
        // Room again: nothing more is dropped.
        w.write_all(b"line 10\n").expect("write");
        assert_eq!(DROPS.load(Ordering::Relaxed), 6);
        drop((w, tx));
        writer.join().expect("writer ends");
    }
}
