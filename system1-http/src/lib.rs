//! # System 1: durable and decoupled
//!
//! Metrics arrive by HTTP/1.1 or HTTP/2 `POST /metrics`, are appended to a Redis Stream, consumer-group
//! workers aggregate them and write snapshots back to Redis, and a broadcaster relays Redis pub/sub
//! events to dashboards over WebSocket. Every hop is durable and every role scales by running more
//! copies of it: the lesson is what that costs in latency, and what it buys.
//!
//! Status: configuration only; the pipeline is issue #4.

pub mod config;
