//! modelgate: a single-binary LLM gateway on Pingora. See ARCHITECTURE.md for the map.

pub mod admin;
pub mod allocator;
pub mod api_error;
pub mod app;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod fd_limit;
pub mod health;
pub mod keys;
pub mod limits;
pub mod log_sink;
pub mod metrics;
pub mod middleware;
pub mod mono_clock;
pub mod proxy;
pub mod reload;
pub mod request_body;
pub mod retire;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod translate;
pub mod usage;
pub mod wall_clock;
pub mod wire;

/// The global allocator the gateway binary installs, and the benchmarks that time its work.
///
/// glibc's allocator made a reload of 10,000 virtual models twice as slow as it needs to be:
/// hundreds of thousands of small blocks freed between phases fragment its heap, and later
/// phases then spend half their time in `malloc_consolidate` and `unlink_chunk`. mimalloc's
/// size-segregated pages do not degrade that way (`App::reload` 215 -> about 100 ms median).
/// On the request path, which allocates many small short-lived buffers (headers, bodies, JSON),
/// it cut the CPU time per proxied request by about a fifth under load (see BENCHMARKS.md).
/// Installed by each binary rather than here, so that the bare-Pingora baseline keeps its own.
pub use allocator::Allocator;
