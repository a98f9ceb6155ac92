//! `system2`: see the crate docs. Run with `cargo run -p system2-ws --bin system2 -- --help`.

use clap::Parser;
use system2_ws::config::Config;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if config.print_config {
        println!("{config:#?}");
        return Ok(());
    }
    lab_core::logging::init("system2", &config.log, lab_core::logging::LogTarget::Stdout)?;
    anyhow::bail!("System 2 is not built yet (issue #3)")
}
