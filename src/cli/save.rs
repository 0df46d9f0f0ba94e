//! `kiln save -o PATH IMAGE...`: images out of the store as an OCI layout (+ Docker's
//! manifest.json): a tar file, or a directory when PATH ends in `/` or is one.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, bail};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write: a tar file, or a directory (PATH ending in `/`, or an existing directory).
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: PathBuf,
    /// Images to save (tags or manifest digests).
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub fn run(root: Option<&std::path::Path>, args: Args) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let mut list = Vec::new();
    for name in &args.images {
        let Some(d) = store.resolve(name)? else {
            bail!("no such image: {name}");
        };
        let full = kiln_runtime::store::normalize_tag(name).unwrap_or_else(|_| name.clone());
        list.push((full, d));
    }
    let as_dir = args.output.to_string_lossy().ends_with('/') || args.output.is_dir();
    store
        .save(&list, &args.output, as_dir)
        .with_context(|| format!("cannot save to {}", args.output.display()))?;
    Ok(ExitCode::SUCCESS)
}
