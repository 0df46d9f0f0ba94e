//! `kiln diff`, `kiln commit` and `kiln cp`: a container's root filesystem: its changes, listed as
//! docker lists them or made into a new image.

use std::{path::Path, process::ExitCode};

use anyhow::Context;

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

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Write to this file instead of stdout
    #[arg(short, long)]
    pub output: Option<std::path::PathBuf>,
    pub container: String,
}

/// `kiln export`: the container's root as `docker export` writes it (a tar of `/`, running or
/// ended; paths resolved inside its root, links kept as links).
pub fn export(root: Option<&Path>, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    match &args.output {
        Some(path) => {
            let f = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let mut w = std::io::BufWriter::new(f);
            container::copy::copy_out_tar(&store, &args.container, "/", &mut w)?;
            std::io::Write::flush(&mut w)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                anyhow::bail!(
                    "refusing to write an archive to a terminal: use -o FILE or redirect stdout"
                );
            }
            container::copy::copy_out_tar(&store, &args.container, "/", std::io::stdout().lock())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Dockerfile instructions applied to the image's config (CMD, ENV, ...)
    #[arg(short, long)]
    pub change: Vec<String>,
    /// The history entry's comment (default: `Imported from SOURCE`)
    #[arg(short, long)]
    pub message: Option<String>,
    /// The platform the files are for (`linux/arm64`; default: this machine's)
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// The tarball: a file, an http(s) URL, or - for stdin (plain, gzip, bzip2, xz or zstd)
    pub source: String,
    /// `REPOSITORY[:TAG]` for the image
    pub reference: Option<String>,
}

/// `kiln import`: prints the new image's ID, as `docker import`.
pub fn import(root: Option<&Path>, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    if let Some(r) = &args.reference {
        kiln_runtime::store::normalize_tag(r)
            .with_context(|| format!("invalid reference {r:?}"))?;
    }
    let opts = kiln_builder::import::ImportOptions {
        source: args.source.clone(),
        tag: args.reference.clone(),
        message: args.message.clone(),
        changes: args.change.clone(),
        platform: args
            .platform
            .as_deref()
            .map(super::registry::platform)
            .transpose()?,
    };
    let done = if args.source == "-" {
        kiln_builder::import::import(&store, std::io::stdin().lock(), &opts)
    } else if args.source.starts_with("http://") || args.source.starts_with("https://") {
        let resp = kiln_builder::import::fetch(&args.source)
            .with_context(|| format!("cannot download {}", args.source))?;
        kiln_builder::import::import(&store, resp, &opts)
    } else {
        let f = std::fs::File::open(&args.source)
            .with_context(|| format!("cannot open {}", args.source))?;
        kiln_builder::import::import(&store, f, &opts)
    };
    outln!("{}", done?.config);
    Ok(ExitCode::SUCCESS)
}
