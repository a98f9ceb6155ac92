//! `agents`: see the crate docs. Run with `cargo run -p agents -- --help`.

use agents::config::Config;
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if config.print_config {
        println!("{config:#?}");
        return Ok(());
    }
    lab_core::logging::init("agents", &config.log, lab_core::logging::LogTarget::Stderr)?;
    anyhow::bail!("the agents are not built yet (issue #5)")
}
