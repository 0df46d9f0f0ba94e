//! `kiln inspect IMAGE...`: docker-like JSON for images in the store.

use std::process::ExitCode;

use anyhow::bail;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Images (tags or manifest digests).
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub fn run(root: Option<&std::path::Path>, args: Args) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let mut out = Vec::new();
    for name in &args.images {
        let Some(d) = store.resolve(name)? else {
            bail!("no such image: {name}");
        };
        out.push(store.inspect(&d)?);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
