//! `kiln images`, `kiln tag`, `kiln rmi`.

use std::{path::Path, process::ExitCode};

use anyhow::{Context, bail};

use crate::render::table;

#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct TagArgs {
    /// The image to tag: a tag or a manifest digest.
    pub source: String,
    /// The new tag.
    pub target: String,
}

#[derive(Debug, clap::Args)]
pub struct RmiArgs {
    /// Tags to remove.
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub fn images(root: Option<&Path>, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let list = store.images()?;
    if args.quiet {
        for i in list {
            outln!("{}", &i.config.hex()[..12]);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            let (repo, tag) = i.name.rsplit_once(':').unwrap_or((&i.name, ""));
            vec![
                repo.to_string(),
                tag.to_string(),
                i.config.hex()[..12].to_string(),
                // As docker: how long ago, by the image config's `created`.
                i.created
                    .as_deref()
                    .and_then(crate::render::time::parse_rfc3339)
                    .map_or_else(
                        || "N/A".to_string(),
                        |t| {
                            format!(
                                "{} ago",
                                crate::render::time::human_duration(crate::render::time::now() - t)
                            )
                        },
                    ),
                table::size(i.size),
            ]
        })
        .collect();
    out!(
        "{}",
        table::render(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}

pub fn tag(root: Option<&Path>, args: TagArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let tagged = store
        .tag_image(&args.source, &args.target)
        .with_context(|| format!("cannot tag {}", args.source))?;
    if tagged.is_none() {
        bail!("no such image: {}", args.source);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rmi(root: Option<&Path>, args: RmiArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let mut failed = false;
    for n in &args.names {
        if store.remove_tag(n)? {
            outln!("Untagged: {n}");
        } else {
            eprintln!("kiln: error: no such image: {n}");
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
