//! `kiln save [-o PATH] IMAGE...`: images out of the store as an OCI layout (+ Docker's
//! manifest.json): a tar file, a directory when PATH ends in `/` or is one, or a tar on
//! standard output without `-o` (as `docker save`).

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, bail};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write: a tar file, or a directory (PATH ending in `/`, or an existing directory);
    /// standard output (a tar) when absent.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Images to save (tags or manifest digests).
    #[arg(required = true)]
    pub images: Vec<String>,
    /// How the layers kiln keeps uncompressed are compressed: gzip (read by every tool) or zstd.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: super::registry::Compression,
    /// Of a multi-platform image, only the image for this platform (`linux/arm64`); without
    /// it, every platform the name holds.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

pub fn run(root: Option<&std::path::Path>, args: Args) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    // Layers only a registry has are fetched (with the registry settings; unreadable settings
    // leave them unfetchable, which the save then names, rather than failing every save).
    let _ = super::registry::fetch_layers_with(&store, &Default::default());
    let platform = args
        .platform
        .as_deref()
        .map(super::registry::platform)
        .transpose()?;
    let mut list = Vec::new();
    for name in &args.images {
        let Some(d) = store.resolve(name)? else {
            bail!("no such image: {name}");
        };
        let d = match &platform {
            Some(p) => store
                .platform_manifest(&d, Some(p))
                .with_context(|| format!("{name}: --platform {p}"))?,
            None => d,
        };
        let full = kiln_runtime::store::normalize_tag(name).unwrap_or_else(|_| name.clone());
        list.push((full, d));
    }
    let Some(output) = args.output else {
        // As docker: a tar on standard output, never onto a terminal.
        let stdout = std::io::stdout();
        if std::io::IsTerminal::is_terminal(&stdout) {
            bail!("cowardly refusing to save to a terminal: use -o PATH or redirect");
        }
        let mut w = std::io::BufWriter::new(stdout.lock());
        store
            .save_to(&list, &mut w, args.compression.into())
            .context("cannot save to standard output")?;
        std::io::Write::flush(&mut w).context("cannot save to standard output")?;
        return Ok(ExitCode::SUCCESS);
    };
    let as_dir = output.to_string_lossy().ends_with('/') || output.is_dir();
    store
        .save(&list, &output, as_dir, args.compression.into())
        .with_context(|| format!("cannot save to {}", output.display()))?;
    Ok(ExitCode::SUCCESS)
}
