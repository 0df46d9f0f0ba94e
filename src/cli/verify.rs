//! `kiln store verify [--repair]`: the store's fsck.

use std::{path::Path, process::ExitCode};

use anyhow::bail;

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Check every blob against its digest and every reference (tags, cache entries,
    /// containers); exit 1 when something is wrong.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Remove what is broken (and what needed it) and what nothing references; needs the store
    /// to itself (no other kiln process running on it).
    #[arg(long)]
    pub repair: bool,
}

pub fn run(root: Option<&Path>, cmd: StoreCommand) -> anyhow::Result<ExitCode> {
    let StoreCommand::Verify(args) = cmd;
    let store = super::store::open(root)?;
    let Some(report) = store.verify(args.repair)? else {
        bail!("--repair: other kiln processes are using the store; try again when they are done");
    };
    for p in &report.problems {
        outln!("problem: {p}");
    }
    for r in &report.repaired {
        outln!("repaired: {r}");
    }
    outln!(
        "{} blobs checked, {} problems{}",
        report.blobs,
        report.problems.len(),
        if args.repair { ", repaired" } else { "" }
    );
    Ok(if report.problems.is_empty() || args.repair {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
