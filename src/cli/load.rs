//! `kiln load -i PATH`: images from an OCI layout directory or archive into the store.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// An OCI image layout directory, or a tar (optionally gzipped) of one.
    #[arg(short = 'i', long = "input", value_name = "PATH")]
    pub input: PathBuf,
}

pub fn run(root: Option<&std::path::Path>, args: Args) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let loaded = store
        .load(&args.input)
        .with_context(|| format!("cannot load {}", args.input.display()))?;
    for l in loaded {
        match l.reference {
            Some(r) => println!("Loaded image: {r} ({})", l.manifest),
            None => println!("Loaded image: {}", l.manifest),
        }
    }
    Ok(ExitCode::SUCCESS)
}
