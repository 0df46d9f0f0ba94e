//! `kiln ps` and `kiln rm`: the containers `kiln run` kept.

use crate::render::time::human_duration;
use std::{path::Path, process::ExitCode};

use kiln_runtime::{container, store::ContainerState};

use crate::render::table;

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Show every container (default: running ones).
    #[arg(short, long)]
    pub all: bool,
    /// Only show container IDs.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Kill a running container's `kiln run` first.
    #[arg(short, long)]
    pub force: bool,
    /// Containers (names or ID prefixes).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn ps(root: Option<&Path>, args: PsArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let now = crate::render::time::now();
    let list: Vec<_> = store
        .containers()?
        .into_iter()
        .filter(|c| args.all || c.state() == ContainerState::Running)
        .collect();
    if args.quiet {
        for c in list {
            println!("{}", &c.id[..12.min(c.id.len())]);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let status = match c.state() {
                ContainerState::Running => format!("Up {}", human_duration(now - c.created)),
                ContainerState::Exited(code) => format!(
                    "Exited ({code}) {} ago",
                    human_duration(now - c.finished.unwrap_or(c.created))
                ),
                ContainerState::Dead => "Dead".to_string(),
            };
            let mut command = c.command.clone();
            if command.chars().count() > 20 {
                command = command.chars().take(19).collect::<String>() + "…";
            }
            vec![
                c.id[..12.min(c.id.len())].to_string(),
                c.image.clone(),
                format!("\"{command}\""),
                format!("{} ago", human_duration(now - c.created)),
                status,
                c.name.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "NAMES"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// `3 seconds`, `5 minutes`, `2 hours`, `4 days`.
pub fn rm(root: Option<&Path>, args: RmArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let mut failed = false;
    for what in &args.containers {
        match container::remove(&store, what, args.force) {
            Ok(_) => println!("{what}"),
            Err(e) => {
                eprintln!("kiln: error: {e}");
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
