//! # Experiments: the lab's supervisor (`lab up`) and its scenario runner
//!
//! `cargo lab …` (a cargo alias, see `.cargo/config.toml`) runs the `lab` binary of this crate.
//! Status: the command line only; `lab up` is issue #6.
