//! The `agents` command line: what its `main` does, callable from `lab up` too.

use std::io::IsTerminal;

use crate::config::{Cli, Command};
use crate::report::Report;
use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Runs `agents` with these command-line arguments (the first is the program name), as its binary
/// does; `lab up` runs it this way in a child process of its own.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> anyhow::Result<()> {
    let cli = Cli::parse_from(args);
    lab_core::logging::init("agents", &cli.log, lab_core::logging::LogTarget::Stderr)?;
    // One thread: on a machine shared with the server under test, more threads only fight it for the
    // cores, and that fight would be measured as the server's latency.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Some(Command::Merge { files, json }) => {
            let reports = files
                .iter()
                .map(|f| {
                    let text =
                        std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
                    serde_json::from_str::<Report>(&text)
                        .with_context(|| format!("{} is not an agents report", f.display()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let merged = Report::merge(&reports)?;
            print!("{merged}");
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&merged)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(())
        }
        Some(Command::Sink { port }) => runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
                .await
                .with_context(|| format!("cannot listen on port {port} (change it with --port)"))?;
            eprintln!(
                "agents sink: acking everything on ws://{0}/ and http://{0}/metrics",
                listener.local_addr()?
            );
            crate::sink::serve(listener).await?;
            Ok(())
        }),
        None => {
            let args = cli.run;
            if args.print_config {
                println!("{args:#?}");
                return Ok(());
            }
            args.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
            let stop = CancellationToken::new();
            let report = runtime.block_on(async {
                let on_signal = stop.clone();
                tokio::spawn(async move {
                    lab_core::signal::shutdown().await;
                    tracing::warn!("stopping early: the summary will be marked partial");
                    on_signal.cancel();
                });
                crate::run(
                    args.clone(),
                    stop.clone(),
                    !args.quiet && std::io::stderr().is_terminal(),
                )
                .await
            })?;
            print!("{report}");
            if let Some(path) = &args.json {
                std::fs::write(path, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if report.acked == 0 {
                anyhow::bail!("nothing was acknowledged: is the target running? (see the errors above)");
            }
            Ok(())
        }
    }
}
