//! The `kiln` binary: parse arguments, run the command, map the outcome to an exit code
//! (0 ok, 1 failed, 2 usage). Commands live in `cli/`, output formatting in `render/`.

mod cli;
mod render;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
