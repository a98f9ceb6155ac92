//! # System 2: fast and ephemeral
//!
//! Metrics arrive over WebSocket, are aggregated in memory in per-server sliding windows, and the
//! derived metrics go straight back out to dashboards over the same kind of socket. No broker, no
//! disk: the lesson is how fast that is, and what is lost when the process dies.
//!
//! Status: configuration only; the server is issue #3.

pub mod config;
