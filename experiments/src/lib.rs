//! # Experiments: the lab's supervisor (`lab up`) and, later, its scenario runner
//!
//! `cargo lab …` (a cargo alias, see `.cargo/config.toml`) runs the `lab` binary of this crate.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`up`] | `lab up`: Redis, both systems and their agents as child processes, and the live view |
//!
//! The `lab` binary holds every program of the lab (`lab child system1 …`, `lab child system2 …`,
//! `lab child agents …`), so that `cargo lab up` needs to build one binary, and its children are
//! found wherever it is.

pub mod up;
