//! Separate first-byte and idle bounds for one upstream attempt.
//!
//! Pingora gives an upstream connection a single per-read timeout, fixed when the peer is chosen,
//! so it cannot tell "waiting for the answer to start" from "waiting between two stream chunks".
//! The proxy sets that timeout to the larger of the provider's `first_byte_ms` and `idle_ms`, and
//! when the two differ a `ReadWatch` enforces the smaller one: a timer task that, once the current
//! deadline passes with no progress, shuts the upstream socket down. Pingora's pending read then
//! ends, the attempt fails like a timed-out one (retried and fallen back before the first byte;
//! the stream cut after it), and the upstream sees the connection close, so it stops generating.
//!
//! Phases: from the connection until the response header, `first_byte`; after that every
//! received chunk re-arms the deadline to `idle`. The end of the body, a new attempt or the end of
//! the request disarms it.
//!
//! Upstream connections speak HTTP/1.1 (peers offer no h2), so a connection carries one request
//! at a time and cutting it touches this attempt only.
//!
//! The watch holds its own duplicate of the socket's descriptor, taken out exactly once (by the
//! timer when it fires, or by disarming), so it can never act on a descriptor number the process
//! has since reused for another connection, and it never keeps a closed connection open past the
//! end of the request.

use std::net::{Shutdown, TcpStream};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;

struct Shared {
    /// The time origin of `deadline_us`.
    origin: Instant,
    /// Microseconds after `origin` when the current phase expires.
    deadline_us: AtomicU64,
    /// The duplicate descriptor: `None` once disarmed or fired.
    socket: ArcSwapOption<TcpStream>,
    fired: AtomicBool,
    /// Wakes the timer when the deadline moves earlier than the one it sleeps towards.
    wake: Notify,
}

impl Shared {
    fn arm(&self, bound: Duration) {
        let at = self.origin.elapsed() + bound;
        self.deadline_us
            .store(at.as_micros() as u64, Ordering::Release);
    }

    fn deadline(&self) -> Instant {
        self.origin + Duration::from_micros(self.deadline_us.load(Ordering::Acquire))
    }

    /// Takes the descriptor out; whoever gets it decides what happens to the connection.
    fn take(&self) -> Option<Arc<TcpStream>> {
        self.socket.swap(None)
    }
}

/// One attempt's watch; disarms itself when dropped.
pub struct ReadWatch {
    shared: Arc<Shared>,
    idle: Duration,
    /// The idle bound is the shorter one: entering the idle phase must wake the timer.
    shortens: bool,
    idle_phase: AtomicBool,
}

impl ReadWatch {
    /// Starts watching the connection `fd` (still owned by Pingora) with `first_byte` as the
    /// first deadline. `None` when the descriptor cannot be duplicated (then only Pingora's own
    /// timeout applies).
    pub fn start(fd: RawFd, first_byte: Duration, idle: Duration) -> Option<ReadWatch> {
        // SAFETY: `fd` is the live upstream socket Pingora handed to `connected_to_upstream`; it
        // stays open for the whole call, and we only borrow it long enough to duplicate it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let owned = borrowed.try_clone_to_owned().ok()?;
        let shared = Arc::new(Shared {
            origin: Instant::now(),
            deadline_us: AtomicU64::new(0),
            socket: ArcSwapOption::from_pointee(TcpStream::from(owned)),
            fired: AtomicBool::new(false),
            wake: Notify::new(),
        });
        shared.arm(first_byte);
        tokio::spawn(watch(shared.clone()));
        Some(ReadWatch {
            shared,
            idle,
            shortens: idle < first_byte,
            idle_phase: AtomicBool::new(false),
        })
    }

    /// The upstream made progress (the header or a body chunk arrived): the idle bound applies.
    pub fn progress(&self) {
        self.shared.arm(self.idle);
        if self.shortens && !self.idle_phase.swap(true, Ordering::AcqRel) {
            self.shared.wake.notify_one();
        }
    }

    /// Whether the watch cut the connection because a deadline passed.
    pub fn fired(&self) -> bool {
        self.shared.fired.load(Ordering::Acquire)
    }

    /// Stops watching; the connection is left as it is.
    pub fn disarm(&self) {
        drop(self.shared.take());
    }
}

impl Drop for ReadWatch {
    fn drop(&mut self) {
        self.disarm();
    }
}

async fn watch(shared: Arc<Shared>) {
    loop {
        let deadline = shared.deadline();
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => {}
            _ = shared.wake.notified() => continue,
        }
        if shared.socket.load().is_none() {
            return; // disarmed
        }
        if Instant::now() < shared.deadline() {
            continue; // progress moved the deadline while we slept
        }
        if let Some(socket) = shared.take() {
            shared.fired.store(true, Ordering::Release);
            // The descriptor is our own duplicate, so this acts on the watched connection and
            // nothing else. An error here means the connection is already gone.
            let _ = socket.shutdown(Shutdown::Both);
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (client, server)
    }

    /// A blocking read on a connection whose peer never writes: it would block for ever unless
    /// the watch shuts the socket down, which ends it with EOF (0 bytes).
    async fn read_until_cut(mut client: TcpStream) -> usize {
        let mut buf = [0u8; 8];
        tokio::task::spawn_blocking(move || client.read(&mut buf))
            .await
            .expect("join")
            .expect("read")
    }

    #[tokio::test]
    async fn a_silent_upstream_is_cut_after_the_first_byte_bound() {
        let (client, _server) = pair();
        let watch = ReadWatch::start(
            client.as_raw_fd(),
            Duration::from_millis(20),
            Duration::from_secs(60),
        )
        .expect("watch");
        assert_eq!(read_until_cut(client).await, 0);
        assert!(watch.fired());
    }

    #[tokio::test]
    async fn progress_switches_to_the_idle_bound() {
        let (client, _server) = pair();
        let watch = ReadWatch::start(
            client.as_raw_fd(),
            Duration::from_secs(60),
            Duration::from_millis(20),
        )
        .expect("watch");
        watch.progress();
        assert_eq!(read_until_cut(client).await, 0);
        assert!(watch.fired());
    }

    #[tokio::test]
    async fn a_disarmed_watch_leaves_the_connection_alone() {
        let (mut client, mut server) = pair();
        let watch = ReadWatch::start(
            client.as_raw_fd(),
            Duration::from_millis(5),
            Duration::from_millis(5),
        )
        .expect("watch");
        watch.disarm();
        // Well past the deadline the timer has woken, found nothing to do and ended.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!watch.fired());
        server.write_all(b"ok").expect("write");
        let mut buf = [0u8; 2];
        client.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"ok");
    }
}
