//! `kiln cache ls|du|prune` and `kiln system df`.

use std::{path::Path, process::ExitCode};

use anyhow::Context;
use kiln_runtime::store::{CacheUsage, PruneOptions};

use crate::render::table;

#[derive(Debug, clap::Subcommand)]
pub enum CacheCommand {
    /// One row per cache entry (layers, cache mounts, unpacked layers, context snapshots, base
    /// images), least recently used first.
    Ls(LsArgs),
    /// Totals: shared, private, reclaimable, total.
    Du(DuArgs),
    /// Remove cache entries no image uses (`--all`: every entry; images keep their layers).
    Prune(PruneArgs),
    /// Everything that went into a cache entry's key: parent, instruction fields (argv,
    /// environment, user, mounts...), input file digests.
    Inspect(InspectArgs),
    /// Which steps of a build would hit the cache and why the first miss misses, without
    /// running anything (takes `kiln build`'s flags).
    Explain(Box<super::build::Args>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Full keys and descriptions.
    #[arg(short, long)]
    pub verbose: bool,
    /// `type=layer|cache-mount|unpacked|context|base-image`, `until=DURATION` (last used
    /// before), `description~=REGEX`.
    #[arg(long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The entry: the ID `kiln cache ls` shows, or a full key.
    pub id: String,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Every input file (default: the first 20).
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, clap::Args)]
pub struct DuArgs {
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Also entries that images use (the images keep their layers).
    #[arg(short, long)]
    pub all: bool,
    /// `type=layer|cache-mount|unpacked|context|base-image`, `until=DURATION` (e.g. 24h),
    /// `description~=REGEX`.
    #[arg(long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Remove least recently used entries only until the cache is at most this size.
    #[arg(long, value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// Show what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask (kiln never asks without a terminal; accepted for docker's scripts).
    #[arg(short, long)]
    pub force: bool,
}

use crate::render::time::now;

fn ago(t: i64) -> String {
    let s = (now() - t).max(0);
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// `text` in at most `max` characters: its middle gives way, so the step's start and where it
/// is written (`(Dockerfile:12)`) both stay.
fn shorten(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_string();
    }
    let tail = 16.min(max / 3);
    let head: String = text.chars().take(max - tail - 1).collect();
    let end: String = text.chars().skip(n - tail).collect();
    format!("{head}…{end}")
}

fn json(u: &CacheUsage) -> serde_json::Value {
    serde_json::json!({
        "id": u.id(),
        "key": u.key,
        "type": u.kind.as_str(),
        "size": u.size,
        "shared": u.shared,
        "shared_size": u.shared_size,
        "in_use": u.in_use,
        "created": u.created,
        "last_used": u.last_used,
        "uses": u.uses,
        "description": u.description,
    })
}

pub fn run(root: Option<&Path>, cmd: CacheCommand) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    match cmd {
        CacheCommand::Ls(a) => ls(&store, &a),
        CacheCommand::Du(a) => du(&store, &a),
        CacheCommand::Prune(a) => prune(&store, &a),
        CacheCommand::Inspect(a) => inspect(&store, &a),
        CacheCommand::Explain(a) => explain(&store, &a),
    }
}

/// `kiln cache ls`: one row per entry.
fn ls(store: &kiln_runtime::store::Store, a: &LsArgs) -> anyhow::Result<ExitCode> {
    let o = PruneOptions::from_filters(&a.filters).map_err(anyhow::Error::msg)?;
    let list: Vec<CacheUsage> = store
        .cache_usage()?
        .into_iter()
        .filter(|u| o.selects(u, now()))
        .collect();
    if a.format == Format::Json {
        let v: Vec<_> = list.iter().map(json).collect();
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|u| {
            let d = if a.verbose {
                u.description.clone()
            } else {
                shorten(&u.description, 60)
            };
            vec![
                if a.verbose { u.key.clone() } else { u.id() },
                u.kind.as_str().to_string(),
                table::size(u.size),
                if u.shared {
                    table::size(u.shared_size)
                } else {
                    "-".into()
                },
                ago(u.created),
                ago(u.last_used),
                u.uses.map_or_else(|| "-".into(), |n| n.to_string()),
                if u.in_use { "yes" } else { "no" }.into(),
                d,
            ]
        })
        .collect();
    out!(
        "{}",
        table::render(
            &[
                "ID",
                "TYPE",
                "SIZE",
                "SHARED",
                "CREATED",
                "LAST USED",
                "USES",
                "IN USE",
                "DESCRIPTION"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// `kiln cache du`: the totals.
fn du(store: &kiln_runtime::store::Store, a: &DuArgs) -> anyhow::Result<ExitCode> {
    let t = store.cache_totals()?;
    if a.format == Format::Json {
        outln!(
            "{}",
            serde_json::json!({"entries": t.entries, "shared": t.shared, "private": t.private,
                "reclaimable": t.reclaimable, "total": t.total})
        );
    } else {
        outln!("Entries:\t{}", t.entries);
        outln!("Shared:\t\t{}", table::size(t.shared));
        outln!("Private:\t{}", table::size(t.private));
        outln!("Reclaimable:\t{}", table::size(t.reclaimable));
        outln!("Total:\t\t{}", table::size(t.total));
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln cache inspect ID`: what went into an entry's key.
fn inspect(store: &kiln_runtime::store::Store, a: &InspectArgs) -> anyhow::Result<ExitCode> {
    let Some(r) = kiln_builder::cache::history::find(store, &a.id)? else {
        let other = store
            .cache_usage()?
            .into_iter()
            .find(|u| !a.id.is_empty() && u.id().starts_with(&a.id));
        if let Some(u) = other {
            anyhow::bail!(
                "{} is a {} entry ({}): only cached layers have a key to inspect",
                a.id,
                u.kind.as_str(),
                u.description
            );
        }
        anyhow::bail!(
            "no recorded cache entry {}: entries made before kiln recorded builds, or \
             whose build was not kept, cannot be inspected",
            a.id
        );
    };
    if a.format == Format::Json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!("Key:\t\t{}", r.key);
    outln!("Step:\t\t{}", r.name);
    outln!(
        "Parent:\t\t{}",
        r.parent
            .as_deref()
            .unwrap_or("(none: independent of the layers below)")
    );
    outln!("Instruction:\t{}", r.kind);
    for (k, v) in &r.fields {
        let v = v.replace('\n', "\n\t\t  ");
        outln!("  {k}:\t{v}");
    }
    outln!("Inputs:\t\t{} files", r.inputs.len());
    let limit = if a.verbose { usize::MAX } else { 20 };
    for (p, d) in r.inputs.iter().take(limit) {
        outln!("  {d}  {p}");
    }
    if r.inputs.len() > limit {
        outln!("  ... {} more (-v shows all)", r.inputs.len() - limit);
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln cache explain`: which steps would hit and why the first miss misses.
fn explain(store: &kiln_runtime::store::Store, a: &super::build::Args) -> anyhow::Result<ExitCode> {
    let (opts, name, text) = super::build::options(store, a)?;
    // `--cache-from` as the build would import it, so a CI runner can ask what its build would
    // take from the shared cache before building (layers stay in the registry).
    let cache_from = super::build::parse_cache_specs(&a.cache_from, false)?;
    if !cache_from.is_empty() {
        super::registry::fetch_layers_with(store, &a.registry)?;
        super::build::import_caches(store, &cache_from, &a.registry.options()?);
    }
    match kiln_builder::exec::explain(store, &opts, &|_| {}) {
        Ok(lines) => out!("{}", crate::render::explain::render(&lines)),
        Err(e) => {
            super::build::report(&name, &text, &e);
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln cache prune`.
fn prune(store: &kiln_runtime::store::Store, a: &PruneArgs) -> anyhow::Result<ExitCode> {
    let mut o = PruneOptions::from_filters(&a.filters).map_err(anyhow::Error::msg)?;
    o.all = a.all;
    o.dry_run = a.dry_run;
    o.keep_storage = match &a.keep_storage {
        None => None,
        Some(s) => Some(
            kiln_parser::instruction::values::parse_ram_size(s)
                .with_context(|| format!("--keep-storage {s}: expected a size such as 10g"))?,
        ),
    };
    if !a.dry_run && !super::confirm("This will remove all dangling build cache.", a.force)? {
        return Ok(ExitCode::SUCCESS);
    }
    let (removed, freed) = store.cache_prune(&o)?;
    for u in &removed {
        outln!(
            "{} {}\t{}\t{}",
            if a.dry_run { "would remove" } else { "removed" },
            u.id(),
            u.kind.as_str(),
            u.description
        );
    }
    outln!(
        "Total{}: {}",
        if a.dry_run {
            " reclaimable"
        } else {
            " reclaimed space"
        },
        table::size(freed)
    );
    Ok(ExitCode::SUCCESS)
}

/// `kiln system df`: images, containers and build cache.
pub fn df(root: Option<&Path>, format: &str) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let d = store.system_df()?;
    let (volumes, active_volumes, volume_bytes, unused_volume_bytes) =
        kiln_runtime::container::volume_usage(&store)?;
    let format = crate::render::format::Format::parse(format);
    if format != crate::render::format::Format::Table {
        crate::render::format::check(&format)?;
        // docker's fields (`docker system df --format '{{json .}}'`).
        let object = |kind: &str, (count, active): (usize, usize), size: u64, reclaimable: &str| {
            serde_json::json!({
                "Active": active.to_string(),
                "Reclaimable": reclaimable,
                "Size": table::size(size),
                "TotalCount": count.to_string(),
                "Type": kind,
            })
        };
        let objects = [
            object("Images", (d.images, d.images), d.image_bytes, "-"),
            object(
                "Containers",
                (d.containers, d.containers),
                d.container_bytes,
                &table::size(d.container_bytes),
            ),
            object(
                "Local Volumes",
                (volumes, active_volumes),
                volume_bytes,
                &table::size(unused_volume_bytes),
            ),
            object(
                "Build Cache",
                (d.cache.entries, d.cache.entries),
                d.cache.total,
                &table::size(d.cache.reclaimable),
            ),
        ];
        let text = crate::render::format::rows(
            &format,
            &objects,
            &[("TotalCount", "TOTAL")],
            String::new,
        )?;
        out!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = vec![
        vec![
            "Images".to_string(),
            d.images.to_string(),
            table::size(d.image_bytes),
            "-".into(),
        ],
        vec![
            "Containers".into(),
            d.containers.to_string(),
            table::size(d.container_bytes),
            table::size(d.container_bytes),
        ],
        vec![
            "Local Volumes".into(),
            volumes.to_string(),
            table::size(volume_bytes),
            table::size(unused_volume_bytes),
        ],
        vec![
            "Build Cache".into(),
            d.cache.entries.to_string(),
            table::size(d.cache.total),
            table::size(d.cache.reclaimable),
        ],
    ];
    out!(
        "{}",
        table::render(&["TYPE", "TOTAL", "SIZE", "RECLAIMABLE"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}
