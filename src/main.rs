//! The `kiln` binary: parse arguments, run the command, map the outcome to an exit code
//! (0 ok, 1 failed, 2 usage). Commands live in `cli/`, output formatting in `render/`.

mod cli;
mod render;

use std::process::ExitCode;

use clap::Parser;

// kiln allocates many small objects (AST nodes, file lists of large contexts); mimalloc is
// markedly faster than glibc malloc at that (README, "Dependencies").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
