//! `system2`: see the crate docs. Run with `cargo run --release -p system2-ws --bin system2 -- --help`.

fn main() -> anyhow::Result<()> {
    system2_ws::cli::main(std::env::args_os())
}
