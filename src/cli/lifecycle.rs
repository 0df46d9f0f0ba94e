//! `kiln start`, `kiln restart`, `kiln pause`, `kiln unpause`: a kept container started again
//! (through a monitor of its own, as `kiln run -d` does, its changes kept) or frozen.

use std::{path::Path, process::ExitCode};

use kiln_runtime::container::{self, control::Start, detach::Started};

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// Attach to the container's output and exit with its code.
    #[arg(short, long)]
    pub attach: bool,
    /// Containers (names or ID prefixes).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    /// Seconds to wait after the stop signal before killing it.
    #[arg(short = 't', long = "time", value_name = "N", default_value_t = 10)]
    pub time: u64,
    /// Containers (names or ID prefixes).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// Containers (names or ID prefixes).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// Starts container `what` through a new monitor; its id once it runs (a monitor itself: runs
/// it until it ends and returns its code in the error slot's place, see [`start`]).
fn start_one(store: &kiln_runtime::store::Store, what: &str) -> anyhow::Result<String> {
    let opts = match container::control::start(store, what)? {
        Start::Running(c) => return Ok(c.id),
        Start::Stopped(opts) => opts,
    };
    let id = opts.id.clone().unwrap_or_default();
    let exe = std::env::current_exe()?;
    let args = [
        "--root".into(),
        store.root().as_os_str().to_owned(),
        "start".into(),
        id.clone().into(),
    ];
    match container::detach::start(&exe, args)? {
        Started::Running(id) => Ok(id),
        Started::Failed { message, .. } => anyhow::bail!("{message}"),
    }
}

pub fn start(root: Option<&Path>, args: StartArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    if container::detach::is_monitor() {
        // This process is the monitor `start_one` started: it serves the container.
        let Some(what) = args.containers.first() else {
            return Ok(ExitCode::from(125));
        };
        // One monitor per container, whatever number of `kiln start`s run at once: the others
        // say it started (it runs) and leave.
        let _claim = match container::control::claim(&store, what) {
            Ok(Some(claim)) => claim,
            Ok(None) => {
                let id = store
                    .find_container(what)?
                    .map(|c| c.id)
                    .unwrap_or_default();
                outln!("started {id}");
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => {
                outln!("error {} {e}", e.exit_code());
                return Ok(ExitCode::from(e.exit_code()));
            }
        };
        return Ok(match container::control::start(&store, what) {
            Ok(Start::Stopped(mut opts)) => {
                ExitCode::from(container::detach::monitor(&store, &mut opts))
            }
            Ok(Start::Running(_)) => ExitCode::SUCCESS,
            Err(e) => {
                outln!("error {} {e}", e.exit_code());
                ExitCode::from(e.exit_code())
            }
        });
    }
    if args.attach {
        let [what] = args.containers.as_slice() else {
            anyhow::bail!("you cannot start and attach multiple containers at once");
        };
        // The output from now on (this start's), until the container ends; its exit code.
        let from = store
            .find_container(what)?
            .map(|c| container::logs::path(store.root(), &c.id))
            .and_then(|p| p.metadata().ok())
            .map_or(0, |m| m.len());
        let id = start_one(&store, what)?;
        container::logs::follow_from(&store, &id, from, |entries| {
            super::containers::write_entries(&entries, false)
        })?;
        let code = container::control::wait(&store, &id)?;
        return Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)));
    }
    Ok(super::containers::each(&args.containers, |n| {
        start_one(&store, n)?;
        Ok(n.to_string())
    }))
}

pub fn restart(root: Option<&Path>, args: RestartArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let timeout = std::time::Duration::from_secs(args.time);
    Ok(super::containers::each(&args.containers, |n| {
        container::control::stop(&store, n, timeout, None)?;
        start_one(&store, n)?;
        Ok(n.to_string())
    }))
}

pub fn pause(root: Option<&Path>, args: PauseArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    Ok(super::containers::each(&args.containers, |n| {
        container::control::pause(&store, n)?;
        Ok(n.to_string())
    }))
}

pub fn unpause(root: Option<&Path>, args: PauseArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    Ok(super::containers::each(&args.containers, |n| {
        container::control::unpause(&store, n)?;
        Ok(n.to_string())
    }))
}

#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// Do not pass input on (output only).
    #[arg(long = "no-stdin")]
    pub no_stdin: bool,
    /// The keys that detach without stopping the container (docker's `ctrl-p,ctrl-q`).
    #[arg(
        long = "detach-keys",
        value_name = "KEYS",
        default_value = "ctrl-p,ctrl-q"
    )]
    pub detach_keys: String,
    /// The container (name or ID prefix).
    pub container: String,
}

/// `kiln attach`: exits with the container's code when it ends, 0 when detached.
pub fn attach(root: Option<&Path>, args: AttachArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let keys = container::attach::detach_keys(&args.detach_keys).map_err(anyhow::Error::msg)?;
    let code = container::attach::attach(&store, &args.container, !args.no_stdin, &keys)?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
}
