//! `agents`: see the crate docs and `agents --help`.

fn main() -> anyhow::Result<()> {
    agents::cli::main(std::env::args_os())
}
