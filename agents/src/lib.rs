//! # Agents: the lab's metric sources and its measuring instrument
//!
//! Status: configuration only; the load generator is issue #5.

pub mod config;
