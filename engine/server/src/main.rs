//! The `loyalty-engine` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    loyalty_engine::cli::main_with_args(loyalty_engine::cli::Cli::parse())
}
