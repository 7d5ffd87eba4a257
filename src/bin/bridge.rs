//! The `bridge` binary: everything lives in `bridgeface::cli`.
fn main() {
    std::process::exit(bridgeface::cli::main());
}
