//! `kiln images`, `kiln tag`, `kiln rmi`.

use std::{path::Path, process::ExitCode};

use anyhow::{Context, bail};

use crate::render::table;

#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Only the images of this repository (`app`, `app:1`, `team/*`: docker's path patterns)
    pub reference: Option<String>,
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// `table`, `json`, or a Go template (`{{.Repository}}:{{.Tag}}`, `table {{.ID}}\t{{.Size}}`)
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Every image (kiln keeps no intermediate images: the same as without it)
    #[arg(short, long)]
    pub all: bool,
    /// Show the registry digest each image was pulled or pushed as
    #[arg(long)]
    pub digests: bool,
    /// Full image IDs
    #[arg(long)]
    pub no_trunc: bool,
    /// `dangling=true|false`, `reference=PATTERN`, `label=KEY[=VALUE]`, `before=IMAGE`,
    /// `since=IMAGE`
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Each image with the platforms it holds below it (docker's `image ls --tree`)
    #[arg(long, conflicts_with_all = ["quiet", "digests"])]
    pub tree: bool,
}

/// One of docker's `images --filter`s, read once (an image a filter names resolved once).
enum Filter {
    Dangling(bool),
    Reference(String),
    Label(String, Option<String>),
    Before(i64),
    Since(i64),
}

/// When image `i` was created, from its config (0 when it does not say).
fn created_of(i: &kiln_runtime::store::ImageSummary) -> i64 {
    i.created
        .as_deref()
        .and_then(crate::render::time::parse_rfc3339)
        .unwrap_or(0)
}

impl Filter {
    fn parse(store: &kiln_runtime::store::Store, f: &str) -> anyhow::Result<Filter> {
        let created = |name: &str| -> anyhow::Result<i64> {
            let m = store
                .resolve(name)?
                .with_context(|| format!("--filter: no such image: {name}"))?;
            Ok(store
                .image(&m)?
                .1
                .created
                .as_deref()
                .and_then(crate::render::time::parse_rfc3339)
                .unwrap_or(0))
        };
        Ok(match f.split_once('=') {
            Some(("dangling", v)) => Filter::Dangling(v == "true" || v == "1"),
            Some(("reference", p)) => Filter::Reference(p.to_string()),
            Some(("label", kv)) => match kv.split_once('=') {
                Some((k, v)) => Filter::Label(k.to_string(), Some(v.to_string())),
                None => Filter::Label(kv.to_string(), None),
            },
            Some(("before", name)) => Filter::Before(created(name)?),
            Some(("since", name)) => Filter::Since(created(name)?),
            _ => bail!("invalid --filter {f:?}: dangling=, reference=, label=, before= or since="),
        })
    }

    /// Whether image `i` passes.
    fn passes(
        &self,
        store: &kiln_runtime::store::Store,
        i: &kiln_runtime::store::ImageSummary,
    ) -> anyhow::Result<bool> {
        Ok(match self {
            Filter::Dangling(want) => (i.name == "<none>:<none>") == *want,
            Filter::Reference(p) => i.name != "<none>:<none>" && matches_reference(p, &i.name)?,
            Filter::Label(k, v) => {
                let labels = store.image(&i.manifest)?.1.config.labels;
                match v {
                    Some(v) => labels.get(k) == Some(v),
                    None => labels.contains_key(k),
                }
            }
            Filter::Before(t) => created_of(i) < *t,
            Filter::Since(t) => created_of(i) > *t,
        })
    }
}

/// `title` and `lines` as docker's prunes list what they removed, when anything was.
fn list_removed(title: &str, lines: impl IntoIterator<Item = String>) {
    let lines: Vec<String> = lines.into_iter().collect();
    if !lines.is_empty() {
        outln!("{title}");
        for l in &lines {
            outln!("{l}");
        }
        outln!();
    }
}

/// Whether the image named `name` (`repo:tag`) matches `pattern` as docker's `images
/// [REPOSITORY[:TAG]]` reads it: the whole name when the pattern has a tag, else the repository.
fn matches_reference(pattern: &str, name: &str) -> anyhow::Result<bool> {
    let has_tag = pattern
        .rsplit_once(':')
        .is_some_and(|(_, t)| !t.contains('/'));
    let subject = if has_tag {
        name
    } else {
        name.rsplit_once(':').map_or(name, |(repo, _)| repo)
    };
    let p = kiln_builder::context::ignore::FilepathPattern::new(pattern)
        .with_context(|| format!("invalid reference pattern {pattern:?}"))?;
    Ok(p.matches(subject))
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
    /// Tags or image IDs (full, or a unique prefix) to remove.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Remove an image ID's tags even when they name several repositories
    #[arg(short, long)]
    pub force: bool,
}

pub fn images(root: Option<&Path>, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let mut list = store.images()?;
    // Untagged images too, as docker's `<none>` rows; newest first, as docker sorts them.
    list.extend(store.dangling_images()?);
    list.sort_by_key(|i| std::cmp::Reverse(created_of(i)));
    if !args.filter.is_empty() {
        let filters = args
            .filter
            .iter()
            .map(|f| Filter::parse(&store, f))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut kept = Vec::new();
        for i in list {
            let mut keep = true;
            for f in &filters {
                keep &= f.passes(&store, &i)?;
            }
            if keep {
                kept.push(i);
            }
        }
        list = kept;
    }
    if let Some(pattern) = &args.reference {
        let mut kept = Vec::new();
        for i in list {
            if matches_reference(pattern, &i.name)? {
                kept.push(i);
            }
        }
        list = kept;
    }
    let id_of = |i: &kiln_runtime::store::ImageSummary| {
        if args.no_trunc {
            i.config.to_string()
        } else {
            i.config.hex()[..12].to_string()
        }
    };
    if args.tree {
        out!("{}", tree(&store, &list, &id_of)?);
        return Ok(ExitCode::SUCCESS);
    }
    if args.quiet {
        // One line per row, as docker's `-q` (an image under two tags twice).
        for i in &list {
            outln!("{}", id_of(i));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let format = crate::render::format::Format::parse(&args.format);
    crate::render::format::check(&format)?;
    // docker's fields for each image (`docker images --format '{{json .}}'`).
    let objects: Vec<serde_json::Value> = list
        .iter()
        .map(|i| {
            let (repo, tag) = i.name.rsplit_once(':').unwrap_or((&i.name, ""));
            let created = i
                .created
                .as_deref()
                .and_then(crate::render::time::parse_rfc3339);
            let size = table::size_precision(i.size, 3);
            // The registry digest recorded for this repository (pulled or pushed as), docker's
            // DIGEST column.
            let digest = store
                .repo_digests(&i.config)
                .unwrap_or_default()
                .into_iter()
                .find_map(|d| {
                    let (r, digest) = d.split_once('@')?;
                    (r == repo).then(|| digest.to_string())
                })
                .unwrap_or_else(|| "<none>".into());
            serde_json::json!({
                "Containers": "N/A",
                "CreatedAt": created.map_or_else(|| "N/A".into(), crate::render::time::docker_time),
                // As docker: how long ago, by the image config's `created`.
                "CreatedSince": created.map_or_else(
                    || "N/A".to_string(),
                    |t| format!(
                        "{} ago",
                        crate::render::time::human_duration(crate::render::time::now() - t)
                    ),
                ),
                "Digest": digest,
                "ID": id_of(i),
                "Repository": repo,
                "SharedSize": "N/A",
                // docker's 3 significant digits (`1.99MB`).
                "Size": size,
                "Tag": tag,
                "UniqueSize": "N/A",
                // docker's 4 significant digits here (`1.986MB`).
                "VirtualSize": table::size(i.size),
            })
        })
        .collect();
    let text = crate::render::format::rows(
        &format,
        &objects,
        &[
            ("ID", "IMAGE ID"),
            ("CreatedSince", "CREATED"),
            ("CreatedAt", "CREATED AT"),
        ],
        || {
            let (fields, headers): (&[&str], &[&str]) = if args.digests {
                (
                    &["Repository", "Tag", "Digest", "ID", "CreatedSince", "Size"],
                    &["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"],
                )
            } else {
                (
                    &["Repository", "Tag", "ID", "CreatedSince", "Size"],
                    &["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
                )
            };
            let rows: Vec<Vec<String>> = objects
                .iter()
                .map(|o| {
                    fields
                        .iter()
                        .map(|k| o[*k].as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .collect();
            table::render(headers, &rows)
        },
    )?;
    out!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// `kiln images --tree`: each image's row, then one row per platform it holds (its own
/// manifest's digest as the ID, and the size of that platform's image).
fn tree(
    store: &kiln_runtime::store::Store,
    list: &[kiln_runtime::store::ImageSummary],
    id_of: &dyn Fn(&kiln_runtime::store::ImageSummary) -> String,
) -> anyhow::Result<String> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    for i in list {
        rows.push(vec![
            i.name.clone(),
            id_of(i),
            table::size_precision(i.size, 3),
        ]);
        let platforms = store.platforms_of(&i.manifest)?;
        let n = platforms.len();
        for (k, (platform, manifest)) in platforms.into_iter().enumerate() {
            let size = store
                .image(&manifest)
                .and_then(|(m, _, _)| store.content_size(&m))
                .map_or_else(|_| "-".to_string(), |n| table::size_precision(n, 3));
            let branch = if k + 1 == n { "└─" } else { "├─" };
            rows.push(vec![
                format!("{branch} {platform}"),
                manifest.hex()[..12].to_string(),
                size,
            ]);
        }
    }
    Ok(table::render(&["IMAGE", "ID", "SIZE"], &rows))
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
        match store.remove_image(n, args.force) {
            Ok(Some(removed)) => {
                for t in &removed.untagged {
                    outln!("Untagged: {t}");
                }
                if let Some(id) = &removed.deleted {
                    outln!("Deleted: {id}");
                }
            }
            Ok(None) => {
                eprintln!("kiln: error: no such image: {n}");
                failed = true;
            }
            Err(e) => {
                eprintln!("kiln: error: {n}: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Remove untagged images (`-a`: also every image no container was made from), and the
    /// blobs nothing needs any more
    Prune {
        #[arg(short, long)]
        all: bool,
        /// Do not ask (kiln never asks without a terminal; accepted for docker's scripts)
        #[arg(short, long)]
        force: bool,
    },
}

pub fn image(root: Option<&Path>, cmd: ImageCommand) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    match cmd {
        ImageCommand::Prune { all, force } => {
            let what = if all {
                "This will remove all images without at least one container associated to them."
            } else {
                "This will remove all dangling images."
            };
            if !super::confirm(what, force)? {
                return Ok(ExitCode::SUCCESS);
            }
            let (gone, freed) = store.prune_images(all)?;
            list_removed(
                "Deleted Images:",
                gone.iter().map(|id| format!("deleted: {id}")),
            );
            outln!("Total reclaimed space: {}", table::size(freed));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln system prune [-a]`: ended containers, untagged images, then the build cache no image
/// uses (`-a`: every cache entry), as docker's (kiln has no networks or volumes to prune).
pub fn system_prune(root: Option<&Path>, all: bool, volumes: bool) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let containers = kiln_runtime::container::control::prune(&store)?;
    list_removed("Deleted Containers:", containers);
    list_removed("Deleted Networks:", kiln_runtime::network::prune(&store)?);
    let mut volume_bytes = 0;
    if volumes {
        let (gone, freed) = kiln_runtime::container::prune_volumes(&store, false)?;
        list_removed("Deleted Volumes:", gone);
        volume_bytes = freed;
    }
    let (images, image_bytes) = store.prune_images(false)?;
    list_removed(
        "Deleted Images:",
        images.iter().map(|id| format!("deleted: {id}")),
    );
    let opts = kiln_runtime::store::PruneOptions {
        all,
        ..Default::default()
    };
    let (entries, cache_bytes) = store.cache_prune(&opts)?;
    list_removed(
        "Deleted build cache objects:",
        entries.iter().map(|e| e.id().to_string()),
    );
    outln!(
        "Total reclaimed space: {}",
        table::size(image_bytes + cache_bytes + volume_bytes)
    );
    Ok(ExitCode::SUCCESS)
}
