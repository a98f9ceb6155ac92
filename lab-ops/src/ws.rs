//! What both systems' WebSocket servers share on axum's side.
//!
//! [`Outbox`]: a dashboard's outbox of axum's reference-counted `Utf8Bytes` frames, so that one update
//! sent to a hundred dashboards copies no bytes.

use axum::extract::ws::Utf8Bytes;

/// A dashboard's outbox ([`lab_core::outbox`]) of WebSocket text frames, shared by reference count.
pub type Outbox = lab_core::outbox::Outbox<Utf8Bytes>;
