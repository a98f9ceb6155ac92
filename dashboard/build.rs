//! Embeds `assets/` (the page, its script and style, the vendored uPlot) into the binary: memory-serve
//! reads the folder at build time and the `load!` macro in `src/lib.rs` serves what it read.

fn main() {
    memory_serve::load_directory("./assets");
}
