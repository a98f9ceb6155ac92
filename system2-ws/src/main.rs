//! `system2`: see the crate docs. Run with `cargo run --release -p system2-ws --bin system2 -- --help`.

use clap::Parser;
use system2_ws::Server;
use system2_ws::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if config.print_config {
        println!("{config:#?}");
        return Ok(());
    }
    lab_core::logging::init("system2", &config.log, lab_core::logging::LogTarget::Stdout)?;
    let server = Server::bind(config).await?;
    let address = server.local_addr();
    tracing::info!(%address, "System 2 listening: WebSocket at ws://{address}/, monitoring at http://{address}/api/monitoring");
    server.run(system2_ws::shutdown_signal()).await?;
    tracing::info!("System 2 stopped");
    Ok(())
}
