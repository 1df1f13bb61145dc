//! A client connection's socket as Pingora's HTTP session takes it: Pingora's TCP stream (which
//! keeps the peer's address and the connection's timings) under a write buffer of
//! `server::CLIENT_WRITE_BUFFER` bytes.
//!
//! Pingora sizes that buffer in its own accept loop, which the gateway does not run
//! (`proxy::accept`). Without it, an answer's header and its body leave in two writes, and two
//! packets with `TCP_NODELAY`. Reads are not buffered: a request's header is read into Pingora's
//! header buffer and its body into its body buffer, one system call each. (A read buffer under
//! them only copied the bytes twice, and Pingora's 64 KiB one, zeroed when made, was 64 KiB of
//! memory per open connection; BENCHMARKS.md, "Open streams".)

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};

/// An accepted client connection: Pingora's stream with a write buffer.
#[derive(Debug)]
pub struct ClientSocket(BufWriter<TcpStream>);

impl ClientSocket {
    /// `stream` with a write buffer of `capacity` bytes.
    pub fn new(stream: TcpStream, capacity: usize) -> Self {
        ClientSocket(BufWriter::with_capacity(capacity, stream))
    }
}

impl AsyncRead for ClientSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.0.get_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for ClientSocket {
    /// What is buffered goes out, then the write side closes.
    async fn shutdown(&mut self) {
        if let Err(e) = AsyncWriteExt::shutdown(&mut self.0).await {
            log::debug!("closing a client connection: {e}");
        }
    }
}

impl UniqueID for ClientSocket {
    fn id(&self) -> UniqueIDType {
        self.0.get_ref().id()
    }
}

impl Ssl for ClientSocket {}

impl GetTimingDigest for ClientSocket {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.0.get_ref().get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.0.get_ref().get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.0.get_ref().get_write_pending_time()
    }
}

impl GetProxyDigest for ClientSocket {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.0.get_ref().get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.0.get_mut().set_proxy_digest(digest);
    }
}

impl GetSocketDigest for ClientSocket {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.0.get_ref().get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.0.get_mut().set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for ClientSocket {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        // Reads are not buffered here: the stream peeks and rewinds them itself.
        self.0.get_mut().try_peek(buf).await
    }
}
