//! The pure routing core: virtual model table, resolution and strategies.
//!
//! It imports nothing from the proxy, the admin API, the store or Pingora, does no I/O and reads
//! no clock: callers pass observed state in through `plan::Conditions`.

pub mod error_class;
pub mod fallback;
pub mod model;
pub mod plan;
pub mod schedule;
pub mod table;
pub mod user_path;

#[cfg(test)]
mod tests;
