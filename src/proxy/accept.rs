//! The client-facing listener: accepts connections and serves each as one task.
//!
//! Pingora's listening service spawns each connection as a task whose future must also hold its
//! TLS handshake (8.8 KiB, copied whole into the task, so every page of it is resident), and
//! boxes the application's future apart from it. This plain-TCP HTTP/1.1 listener has no
//! handshake: a connection's task here is the connection's own future and nothing else
//! (BENCHMARKS.md, "One task per connection").
//!
//! The loop stops accepting when the server begins to shut down; connections already open drain
//! on the same signal (`proxy::connection`). When the process runs out of file descriptors,
//! accepting pauses briefly instead of spinning on the error, and the connections already open
//! are served on.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::l4::listener::Listener;
use pingora::protocols::Stream;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;

use super::client_socket::ClientSocket;
use super::Gateway;
use crate::server::CLIENT_WRITE_BUFFER;

/// Connections the kernel queues for accepting (capped by `net.core.somaxconn`), as Pingora's
/// listener asks.
const BACKLOG: i32 = 65_535;

/// How long accepting pauses when the process has no descriptor left for a new connection: an
/// open connection may close meanwhile, and the queued ones wait in the kernel's backlog.
const OUT_OF_DESCRIPTORS_PAUSE: Duration = Duration::from_millis(100);

/// A bound listening socket, ready for `Accepting` to serve.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // A restarted gateway binds again while the last one's connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The gateway's listening service: one accept loop on `listener`.
pub struct Accepting {
    listener: Option<std::net::TcpListener>,
    gateway: Arc<Gateway>,
}

impl Accepting {
    pub fn new(listener: std::net::TcpListener, gateway: Arc<Gateway>) -> Self {
        Accepting {
            listener: Some(listener),
            gateway,
        }
    }
}

#[async_trait]
impl Service for Accepting {
    /// Runs on the service's runtime until the server shuts down. `_fds` are a graceful
    /// upgrade's inherited sockets, which this gateway does not take (README, "Reload, shutdown and observability").
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let Some(std_listener) = self.listener.take() else {
            return;
        };
        let listener = match tokio::net::TcpListener::from_std(std_listener) {
            Ok(l) => Listener::from(l),
            Err(e) => {
                log::error!("cannot accept connections: {e}");
                return;
            }
        };
        // Set while the process is out of descriptors, so that the pause is logged once.
        let mut starved = false;
        loop {
            let accepted = tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                    continue;
                }
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok(mut stream) => {
                    starved = false;
                    if let Err(e) = stream.set_nodelay() {
                        log::debug!("a new connection: {e}");
                    }
                    let socket = Box::new(ClientSocket::new(stream, CLIENT_WRITE_BUFFER));
                    tokio::spawn(connection_task(
                        self.gateway.clone(),
                        socket,
                        shutdown.clone(),
                    ));
                }
                Err(e) if out_of_descriptors(&e) => {
                    if !starved {
                        log::warn!(
                            "cannot accept connections: {e}; retrying every {} ms while the \
                             open ones are served (raise the open-files limit, `ulimit -n`)",
                            OUT_OF_DESCRIPTORS_PAUSE.as_millis()
                        );
                        starved = true;
                    }
                    tokio::time::sleep(OUT_OF_DESCRIPTORS_PAUSE).await;
                }
                // A connection reset before it was accepted, and the like: only that one is lost.
                Err(e) => log::debug!("accept: {e}"),
            }
        }
        log::info!("stopped accepting connections");
    }

    fn name(&self) -> &str {
        "modelgate"
    }
}

/// The task serving one accepted connection: the connection's future and the three values it
/// borrows, nothing else (`future_sizes` holds its size).
pub async fn connection_task(gateway: Arc<Gateway>, stream: Stream, shutdown: ShutdownWatch) {
    gateway.connection(stream, &shutdown).await;
}

/// The process (EMFILE) or the system (ENFILE) has no file descriptor left.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}
