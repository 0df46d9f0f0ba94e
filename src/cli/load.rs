//! `kiln load [-i PATH]`: images from an OCI layout directory or archive into the store
//! (standard input without `-i`, as `docker load`).

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// An OCI image layout directory, or a tar (optionally gzipped) of one; standard input when
    /// absent or `-`.
    #[arg(short = 'i', long = "input", value_name = "PATH")]
    pub input: Option<PathBuf>,
}

pub fn run(root: Option<&std::path::Path>, args: Args) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let loaded = match args
        .input
        .as_deref()
        .filter(|p| *p != std::path::Path::new("-"))
    {
        Some(path) => store
            .load(path)
            .with_context(|| format!("cannot load {}", path.display()))?,
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                anyhow::bail!(
                    "requested load from stdin, but stdin is empty (a terminal): use -i PATH"
                );
            }
            store
                .load_from(std::io::stdin().lock())
                .context("cannot load from standard input")?
        }
    };
    for l in loaded {
        match l.reference {
            Some(r) => outln!("Loaded image: {r} ({})", l.manifest),
            None => outln!("Loaded image: {}", l.manifest),
        }
    }
    Ok(ExitCode::SUCCESS)
}
