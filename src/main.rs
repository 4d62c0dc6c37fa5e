//! The `dachavideo` command: run the service, check a set-up, or run the detector on a file.
//! Wiring only: exit status 0 on success, 1 on a runtime failure, 2 on bad configuration or usage.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    dachavideo::memory::tune_allocator();
    let args = cli::Cli::parse();
    cli::main(args)
}
