//! `kiln manifest create|inspect|push|rm`: multi-platform images joined from single-platform
//! ones, as `docker manifest` (and `buildx imagetools create`) do, without pulling layers.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use kiln_runtime::{
    digest::Digest,
    registry::{self, PullOptions},
    store::Store,
};

use super::registry::RegistryFlags;

#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Join images into one multi-platform image (an OCI index) named NAME: each IMAGE from
    /// kiln's store, or else from its registry (manifest and config only, never the layers).
    Create {
        /// The multi-platform image's name.
        name: String,
        /// The images: single-platform images, or multi-platform ones (all their platforms).
        #[arg(required = true)]
        images: Vec<String>,
        /// Add the images to NAME's existing index instead of replacing it.
        #[arg(short, long)]
        amend: bool,
        #[command(flatten)]
        registry: RegistryFlags,
    },
    /// Show a multi-platform image's index (or an image's manifest): kiln's, else the
    /// registry's.
    Inspect {
        name: String,
        #[command(flatten)]
        registry: RegistryFlags,
    },
    /// Push a multi-platform image: each of its images, then the index under NAME.
    Push {
        name: String,
        /// Remove the local name once it is pushed.
        #[arg(short, long)]
        purge: bool,
        #[command(flatten)]
        registry: RegistryFlags,
    },
    /// Remove multi-platform images' names from kiln's store.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub fn run(root: Option<&std::path::Path>, cmd: ManifestCommand) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    match cmd {
        ManifestCommand::Create {
            name,
            images,
            amend,
            registry,
        } => create(&store, &name, &images, amend, &registry),
        ManifestCommand::Inspect { name, registry } => inspect(&store, &name, &registry),
        ManifestCommand::Push {
            name,
            purge,
            registry,
        } => {
            let is_index = store
                .resolve(&name)?
                .is_some_and(|d| store.read_index(&d).ok().flatten().is_some());
            if !is_index {
                bail!("no such manifest: {name} (make it with `kiln manifest create`)");
            }
            let pushed = super::registry::push_image(
                &store,
                &name,
                &name,
                &registry,
                Default::default(),
                true,
            )?;
            if purge {
                store.remove_tag(&name)?;
            }
            outln!("{}", pushed.digest);
            Ok(ExitCode::SUCCESS)
        }
        ManifestCommand::Rm { names } => {
            let mut failed = false;
            for n in names {
                let is_index = store
                    .resolve_tag(&n)?
                    .is_some_and(|d| store.read_index(&d).ok().flatten().is_some());
                if is_index && store.remove_tag(&n)? {
                    continue;
                }
                eprintln!("kiln: error: no such manifest: {n}");
                failed = true;
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn create(
    store: &Store,
    name: &str,
    images: &[String],
    amend: bool,
    flags: &RegistryFlags,
) -> anyhow::Result<ExitCode> {
    kiln_runtime::store::normalize_tag(name).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let mut parts: Vec<Digest> = Vec::new();
    if amend {
        if let Some(d) = store.resolve_tag(name)? {
            parts.push(d);
        }
    }
    let opts = PullOptions {
        registry: flags.options()?,
        ..Default::default()
    };
    for image in images {
        match store.resolve(image)? {
            Some(d) => parts.push(d),
            None => parts.extend(
                registry::fetch_images(store, image, &opts)
                    .with_context(|| format!("{image}: not in kiln's store, and its registry"))?,
            ),
        }
    }
    let index = store
        .join_images(&parts)
        .with_context(|| format!("cannot create {name}"))?;
    store.set_tag(name, &index)?;
    let platforms: Vec<String> = store
        .platforms_of(&index)?
        .iter()
        .map(|(p, _)| p.to_string())
        .collect();
    eprintln!("Created manifest list {name} ({})", platforms.join(", "));
    outln!("{index}");
    Ok(ExitCode::SUCCESS)
}

fn inspect(store: &Store, name: &str, flags: &RegistryFlags) -> anyhow::Result<ExitCode> {
    let bytes = match store.resolve(name)? {
        Some(d) => store.read_blob(&d)?,
        None => {
            registry::fetch_raw(name, &flags.options()?)
                .with_context(|| format!("no such manifest: {name}"))?
                .0
        }
    };
    let doc: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{name}: not JSON"))?;
    outln!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(ExitCode::SUCCESS)
}
