//! Every message of the lab's wire protocol (`docs/protocol.md`), as serde types.
//!
//! - [`system1`]: System 1's HTTP bodies, its Redis stream entries and pub/sub events, and its
//!   dashboard WebSocket messages (port 4002);
//! - [`system2`]: System 2's WebSocket frames (port 4100), both directions;
//! - [`close`]: the close codes and reasons both systems' WebSockets use;
//! - [`gap`]: the `gap` frame both systems send when a dashboard missed something.
//!
//! Types a server *sends* derive both `Serialize` and `Deserialize`, so the agents, the dashboard and
//! the tests read them with the very types the servers write them with. Types a server *receives*
//! are parsed through [`crate::parse`], which adds size limits and complete error reports.

pub mod close;
pub mod gap;
pub mod system1;
pub mod system2;
