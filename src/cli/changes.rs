//! `kiln diff` and `kiln commit`: a container's changes to its root filesystem, listed as
//! docker lists them or made into a new image.

use std::{path::Path, process::ExitCode};

use kiln_runtime::container;

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The container (name or ID prefix).
    pub container: String,
}

#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    /// The history entry's comment.
    #[arg(short, long, value_name = "TEXT")]
    pub message: Option<String>,
    /// The image's author.
    #[arg(short, long, value_name = "NAME")]
    pub author: Option<String>,
    /// A Dockerfile instruction applied to the image's config (CMD, ENTRYPOINT, ENV, EXPOSE,
    /// LABEL, ONBUILD, USER, VOLUME, WORKDIR, STOPSIGNAL).
    #[arg(short, long, value_name = "INSTRUCTION")]
    pub change: Vec<String>,
    /// Freeze the container while its changes are read (docker's default; `--pause=false` to
    /// read them while it runs).
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub pause: bool,
    /// The container (name or ID prefix).
    pub container: String,
    /// The new image's name (`REPO[:TAG]`).
    pub image: Option<String>,
}

pub fn diff(root: Option<&Path>, args: DiffArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    for c in container::changes::diff(&store, &args.container)? {
        println!("{} {}", c.kind, c.path);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn commit(root: Option<&Path>, args: CommitArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    // A running container is frozen meanwhile, so what is read is one moment's state.
    let frozen = args.pause && container::control::pause(&store, &args.container).is_ok();
    let done = kiln_builder::commit::commit(
        &store,
        &kiln_builder::commit::CommitOptions {
            container: args.container.clone(),
            tag: args.image,
            message: args.message,
            author: args.author,
            changes: args.change,
        },
    );
    if frozen {
        container::control::unpause(&store, &args.container)?;
    }
    println!("{}", done?.config);
    Ok(ExitCode::SUCCESS)
}
