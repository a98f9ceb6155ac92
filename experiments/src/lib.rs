//! # Experiments: the lab's supervisor (`lab up`) and its scenario runner (`lab run`)
//!
//! `cargo lab …` (a cargo alias, see `.cargo/config.toml`) runs the `lab` binary of this crate.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`up`] | `lab up`: Redis, both systems and their agents as child processes, and the live view |
//! | [`scenario`] | scenario files (TOML): parsing, checking, the built-in scenarios |
//! | [`run`] | `lab run`: one `lab up` per step, the progress bar, the raw data |
//! | [`env`](mod@env) | `env.json`: machine, versions, commit, load average |
//! | [`report`] | `report.md`, `report.html`, plots (SVG), `figures.csv`, `.hgrm` files |
//! | [`compare`] | `lab compare A B` |
//!
//! The `lab` binary holds every program of the lab (`lab child system1 …`, `lab child system2 …`,
//! `lab child agents …`), so that `cargo lab up` needs to build one binary, and its children are
//! found wherever it is.

pub mod compare;
pub mod env;
pub mod report;
pub mod run;
pub mod scenario;
pub mod up;
