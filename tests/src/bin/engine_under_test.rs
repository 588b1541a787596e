//! The `loyalty-engine` command line, built inside the test package for the crash test.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    loyalty_engine::cli::main_with_args(loyalty_engine::cli::Cli::parse())
}
