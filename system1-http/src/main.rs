//! `system1`: see the crate docs. Run with `cargo run -p system1-http --bin system1 -- --help`.

fn main() -> anyhow::Result<()> {
    system1_http::cli::main(std::env::args_os())
}
