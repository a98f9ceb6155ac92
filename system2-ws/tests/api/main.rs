//! System 2's integration tests: the real server on a free port, real WebSocket clients.
//! One test binary (faster to build), one module per concern.

mod accounting;
mod dashboards;
mod errors;
mod flows;
mod helpers;
mod limits;
mod ops;
