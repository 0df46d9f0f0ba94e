//! Command-line definitions (clap) and dispatch to one module per command.

pub mod aliases;
mod build;
mod cache;
mod changes;
mod check;
mod containers;
mod dockerfile;
pub mod fastparse;
mod history;
mod images;
mod inspect;
mod lifecycle;
mod load;
mod manifest;
mod networks;
mod parse;
mod registry;
mod run;
mod save;
mod stats;
mod store;
mod system;
mod verify;
mod volumes;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// kiln: a daemonless image builder and runner.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, propagate_version = true)]
pub struct Cli {
    /// Store directory (else $KILN_ROOT, else /var/lib/kiln as root, $XDG_DATA_HOME/kiln otherwise).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile and a context.
    Build(Box<build::Args>),
    /// Run an image in kiln's sandbox (`-d`: in the background).
    Run(Box<run::Args>),
    /// Create a container as `run` would, without starting it (`kiln start` runs it).
    Create(Box<run::Args>),
    /// List containers (`-a`: also those that ended).
    Ps(containers::PsArgs),
    /// Run a command in a running container.
    Exec(containers::ExecArgs),
    /// Show a container's output (`-f`: follow it until the container ends).
    Logs(containers::LogsArgs),
    /// Stop containers: the stop signal, then SIGKILL after a grace time.
    Stop(containers::StopArgs),
    /// Send a signal to containers (SIGKILL by default).
    Kill(containers::KillArgs),
    /// Wait for containers to end; print their exit codes.
    Wait(containers::WaitArgs),
    /// Start containers that ended, their changes kept (`-a`: attach to the output).
    Start(lifecycle::StartArgs),
    /// Stop then start containers.
    Restart(lifecycle::RestartArgs),
    /// Attach to a detached container's output (and input, when it was started with -i).
    Attach(lifecycle::AttachArgs),
    /// Freeze every process of containers.
    Pause(lifecycle::PauseArgs),
    /// Thaw paused containers.
    Unpause(lifecycle::PauseArgs),
    /// Remove containers that ended (`-f`: also running ones).
    Rm(containers::RmArgs),
    /// Rename a container.
    Rename(containers::RenameArgs),
    /// List what a container changed in its root filesystem (A added, C changed, D deleted).
    Diff(changes::DiffArgs),
    /// Make a new image from a container's changes.
    Commit(changes::CommitArgs),
    /// Copy files between a container and the host (`CONTAINER:PATH` on one side).
    Cp(changes::CpArgs),
    /// Write a container's whole filesystem as a tar archive.
    Export(changes::ExportArgs),
    /// Make an image from a root filesystem tarball (a file, a URL, or - for stdin).
    Import(changes::ImportArgs),
    /// Show a container's processes (the host's `ps`, only the container's lines).
    Top(stats::TopArgs),
    /// List a container's published ports (or where one private port is published).
    Port(containers::PortArgs),
    /// Show containers' use of CPU, memory, pids, network and block I/O.
    Stats(stats::StatsArgs),
    /// Containers as a group: `kiln container prune`; `container ls|rm|inspect|logs|...` are
    /// the commands of those names.
    #[command(subcommand)]
    Container(containers::ContainerCommand),
    /// Images as a group: `kiln image prune`; `image ls|rm|inspect|history|tag|pull|push|save|
    /// load|import` are the commands of those names.
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// List images.
    Images(images::ImagesArgs),
    /// Download an image from a registry.
    Pull(registry::PullArgs),
    /// Upload an image to a registry.
    Push(registry::PushArgs),
    /// Log in to a registry (credentials stored where docker keeps them).
    Login(registry::LoginArgs),
    /// Log out from a registry.
    Logout(registry::LogoutArgs),
    /// Give an image another tag.
    Tag(images::TagArgs),
    /// Remove image tags.
    Rmi(images::RmiArgs),
    /// Multi-platform images: `create` (join images, without pulling layers), `inspect`,
    /// `push`, `rm`.
    #[command(subcommand)]
    Manifest(manifest::ManifestCommand),
    /// Show an image's or a container's configuration as JSON.
    Inspect(inspect::Args),
    /// Show an image's history (its steps, newest first).
    History(history::Args),
    /// Write images as an OCI layout with Docker's manifest.json (tar or directory).
    Save(save::Args),
    /// Load images from an OCI layout directory or archive.
    Load(load::Args),
    /// Networks: `create`, `ls`, `inspect`, `rm`, `prune`.
    #[command(subcommand)]
    Network(networks::NetworkCommand),
    /// Volumes: `create`, `ls`, `inspect`, `rm`, `prune`.
    #[command(subcommand)]
    Volume(volumes::VolumeCommand),
    /// The build cache: `ls`, `du`, `prune`, `inspect`, `explain`.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// `kiln system df`: space used by images, containers and the build cache.
    #[command(subcommand)]
    System(SystemCommand),
    /// Store maintenance (`kiln store verify [--repair]`).
    #[command(subcommand)]
    Store(verify::StoreCommand),
    /// Show kiln's version, commit and platform.
    Version(system::VersionArgs),
    /// Print a completion script for a shell: `kiln completion bash > /etc/bash_completion.d/kiln`
    /// (zsh, fish, elvish and powershell too).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages, one per command (`kiln.1`, `kiln-run.1`, ...), into a directory:
    /// `kiln manpages /usr/local/share/man/man1`.
    Manpages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Show the store, the sandbox's kernel features and the registries configured.
    Info(system::InfoArgs),
    /// Print the parsed Dockerfile (JSON or a tree).
    Parse(parse::Args),
    /// Run BuildKit's build checks on a Dockerfile.
    Check(check::Args),
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Space used by images, containers and the build cache.
    Df {
        /// `table`, `json` or a Go template (`{{.Type}} {{.Size}}`)
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Remove ended containers, untagged images and the build cache no image uses
    /// (`-a`: every cache entry)
    Prune {
        #[arg(short, long)]
        all: bool,
        /// Do not ask (kiln never asks without a terminal; accepted for docker's scripts)
        #[arg(short, long)]
        force: bool,
        /// Anonymous volumes no container uses too
        #[arg(long)]
        volumes: bool,
    },
    /// The emulators the kernel runs other platforms' binaries with (binfmt_misc); `--install`
    /// registers those installed (Debian's qemu-user-static), with the fix-binary flag
    Binfmt(system::BinfmtArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Build(a) => build::run(cli.root.as_deref(), *a),
        Command::Create(a) => run::create(cli.root.as_deref(), *a),
        Command::Parse(a) => parse::run(a),
        Command::Manifest(c) => manifest::run(cli.root.as_deref(), c),
        Command::Version(a) => system::version(a),
        Command::Manpages { dir } => {
            use clap::CommandFactory;
            std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
            let written = manpages(&Cli::command(), "kiln", &dir)?;
            outln!("{written} man pages in {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Completion { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "kiln", &mut out);
            out!("{}", String::from_utf8_lossy(&out));
            Ok(ExitCode::SUCCESS)
        }
        Command::Info(a) => system::info(cli.root.as_deref(), a),
        Command::Check(a) => check::run(a),
        Command::Load(a) => load::run(cli.root.as_deref(), a),
        Command::Images(a) => images::images(cli.root.as_deref(), a),
        Command::Inspect(a) => inspect::run(cli.root.as_deref(), a),
        Command::History(a) => history::run(cli.root.as_deref(), a),
        Command::Tag(a) => images::tag(cli.root.as_deref(), a),
        Command::Rmi(a) => images::rmi(cli.root.as_deref(), a),
        Command::Save(a) => save::run(cli.root.as_deref(), a),
        Command::Run(a) => run::run(cli.root.as_deref(), *a),
        Command::Cache(c) => cache::run(cli.root.as_deref(), c),
        Command::Volume(c) => volumes::run(cli.root.as_deref(), c),
        Command::Network(c) => networks::run(cli.root.as_deref(), c),
        Command::System(SystemCommand::Df { format }) => cache::df(cli.root.as_deref(), &format),
        Command::System(SystemCommand::Binfmt(a)) => system::binfmt(a),
        Command::System(SystemCommand::Prune {
            all,
            force,
            volumes,
        }) => {
            let what = format!(
                "This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n{}  - all dangling images\n  - {}",
                if volumes {
                    "  - all anonymous volumes not used by at least one container\n"
                } else {
                    ""
                },
                if all {
                    "all build cache"
                } else {
                    "all build cache no image uses"
                }
            );
            if !confirm(&what, force)? {
                return Ok(ExitCode::SUCCESS);
            }
            images::system_prune(cli.root.as_deref(), all, volumes)
        }
        Command::Image(c) => images::image(cli.root.as_deref(), c),
        Command::Store(c) => verify::run(cli.root.as_deref(), c),
        Command::Ps(a) => containers::ps(cli.root.as_deref(), a),
        Command::Rm(a) => containers::rm(cli.root.as_deref(), a),
        Command::Rename(a) => containers::rename(cli.root.as_deref(), a),
        Command::Start(a) => lifecycle::start(cli.root.as_deref(), a),
        Command::Restart(a) => lifecycle::restart(cli.root.as_deref(), a),
        Command::Pause(a) => lifecycle::pause(cli.root.as_deref(), a),
        Command::Attach(a) => lifecycle::attach(cli.root.as_deref(), a),
        Command::Diff(a) => changes::diff(cli.root.as_deref(), a),
        Command::Cp(a) => changes::cp(cli.root.as_deref(), a),
        Command::Export(a) => changes::export(cli.root.as_deref(), a),
        Command::Import(a) => changes::import(cli.root.as_deref(), a),
        Command::Top(a) => stats::top(cli.root.as_deref(), a),
        Command::Port(a) => containers::port(cli.root.as_deref(), a),
        Command::Stats(a) => stats::stats(cli.root.as_deref(), a),
        Command::Commit(a) => changes::commit(cli.root.as_deref(), a),
        Command::Unpause(a) => lifecycle::unpause(cli.root.as_deref(), a),
        Command::Container(c) => containers::container(cli.root.as_deref(), c),
        Command::Exec(a) => containers::exec(cli.root.as_deref(), a),
        Command::Logs(a) => containers::logs(cli.root.as_deref(), a),
        Command::Stop(a) => containers::stop(cli.root.as_deref(), a),
        Command::Kill(a) => containers::kill(cli.root.as_deref(), a),
        Command::Wait(a) => containers::wait(cli.root.as_deref(), a),
        Command::Pull(a) => registry::pull(cli.root.as_deref(), a),
        Command::Push(a) => registry::push(cli.root.as_deref(), a),
        Command::Login(a) => registry::login(a),
        Command::Logout(a) => registry::logout(a),
    }
}

/// docker's question before a prune, asked only on a terminal and without `-f`: `true` to go
/// on. Without a terminal kiln never asks (scripts and CI go on), unlike docker, which reads
/// an answer from whatever stdin is.
pub fn confirm(warning: &str, force: bool) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal};
    if force || !std::io::stdin().is_terminal() {
        return Ok(true);
    }
    eprint!("WARNING! {warning}\nAre you sure you want to continue? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

/// Writes `cmd`'s man page as `NAME.1` in `dir`, then each subcommand's as `NAME-SUB.1`;
/// how many were written.
fn manpages(cmd: &clap::Command, name: &str, dir: &std::path::Path) -> anyhow::Result<usize> {
    let page = cmd
        .clone()
        .display_name(name.to_string())
        .bin_name(name.replace('-', " "));
    let path = dir.join(format!("{name}.1"));
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out)?;
    std::fs::write(&path, out).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut n = 1;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        n += manpages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(n)
}

/// `--label K=V` values as docker reads them (`K` alone: an empty value).
pub fn labels(values: &[String]) -> std::collections::BTreeMap<String, String> {
    values
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// `--memory SIZE` and `--pids-limit N` as cgroup limits.
pub fn limits(
    memory: Option<&str>,
    pids: Option<u64>,
) -> anyhow::Result<kiln_runtime::sandbox::cgroup::Limits> {
    let memory = match memory {
        None => None,
        Some(m) => match kiln_parser::instruction::values::parse_ram_size(m) {
            // Docker's floor: below it nothing starts.
            Some(b) if b >= 6 << 20 => Some(b),
            Some(_) => anyhow::bail!("--memory {m}: the minimum is 6m"),
            None => anyhow::bail!("--memory {m}: expected a size such as 64m or 1g"),
        },
    };
    if pids == Some(0) {
        anyhow::bail!("--pids-limit 0: at least 1");
    }
    Ok(kiln_runtime::sandbox::cgroup::Limits {
        memory,
        pids,
        ..Default::default()
    })
}
