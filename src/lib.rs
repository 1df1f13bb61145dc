//! modelgate: a single-binary LLM gateway on Pingora. See ARCHITECTURE.md for the map.

pub mod admin;
pub mod app;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod retire;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod translate;
