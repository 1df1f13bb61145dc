//! Log output off the request path: formatted lines go through a channel to one writer thread,
//! which writes them to stderr in batches (one `write(2)` per burst instead of one per line).
//!
//! A line is on its way to stderr as soon as it is logged; the writer flushes whenever the
//! channel runs empty, so an idle gateway's log is always current. `flush` waits (bounded) for
//! everything logged so far, and runs before the process exits.

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::OnceLock;
use std::time::Duration;

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

static SINK: OnceLock<Sender<Msg>> = OnceLock::new();

/// A `Write` that hands each write to the writer thread.
pub struct ChannelWriter {
    tx: Sender<Msg>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A writer thread that is gone (only at exit) drops the line rather than the request.
        let _ = self.tx.send(Msg::Line(buf.to_vec()));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Starts the writer thread (once) writing to `out`, and returns a writer for the logger.
pub fn start(out: impl Write + Send + 'static) -> io::Result<ChannelWriter> {
    if let Some(tx) = SINK.get() {
        return Ok(ChannelWriter { tx: tx.clone() });
    }
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_loop(rx, io::BufWriter::with_capacity(64 * 1024, out)))?;
    let tx = SINK.get_or_init(|| tx).clone();
    Ok(ChannelWriter { tx })
}

fn write_loop(rx: Receiver<Msg>, mut out: impl Write) {
    let handle = |m: Msg, out: &mut dyn Write| match m {
        Msg::Line(line) => {
            let _ = out.write_all(&line);
        }
        Msg::Flush(ack) => {
            let _ = out.flush();
            let _ = ack.send(());
        }
    };
    while let Ok(first) = rx.recv() {
        handle(first, &mut out);
        while let Ok(m) = rx.try_recv() {
            handle(m, &mut out);
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

/// Waits until every line logged so far is written (at most one second).
pub fn flush() {
    let Some(tx) = SINK.get() else { return };
    let (ack_tx, ack_rx) = mpsc::sync_channel(1);
    if tx.send(Msg::Flush(ack_tx)).is_ok() {
        let _ = ack_rx.recv_timeout(Duration::from_secs(1));
    }
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

    #[test]
    fn lines_arrive_whole_and_in_order_and_flush_waits_for_them() {
        let out = Shared::default();
        let (tx, rx) = mpsc::channel();
        let seen = out.clone();
        let writer = std::thread::spawn(move || write_loop(rx, out));
        let mut w = ChannelWriter { tx: tx.clone() };
        for i in 0..1000 {
            w.write_all(format!("line {i}\n").as_bytes())
                .expect("write");
        }
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        tx.send(Msg::Flush(ack_tx)).expect("send");
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
}
