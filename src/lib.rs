//! modelgate: a single-binary LLM gateway on Pingora. See ARCHITECTURE.md for the map.

pub mod catalog;
pub mod config;
pub mod health;
pub mod routing;
pub mod snapshot;
pub mod app;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod cli;
