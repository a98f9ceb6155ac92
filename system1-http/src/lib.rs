//! # System 1: durable and decoupled
//!
//! Metrics arrive by HTTP/1.1 or HTTP/2 `POST /metrics`, are appended to a Redis Stream, consumer-group
//! workers aggregate them and write snapshots back to Redis, and a broadcaster relays their events to
//! dashboards over WebSocket (from a capped stream it can resume, or from pub/sub). Every hop is
//! durable and every role scales by running more copies of it: the lesson is what that costs in
//! latency, and what it buys.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`cli`] | what the `system1` binary does, callable by `lab up` too |
//! | [`config`] | flags and environment variables (the original's names) |
//! | [`api`] | the ingest API: `POST /metrics` → Redis Stream, `202` only once Redis has it; requests waiting during a Redis call go together in the next ([`api::commit`]: group commit); an oversize body read and discarded so its `413` is heard; the stream's cap; optional TLS ([`api::tls`]) |
//! | [`store`] | the state store: every Redis key, field, script and channel the other modules share |
//! | [`worker`] | consumer-group workers: windows rebuilt from Redis, snapshots, `metric.processed` (published and appended to the capped `processed` stream), XACK |
//! | [`worker_ops`] | the workers' ops port: the consumer group's length, pending, lag, consumers, what trimming dropped |
//! | [`broadcaster`] | the workers' events → dashboards over WebSocket: the capped `processed` stream read from the last id relayed (`--fanout stream`, default) or pub/sub (`--fanout pubsub`, the seed's); gap frames; System 2's slow-dashboard policy |

pub mod api;
pub mod broadcaster;
pub mod cli;
pub mod config;
pub mod store;
pub mod worker;
pub mod worker_ops;

/// Completes on Ctrl-C or SIGTERM (see [`lab_core::signal::shutdown`]).
pub use lab_core::signal::shutdown as shutdown_signal;
