//! # lab-ops: the server plumbing both systems share
//!
//! Every server of the lab (System 1's API, broadcaster and workers' ops port, System 2, the dashboard)
//! binds a port, answers health checks, serves a Prometheus page and counts what goes wrong. Written once
//! each, here, so that a student comparing the two systems finds their difference — the transport and
//! the state store — and not four spellings of the same chores.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`listen`](mod@listen) | binding a port, with the one error message that says which flag changes it |
//! | [`http`] | the health answer (200 or 503 with a JSON body) and the Prometheus page (`GET /metrics`) |
//! | [`noted`] | a counter that also logs, in one call, rate-limited: what is counted is never silent |
//! | [`ws`] | axum's WebSocket as [`lab_core::delivery`]'s message stream and sink, and the `Outbox` of its frames |
//!
//! **Why a crate of its own, and not a feature of lab-core.** lab-core is what both systems *mean*: the
//! messages, the rules, the windows, the outbox and the delivery loop. It stays free of any web
//! framework, so that it reads (and tests) as plain Rust, and so that the agents and the fuzz target
//! build it without axum. What is left here is how two axum servers expose that meaning to a network;
//! an optional `axum` feature of lab-core would have put the same code behind a `cfg`, where readers
//! and `cargo doc` see it only half of the time.

pub mod http;
pub mod listen;
pub mod noted;
pub mod ws;

pub use listen::{ListenError, listen};
pub use noted::Noted;
