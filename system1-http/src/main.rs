//! `system1`: see the crate docs. Run with `cargo run -p system1-http --bin system1 -- --help`.

use clap::Parser;
use system1_http::config::Cli;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.print_config {
        println!("{cli:#?}");
        return Ok(());
    }
    lab_core::logging::init("system1", &cli.log, lab_core::logging::LogTarget::Stdout)?;
    anyhow::bail!("System 1 is not built yet (issue #4)")
}
