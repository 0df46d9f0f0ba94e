//! `kiln run [OPTIONS] IMAGE [ARG...]`: runs an image in kiln's sandbox, with docker's meanings
//! for the options; kiln exits with the container's exit code, or docker's 125 (kiln failed),
//! 126 (the command cannot run) or 127 (the command does not exist).
//!
//! `-d`: kiln starts itself again as the container's monitor (a session of its own, no
//! terminal), which runs the container as the foreground `kiln run` does, with its output going
//! to the container's log, and records how it ends. The first `kiln` waits until the container
//! runs (or failed to start), prints its id and returns.

use std::process::{ExitCode, Stdio};

use anyhow::{Context, bail};
use kiln_runtime::{
    container::{self, RunOptions},
    sandbox::process::Network,
};

#[derive(Debug, clap::Args)]
#[command(trailing_var_arg = true)]
pub struct Args {
    /// Remove the container when it exits (otherwise it is kept for `kiln ps -a` until
    /// `kiln rm`).
    #[arg(long)]
    pub rm: bool,
    /// The container's name (unique; default: a generated `adjective_name`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Set an environment variable (`K=V`, or `K` to pass the host's value).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Read environment variables from a file (one `K=V` or `K` per line, `#` comments).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<std::path::PathBuf>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User (`name|uid[:group|gid]`).
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Override the image's ENTRYPOINT (`""` clears it).
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// `host` (the default: the host's network) or `none` (loopback only).
    #[arg(long, value_name = "MODE", default_value = "host")]
    pub network: String,
    /// The container's hostname (default: the first 12 digits of its id).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Bind a host path into the container (`HOST:CONTAINER[:ro]`; a missing host directory is
    /// created).
    #[arg(short = 'v', long = "volume", value_name = "HOST:CTR[:ro]")]
    pub volume: Vec<String>,
    /// Memory limit (`64m`, `1g`; a cgroup, where the kernel allows it).
    #[arg(short = 'm', long = "memory", value_name = "SIZE")]
    pub memory: Option<String>,
    /// Limit on processes and threads (a cgroup, where the kernel allows it).
    #[arg(long = "pids-limit", value_name = "N")]
    pub pids_limit: Option<u64>,
    /// Mount the container's root filesystem read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Run in the background: print the container's id once it runs; its output goes to its
    /// log (`kiln logs`).
    #[arg(short = 'd', long = "detach")]
    pub detach: bool,
    /// Keep stdin open (without it the container reads nothing, as docker's).
    #[arg(short = 'i', long = "interactive")]
    pub interactive: bool,
    /// Give the container a terminal (its own, in raw mode against yours; Ctrl-C reaches its
    /// foreground job, window size changes follow).
    #[arg(short = 't', long = "tty")]
    pub tty: bool,
    /// A health check command (run by `/bin/sh -c` in the container), over the image's.
    #[arg(long = "health-cmd", value_name = "CMD")]
    pub health_cmd: Option<String>,
    /// Time between health checks (`30s`, `1m`).
    #[arg(long = "health-interval", value_name = "DURATION")]
    pub health_interval: Option<String>,
    /// Longest a health check may run.
    #[arg(long = "health-timeout", value_name = "DURATION")]
    pub health_timeout: Option<String>,
    /// Failures in a row that make the container unhealthy.
    #[arg(long = "health-retries", value_name = "N")]
    pub health_retries: Option<i64>,
    /// Time after the start during which failures do not count.
    #[arg(long = "health-start-period", value_name = "DURATION")]
    pub health_start_period: Option<String>,
    /// Run no health check, whatever the image says.
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
    /// Log options of a detached container, as docker's json-file driver: `max-size=10m`
    /// (rotate past it), `max-file=3` (files kept, the current one included; default 1).
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    pub log_opt: Vec<String>,
    /// Restart policy of a detached container: `no`, `on-failure[:N]`, `always`,
    /// `unless-stopped` (`kiln stop` and `kiln kill` end it for good).
    #[arg(long, value_name = "POLICY", default_value = "no")]
    pub restart: String,
    /// Image (tag or manifest digest).
    pub image: String,
    /// Arguments: they replace the image's CMD.
    #[arg(allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Pull the image before running: `missing` (when the store lacks it), `always`, `never`.
    #[arg(long, value_enum, default_value = "missing", value_name = "POLICY")]
    pub pull: super::registry::PullPolicy,
    #[command(flatten)]
    pub registry: super::registry::RegistryFlags,
}

pub fn run(root: Option<&std::path::Path>, args: Args) -> anyhow::Result<ExitCode> {
    let health_override = health(&args)?;
    let restart = container::restart::Policy::parse(&args.restart).map_err(anyhow::Error::msg)?;
    if restart != container::restart::Policy::No && args.rm {
        bail!("conflicting options: --restart and --rm");
    }
    let store = super::store::open(root)?;
    let network = match args.network.as_str() {
        "host" | "default" => Network::Host,
        "none" => Network::None,
        other => bail!("--network {other}: kiln supports host and none"),
    };
    let mut env = Vec::new();
    for f in &args.env_file {
        let bytes =
            kiln_runtime::bounded::read(f, kiln_runtime::bounded::TEXT_LIMIT, "an env file")
                .map_err(|e| anyhow::anyhow!("--env-file {e}"))?;
        let text = String::from_utf8(bytes)
            .with_context(|| format!("--env-file {}: not UTF-8 text", f.display()))?;
        env.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    env.extend(args.env);
    let volumes = args
        .volume
        .iter()
        .map(|v| container::Volume::parse(v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let monitor = container::detach::is_monitor();
    if !monitor {
        super::registry::pull_for_run(&store, &args.image, args.pull, &args.registry)?;
    }
    let detach_now = args.detach && !monitor;
    let mut opts = RunOptions {
        image: args.image,
        args: args.args,
        entrypoint: args.entrypoint,
        env,
        workdir: args.workdir,
        user: args.user,
        network: Some(network),
        hostname: args.hostname,
        volumes,
        read_only: args.read_only,
        limits: super::limits(args.memory.as_deref(), args.pids_limit)?,
        name: args.name,
        remove: args.rm,
        id: None,
        started: None,
        log_rotation: log_rotation(&args.log_opt)?,
        health: health_override,
        restart,
        tty: args.tty,
        interactive: args.interactive,
    };
    // Every option is checked (above) before the monitor starts: a bad one is reported here.
    if detach_now {
        return detach();
    }
    if monitor {
        let code = container::detach::monitor(&store, &mut opts);
        return Ok(ExitCode::from(code));
    }
    if restart != container::restart::Policy::No {
        eprintln!(
            "kiln: warning: --restart is applied by a detached container's monitor: this run \
             in the foreground is not restarted (kiln start runs it with its policy)"
        );
    }
    let io = if opts.tty {
        use std::{io::IsTerminal, os::fd::AsFd};
        let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
        let tty_in = stdin.is_terminal();
        let tty_out = stdout.is_terminal();
        if opts.interactive && !tty_in {
            // docker refuses; kiln goes on with the input copied as it comes.
            eprintln!("kiln: warning: the input device is not a TTY");
        }
        let dup = |fd: std::os::fd::BorrowedFd<'_>, yes: bool| {
            yes.then(|| fd.try_clone_to_owned()).transpose()
        };
        container::Io::Terminal(container::tty::Terminal {
            input: dup(stdin.as_fd(), opts.interactive)?,
            user: dup(stdin.as_fd(), opts.interactive && tty_in)?,
            size: dup(stdout.as_fd(), tty_out)?.or(dup(stdin.as_fd(), tty_in)?),
            output: Box::new(stdout),
        })
    } else {
        let stdin = if opts.interactive {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        container::Io::Pipes(stdin, Stdio::inherit(), Stdio::inherit())
    };
    match container::run(
        &store,
        &opts,
        io,
        &|w| eprintln!("kiln: warning: {w}"),
        &|_| false,
    ) {
        Ok(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(255))),
        // docker's codes, so scripts that test for 125/126/127 behave the same.
        Err(e) => {
            eprintln!("kiln: error: {e}");
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}

/// `kiln run -d`: this same command again, as the container's monitor; the id once it runs.
fn detach() -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find the kiln binary")?;
    match container::detach::start(&exe, std::env::args_os().skip(1))? {
        container::detach::Started::Running(id) => {
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        container::detach::Started::Failed { code, message } => {
            eprintln!("kiln: error: {message}");
            Ok(ExitCode::from(code))
        }
    }
}

/// `--log-opt max-size=,max-file=` as docker's json-file driver reads them.
fn log_rotation(
    opts: &[String],
) -> anyhow::Result<Option<kiln_runtime::container::logs::Rotation>> {
    let (mut size, mut files) = (None, None);
    for o in opts {
        match o.split_once('=') {
            Some(("max-size", v)) => {
                let n = kiln_parser::instruction::values::parse_ram_size(v)
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        anyhow::anyhow!("--log-opt max-size={v}: expected a size such as 10m")
                    })?;
                size = Some(n);
            }
            Some(("max-file", v)) => {
                let n = v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    anyhow::anyhow!("--log-opt max-file={v}: expected a count of at least 1")
                })?;
                files = Some(n);
            }
            _ => bail!("--log-opt {o}: kiln's json-file logs take max-size= and max-file="),
        }
    }
    match (size, files) {
        (Some(max_size), files) => Ok(Some(kiln_runtime::container::logs::Rotation {
            max_size,
            max_file: files.unwrap_or(1),
        })),
        (None, Some(_)) => bail!("--log-opt max-file needs max-size"),
        (None, None) => Ok(None),
    }
}

/// `--health-*` and `--no-healthcheck` as one override of the image's HEALTHCHECK.
fn health(args: &Args) -> anyhow::Result<Option<kiln_runtime::oci::Healthcheck>> {
    let dur = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<i64>> {
        v.as_deref()
            .map(|s| {
                kiln_parser::instruction::values::parse_go_duration(s)
                    .filter(|n| *n >= 0)
                    .and_then(|n| i64::try_from(n).ok())
                    .ok_or_else(|| anyhow::anyhow!("--{flag} {s}: expected a duration such as 30s"))
            })
            .transpose()
    };
    let over = kiln_runtime::oci::Healthcheck {
        test: args
            .health_cmd
            .iter()
            .flat_map(|c| ["CMD-SHELL".to_string(), c.clone()])
            .collect(),
        interval: dur("health-interval", &args.health_interval)?,
        timeout: dur("health-timeout", &args.health_timeout)?,
        start_period: dur("health-start-period", &args.health_start_period)?,
        start_interval: None,
        retries: args.health_retries,
    };
    if args.no_healthcheck {
        if over != kiln_runtime::oci::Healthcheck::default() {
            bail!("--no-healthcheck conflicts with the --health-* options");
        }
        return Ok(Some(over));
    }
    Ok((over != kiln_runtime::oci::Healthcheck::default()).then_some(over))
}
