//! `lab`: the telemetry lab's front door. Run with `cargo lab --help`.

// The doc comments below are clap's `--help` text, read in a terminal, where `<UTC time>` is plain
// text and not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use experiments::up::config::UpArgs;

/// The telemetry lab: run both pipelines side by side and compare them.
#[derive(Debug, Parser)]
#[command(name = "lab", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start Redis, both systems, agents and the dashboard, and show them live side by side.
    ///
    /// Every service is a child process of this one, with its log in a temporary folder. The live view
    /// shows, each second and for each system: achieved vs intended metrics/s, ack latency (until the
    /// system said "got it": System 1's `202`, System 2's `metric.ack`), end-to-end latency (until the
    /// dashboard received the update) and loss. Ctrl-C, or the end of `--for`, stops everything and
    /// prints a summary.
    ///
    /// Examples:
    ///   cargo lab up
    ///   cargo lab up --for 30s --rate 2000 --protocol http2 --json run.json
    ///   cargo lab up --base-port 5000          # 5000-5003 for System 1, 5100 for System 2, 5080 for the page
    #[command(verbatim_doc_comment)]
    Up(UpArgs),
    /// Run a scenario: each step a fresh `lab up`, then a report with tables and plots.
    ///
    /// SCENARIO is a built-in name (see `lab list`) or the path of your own TOML file (the format is
    /// in docs/experiments.md). A mistake in the file is named (file, line, field) before anything
    /// starts. The report goes to reports/<UTC time>-<scenario>/: report.html (self-contained),
    /// report.md, SVG plots, figures.csv, each histogram as .hgrm, env.json, and the raw agents
    /// reports. Ctrl-C stops the step running and writes a report marked partial.
    ///
    /// Examples:
    ///   cargo lab run quick
    ///   cargo lab run original-plan --out reports/mine
    ///   cargo lab run quick --set duration=3s --set repeat=3
    ///   cargo lab run my-scenario.toml
    #[command(verbatim_doc_comment)]
    Run {
        /// A built-in scenario (`lab list`) or a scenario file.
        scenario: String,
        /// The report folder [default: reports/<UTC time>-<scenario>].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Override a setting for every step: duration, warmup, cooldown, agents, protocol, batch,
        /// repeat (e.g. --set duration=5s --set protocol=http2).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
    },
    /// List the built-in scenarios, one line each.
    List,
    /// Render a report again from its raw data (run.json, env.json, steps/*.json).
    Report {
        /// The report folder.
        dir: PathBuf,
    },
    /// Compare two reports: each figure side by side, the change, and whether it is beyond the
    /// run-to-run noise (estimated from repeated steps; assumed, and said so, without repeats).
    Compare {
        /// The earlier (baseline) report folder.
        a: PathBuf,
        /// The later report folder.
        b: PathBuf,
        /// Compare even reports of different scenarios.
        #[arg(long)]
        force: bool,
    },
    /// Run one of the lab's programs (`lab up` starts its children this way). The program exits
    /// when its stdin closes, so that it never outlives the supervisor.
    #[command(hide = true)]
    Child {
        /// Which program.
        program: Program,
        /// Its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

/// The lab's programs.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Program {
    System1,
    System2,
    Agents,
    Dashboard,
    /// Another program (its path first), stopped with SIGTERM when the supervisor goes away: for
    /// `redis-server`, which cannot watch its stdin itself.
    Guard,
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            match runtime.block_on(experiments::up::up(args)) {
                Ok(code) => Ok(code),
                // A mistake of the user's (a busy port, say) is a message, not a crash with a trace.
                Err(e) => {
                    eprintln!("error: {e:#}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Run { scenario, out, sets } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let options = experiments::run::RunOptions { scenario, out, sets };
            match runtime.block_on(experiments::run::run(options)) {
                Ok(code) => Ok(code),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::List => {
            for (name, text) in experiments::scenario::BUILT_IN {
                let none = Default::default();
                match experiments::scenario::parse(name, text, &none) {
                    Ok(s) => println!(
                        "{name:<14} {} (about {} min)",
                        s.description,
                        (s.planned().as_secs() + 5 * s.steps.len() as u64).div_ceil(60)
                    ),
                    Err(e) => println!("{name:<14} (broken: {e})"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { dir } => match experiments::report::render(&dir) {
            Ok(_) => {
                println!("{}", dir.join("report.html").display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Compare { a, b, force } => match experiments::compare::compare(&a, &b, force) {
            Ok(text) => {
                print!("{text}");
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Child { program, args } => {
            // The dashboard reads its stdin itself (the agents' figures, `--agents-stdin`) and
            // stops when it closes; the others only wait for it to close.
            if !matches!(program, Program::Dashboard) {
                watch_supervisor();
            }
            let name = program
                .to_possible_value()
                .map_or("lab".to_string(), |v| v.get_name().to_string());
            let args = std::iter::once(OsString::from(name)).chain(args);
            match program {
                Program::System1 => system1_http::cli::main(args)?,
                Program::System2 => system2_ws::cli::main(args)?,
                Program::Agents => agents::cli::main(args)?,
                Program::Dashboard => dashboard::cli::main(args)?,
                Program::Guard => return guard(args.skip(1).collect()),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// When stdin closes (the supervisor is gone, even if it was SIGKILLed and could not stop us),
/// stop as if SIGTERM had come: gracefully.
fn watch_supervisor() {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM);
    });
}

/// Runs `args[0]` with the rest of `args`, passes SIGTERM on to it (the supervisor's, or the one
/// [`watch_supervisor`] raises when the supervisor is gone), and exits as it exited.
fn guard(args: Vec<OsString>) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    use nix::sys::signal::{Signal, kill};
    use std::os::unix::process::ExitStatusExt;
    let (program, rest) = args.split_first().context("lab child guard: which program?")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut child = tokio::process::Command::new(program)
            .args(rest)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", program.to_string_lossy()))?;
        let pid = nix::unistd::Pid::from_raw(child.id().context("no pid")? as i32);
        let status = tokio::select! {
            status = child.wait() => status?,
            () = lab_core::signal::shutdown() => {
                let _ = kill(pid, Signal::SIGTERM);
                child.wait().await?
            }
        };
        let code = match (status.code(), status.signal()) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            _ => 1,
        };
        Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
    })
}
