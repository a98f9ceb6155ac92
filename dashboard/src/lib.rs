//! # Dashboard: one page that shows both systems live, latency side by side
//!
//! Status: not built yet (no issue filed for it so far).
