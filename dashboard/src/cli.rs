//! The `dashboard` command line: what its `main` does, callable from `lab up` too.

use clap::Parser;

use crate::Server;
use crate::config::Config;

/// Runs `dashboard` with these command-line arguments (the first is the program name).
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> anyhow::Result<()> {
    let config = Config::parse_from(args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(config));
    // tokio reads stdin on a blocking thread that cannot be interrupted: dropping the runtime would
    // wait for it, that is for the supervisor to close stdin, after a SIGTERM that should stop us now.
    // The server has stopped; nothing else is left to finish.
    runtime.shutdown_background();
    result
}

async fn run(config: Config) -> anyhow::Result<()> {
    lab_core::logging::init("dashboard", &config.log, lab_core::logging::LogTarget::Stdout)?;
    let from_stdin = config.agents_stdin;
    let server = Server::bind(config).await?;
    let address = server.local_addr();
    tracing::info!(%address, "dashboard listening: http://{address}/");
    let figures = server.agent_figures();
    let shutdown = async move {
        if from_stdin {
            // Stdin closing means the supervisor is gone: stop, as on SIGTERM.
            tokio::select! {
                () = figures.read_from(tokio::io::stdin()) => tracing::info!("stdin closed: stopping"),
                () = crate::shutdown_signal() => {}
            }
        } else {
            crate::shutdown_signal().await;
        }
    };
    server.run(shutdown).await?;
    tracing::info!("dashboard stopped");
    Ok(())
}
