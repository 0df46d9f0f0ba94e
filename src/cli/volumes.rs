//! `kiln volume create|ls|inspect|rm|prune`: docker's volume commands, same flags and output.

use std::{path::Path, process::ExitCode};

use anyhow::bail;
use kiln_runtime::{container, store::VolumeInfo};

use crate::render::{format::Format, table};

#[derive(Debug, clap::Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a name is made when none is given).
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show volumes' details as JSON.
    Inspect(InspectArgs),
    /// Remove volumes no container uses.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove anonymous volumes no container uses (`-a`: named ones too).
    Prune(PruneArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The volume driver: only `local`.
    #[arg(short, long, default_value = "local", value_name = "DRIVER")]
    pub driver: String,
    /// A label `K=V`.
    #[arg(long, value_name = "K=V")]
    pub label: Vec<String>,
    /// A driver option `K=V`: `type`, `device` and `o`, as mount(8) takes them
    /// (`-o type=tmpfs -o device=tmpfs -o o=size=64m`; `-o type=none -o o=bind -o device=/srv`).
    #[arg(short = 'o', long = "opt", value_name = "K=V")]
    pub opt: Vec<String>,
    /// The volume's name.
    pub name: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only the names.
    #[arg(short, long)]
    pub quiet: bool,
    /// `table`, `json` or a Go template (`{{.Name}}`).
    #[arg(long, default_value = "", value_name = "FORMAT")]
    pub format: String,
    /// `dangling=true|false`, `name=TEXT`, `label=K[=V]`, `driver=local`.
    #[arg(short, long, value_name = "FILTER")]
    pub filter: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A Go template run on each volume.
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// No error for a volume that does not exist.
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Named volumes too, not only anonymous ones.
    #[arg(short, long)]
    pub all: bool,
    /// Do not ask.
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(root: Option<&Path>, cmd: VolumeCommand) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    match cmd {
        VolumeCommand::Create(a) => {
            if a.driver != "local" {
                bail!(
                    "volume driver {:?}: kiln has the local driver only",
                    a.driver
                );
            }
            let labels = super::labels(&a.label);
            let options = super::labels(&a.opt);
            container::volume_mount::validate(&options).map_err(anyhow::Error::msg)?;
            let v = store.create_volume(a.name.as_deref(), (&labels, &options))?;
            outln!("{}", v.name);
        }
        VolumeCommand::Ls(a) => ls(&store, &a)?,
        VolumeCommand::Inspect(a) => {
            let mut out = Vec::new();
            for n in &a.names {
                match store.volume(n)? {
                    Some(v) => out.push(inspect_json(&v)),
                    None => bail!("no such volume: {n}"),
                }
            }
            match a.format.as_deref().map(Format::parse) {
                Some(Format::Template { text, .. }) => {
                    for o in &out {
                        outln!("{}", crate::render::format::render(&text, o)?);
                    }
                }
                _ => outln!("{}", serde_json::to_string_pretty(&out)?),
            }
        }
        VolumeCommand::Rm(a) => {
            let mut failed = false;
            for n in &a.names {
                let users = container::volumes_in_use(&store)
                    .remove(n)
                    .unwrap_or_default();
                if !users.is_empty() {
                    let short: Vec<String> = users.iter().map(|u| u[..12].to_string()).collect();
                    eprintln!(
                        "kiln: error: remove {n}: volume is in use - [{}]",
                        short.join(", ")
                    );
                    failed = true;
                } else if store.remove_volume(n)? || a.force {
                    outln!("{n}");
                } else {
                    eprintln!("kiln: error: no such volume: {n}");
                    failed = true;
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        VolumeCommand::Prune(a) => {
            let what = if a.all {
                "This will remove all local volumes not used by at least one container."
            } else {
                "This will remove anonymous local volumes not used by at least one container."
            };
            if !super::confirm(what, a.force)? {
                return Ok(ExitCode::SUCCESS);
            }
            let (gone, freed) = container::prune_volumes(&store, a.all)?;
            if !gone.is_empty() {
                outln!("Deleted Volumes:");
                for n in &gone {
                    outln!("{n}");
                }
                outln!();
            }
            outln!("Total reclaimed space: {}", table::size(freed));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// docker's `volume inspect` object.
fn inspect_json(v: &VolumeInfo) -> serde_json::Value {
    serde_json::json!({
        "CreatedAt": kiln_runtime::timefmt::rfc3339(v.created),
        "Driver": "local",
        "Labels": if v.labels.is_empty() { serde_json::Value::Null } else { serde_json::json!(v.labels) },
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": if v.options.is_empty() { serde_json::Value::Null } else { serde_json::json!(v.options) },
        "Scope": "local",
    })
}

fn ls(store: &kiln_runtime::store::Store, a: &LsArgs) -> anyhow::Result<()> {
    let mut list = store.volumes()?;
    for f in &a.filter {
        let (k, val) = f
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("bad filter {f:?}: expected KEY=VALUE"))?;
        match k {
            "dangling" => {
                let want = matches!(val, "true" | "1");
                let in_use = container::volumes_in_use(store);
                list.retain(|v| in_use.contains_key(&v.name) != want);
            }
            "name" => list.retain(|v| v.name.contains(val)),
            "driver" => list.retain(|_| val == "local"),
            "label" => {
                let (lk, lv) = match val.split_once('=') {
                    Some((lk, lv)) => (lk, Some(lv)),
                    None => (val, None),
                };
                list.retain(|v| {
                    v.labels
                        .get(lk)
                        .is_some_and(|x| lv.is_none_or(|lv| x == lv))
                });
            }
            other => bail!("invalid filter {other:?}"),
        }
    }
    if a.quiet {
        for v in &list {
            outln!("{}", v.name);
        }
        return Ok(());
    }
    let format = Format::parse(&a.format);
    crate::render::format::check(&format)?;
    let objects: Vec<serde_json::Value> = list
        .iter()
        .map(|v| {
            let labels: Vec<String> = v.labels.iter().map(|(k, x)| format!("{k}={x}")).collect();
            serde_json::json!({
                "Driver": "local",
                "Labels": labels.join(","),
                "Links": "N/A",
                "Mountpoint": v.mountpoint,
                "Name": v.name,
                "Scope": "local",
                "Size": "N/A",
            })
        })
        .collect();
    let text = crate::render::format::rows(&format, &objects, &[("Name", "VOLUME NAME")], || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|v| vec!["local".to_string(), v.name.clone()])
            .collect();
        table::render(&["DRIVER", "VOLUME NAME"], &rows)
    })?;
    out!("{text}");
    Ok(())
}
