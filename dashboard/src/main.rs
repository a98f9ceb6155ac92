//! `dashboard`: see the crate docs. Run with `cargo run --release -p dashboard -- --help`.

fn main() -> anyhow::Result<()> {
    dashboard::cli::main(std::env::args_os())
}
