//! `kiln diff`, `kiln commit` and `kiln cp`: a container's root filesystem: its changes, listed as
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
        outln!("{} {}", c.kind, c.path);
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
    outln!("{}", done?.config);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct CpArgs {
    /// Archive mode: keep the owners (as root) and setuid/setgid bits of what is copied out of
    /// a container; without it the copies are the caller's, with those bits dropped
    #[arg(short = 'a', long)]
    pub archive: bool,
    /// `CONTAINER:PATH`, a host path, or `-` (a tar on stdin, unpacked into a directory).
    pub source: String,
    /// `CONTAINER:PATH`, a host path, or `-` (a tar on stdout); exactly one of the two names
    /// a container.
    pub destination: String,
}

/// docker's rule: `NAME:PATH` names a container when nothing before the colon is a `/` (a host
/// path with a colon is written `./a:b`).
fn container_path(arg: &str) -> Option<(&str, &str)> {
    let (name, path) = arg.split_once(':')?;
    (!name.is_empty() && !name.contains('/')).then_some((name, path))
}

pub fn cp(root: Option<&Path>, args: CpArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    match (
        container_path(&args.source),
        container_path(&args.destination),
    ) {
        (Some((c, src)), None) if args.destination == "-" => {
            container::copy::copy_out_tar(&store, c, src, std::io::stdout().lock())?;
        }
        (Some((c, src)), None) => {
            container::copy::copy_out(&store, c, src, Path::new(&args.destination), args.archive)?;
        }
        (None, Some((c, dest))) if args.source == "-" => {
            container::copy::copy_in_tar(&store, c, std::io::stdin().lock(), dest)?;
        }
        (None, Some((c, dest))) => {
            container::copy::copy_in(&store, c, Path::new(&args.source), dest)?;
        }
        (Some(_), Some(_)) => anyhow::bail!("copying between containers is not supported"),
        (None, None) => anyhow::bail!(
            "must specify at least one container source (CONTAINER:PATH as source or destination)"
        ),
    }
    Ok(ExitCode::SUCCESS)
}
