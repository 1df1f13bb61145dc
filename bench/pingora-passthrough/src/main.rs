//! The framework's floor: a bare Pingora reverse proxy to one upstream, with modelgate's own
//! server settings (`modelgate::server::server_conf`) and no body work, no routing, no logging.
//! modelgate's throughput and latency are compared against it.

use std::net::SocketAddr;

use async_trait::async_trait;
use clap::Parser;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::Server;

#[derive(Parser)]
#[command(about = "Bare Pingora pass-through for benchmarks (loopback only)")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9200")]
    listen: SocketAddr,
    /// The upstream every request goes to.
    #[arg(long, default_value = "127.0.0.1:9100")]
    upstream: SocketAddr,
    /// Worker threads, as MODELGATE_THREADS.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

struct PassThrough {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for PassThrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream,
            false,
            "localhost".into(),
        )))
    }
}

/// With `--features same-allocator`, the allocator modelgate ships with (the default build keeps
/// the system allocator: the framework's floor as Pingora users get it).
#[cfg(feature = "same-allocator")]
#[global_allocator]
static ALLOCATOR: modelgate::Allocator = modelgate::Allocator;

fn main() -> Result<(), String> {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() || !args.upstream.ip().is_loopback() {
        return Err("--listen and --upstream must be loopback addresses".into());
    }
    // The same settings modelgate runs with (grace period at its default of 30 s).
    let conf = modelgate::server::server_conf(args.threads, 30);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(
        &server.configuration,
        PassThrough {
            upstream: args.upstream,
        },
    );
    proxy.add_tcp(&args.listen.to_string());
    server.add_service(proxy);
    eprintln!(
        "pingora pass-through on {} -> {}",
        args.listen, args.upstream
    );
    server.run_forever()
}
