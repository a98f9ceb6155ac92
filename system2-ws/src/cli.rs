//! The `system2` command line: what its `main` does, callable from `lab up` too.

use crate::Server;
use crate::config::Config;
use clap::Parser;

/// Runs `system2` with these command-line arguments (the first is the program name), as its
/// binary does; `lab up` runs it this way in a child process of its own.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> anyhow::Result<()> {
    let config = Config::parse_from(args);
    tokio::runtime::Runtime::new()?.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    if config.print_config {
        println!("{config:#?}");
        return Ok(());
    }
    lab_core::logging::init("system2", &config.log, lab_core::logging::LogTarget::Stdout)?;
    let server = Server::bind(config).await?;
    let address = server.local_addr();
    tracing::info!(%address, "System 2 listening: WebSocket at ws://{address}/, monitoring at http://{address}/api/monitoring");
    server.run(crate::shutdown_signal()).await?;
    tracing::info!("System 2 stopped");
    Ok(())
}
