//! `kiln ps`, `kiln rm`, `kiln logs`, `kiln stop`, `kiln kill`, `kiln wait`, `kiln exec`: the containers
//! `kiln run` started and kept.

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
    /// Only the N most recently created (all states).
    #[arg(short = 'n', long = "last", value_name = "N")]
    pub last: Option<usize>,
    /// Only the most recently created container (all states): `-n 1`
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Also each container's size: what it wrote (and the image's below it)
    #[arg(short, long)]
    pub size: bool,
    /// Show whole IDs and commands
    #[arg(long)]
    pub no_trunc: bool,
    /// Only containers that match (`status=running|paused|restarting|exited|dead`, `name=`,
    /// `id=`, `ancestor=`;
    /// repeatable, all must match).
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// `table` (docker's columns), `json` (one object per line, docker's field names) or a Go
    /// template (`{{.Names}}`, `table {{.ID}}\t{{.Status}}`)
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Kill a running container's `kiln run` first.
    #[arg(short, long)]
    pub force: bool,
    /// Remove the container's anonymous volumes too.
    #[arg(short, long)]
    pub volumes: bool,
    /// Containers (names or ID prefixes).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn ps(root: Option<&Path>, args: PsArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let now = crate::render::time::now();
    let mut filters = Vec::new();
    for f in &args.filter {
        let Some((k, v)) = f.split_once('=') else {
            anyhow::bail!("invalid --filter {f:?}: expected KEY=VALUE");
        };
        filters.push((k.to_string(), v.to_string()));
    }
    // A status filter chooses among every container, as docker's.
    let last = if args.latest { Some(1) } else { args.last };
    let any_state = args.all || last.is_some() || filters.iter().any(|(k, _)| k == "status");
    let mut list = Vec::new();
    for c in store.containers()? {
        let mut keep = any_state || c.state().is_live();
        for (k, v) in &filters {
            match container::control::ps_filter(&store, &c, k, v) {
                Some(ok) => keep &= ok,
                None => anyhow::bail!("invalid --filter {k}: status, name, id, ancestor or label"),
            }
        }
        if keep {
            list.push(c);
        }
    }
    if let Some(n) = last {
        list.truncate(n);
    }
    let id_of = |c: &kiln_runtime::store::Container| {
        if args.no_trunc {
            c.id.clone()
        } else {
            c.id[..12.min(c.id.len())].to_string()
        }
    };
    // docker's PORTS: what a running container publishes (`0.0.0.0:8080->80/tcp`).
    let ports_of = |c: &kiln_runtime::store::Container| {
        container::control::published(&store, &c.id)
            .iter()
            .map(kiln_runtime::network::ports::describe)
            .collect::<Vec<_>>()
            .join(", ")
    };
    // docker's Networks field: the networks a container is (or would be) on.
    let networks_of = |c: &kiln_runtime::store::Container| {
        container::networks::shown(&container::kept_options(&store, &c.id).unwrap_or_default())
    };
    // docker's SIZE: what the container wrote (its upper directory), and the image below.
    let size_of = |c: &kiln_runtime::store::Container| {
        let (written, image) = container::changes::sizes(&store, &c.id, &c.image);
        format!(
            "{} (virtual {})",
            table::size_precision(written, 3),
            table::size_precision(written + image, 3)
        )
    };
    let status_of = |c: &kiln_runtime::store::Container| match c.state() {
        state @ (ContainerState::Running | ContainerState::Paused) => {
            // docker's suffix for a container with a health check.
            let health = store
                .container_health(&c.id)
                .ok()
                .flatten()
                .and_then(|h| h["Status"].as_str().map(str::to_string));
            let suffix = match health.as_deref() {
                Some("starting") => " (health: starting)".to_string(),
                Some(h) => format!(" ({h})"),
                None => String::new(),
            };
            let paused = if state == ContainerState::Paused {
                " (Paused)"
            } else {
                ""
            };
            let up = human_duration(now - c.started.unwrap_or(c.created));
            format!("Up {up}{paused}{suffix}")
        }
        ContainerState::Restarting(code) => format!(
            "Restarting ({code}) {} ago",
            human_duration(now - c.finished.unwrap_or(c.created))
        ),
        ContainerState::Exited(code) => format!(
            "Exited ({code}) {} ago",
            human_duration(now - c.finished.unwrap_or(c.created))
        ),
        ContainerState::Dead => "Dead".to_string(),
        ContainerState::Created => "Created".to_string(),
    };
    let format = crate::render::format::Format::parse(&args.format);
    if format != crate::render::format::Format::Table && !args.quiet {
        crate::render::format::check(&format)?;
        // docker's fields for each container (`docker ps --format '{{json .}}'`).
        let objects: Vec<serde_json::Value> = list
            .iter()
            .map(|c| {
                let labels = container::kept_options(&store, &c.id)
                    .map(|o| o.labels)
                    .unwrap_or_default()
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                serde_json::json!({
                    "Command": format!("\"{}\"", c.command),
                    "CreatedAt": crate::render::time::docker_time(c.created),
                    "ID": id_of(c),
                    "Image": c.image,
                    "Labels": labels,
                    "LocalVolumes": "0",
                    "Mounts": "",
                    "Names": c.name,
                    "Networks": networks_of(c),
                    "Ports": ports_of(c),
                    "RunningFor": format!("{} ago", human_duration(now - c.created)),
                    "Size": if args.size { size_of(c) } else { String::new() },
                    "State": c.state().name(),
                    "Status": status_of(c),
                })
            })
            .collect();
        let text = crate::render::format::rows(
            &format,
            &objects,
            &[
                ("ID", "CONTAINER ID"),
                ("RunningFor", "CREATED"),
                ("CreatedAt", "CREATED AT"),
                ("LocalVolumes", "LOCAL VOLUMES"),
            ],
            String::new,
        )?;
        out!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    if args.quiet {
        for c in &list {
            outln!("{}", id_of(c));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let status = status_of(c);
            let mut command = c.command.clone();
            if !args.no_trunc && command.chars().count() > 20 {
                command = command.chars().take(19).collect::<String>() + "…";
            }
            let mut row = vec![
                id_of(c),
                c.image.clone(),
                format!("\"{command}\""),
                format!("{} ago", human_duration(now - c.created)),
                status,
                ports_of(c),
                c.name.clone(),
            ];
            if args.size {
                row.push(size_of(c));
            }
            row
        })
        .collect();
    let mut headers = vec![
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ];
    if args.size {
        headers.push("SIZE");
    }
    out!("{}", table::render(&headers, &rows));
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct PortArgs {
    /// The container (name or ID prefix).
    pub container: String,
    /// Only this port of the container (`80` or `80/tcp`).
    #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
    pub port: Option<String>,
}

/// `kiln port`: docker's lines, `80/tcp -> 0.0.0.0:8080`; with a port, only where it goes.
pub fn port(root: Option<&Path>, args: PortArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let c = store
        .find_container(&args.container)?
        .ok_or_else(|| anyhow::anyhow!("no such container: {}", args.container))?;
    let want = args.port.as_deref().map(|p| match p.split_once('/') {
        Some((n, proto)) => (n.to_string(), proto.to_ascii_lowercase()),
        None => (p.to_string(), "tcp".to_string()),
    });
    let mut found = false;
    for p in container::control::published(&store, &c.id) {
        for k in 0..p.range {
            let private = p.container_port.saturating_add(k);
            let public = format!("{}:{}", p.host_ip, p.host_port.saturating_add(k));
            match &want {
                Some((n, proto)) if *n == private.to_string() && *proto == p.protocol => {
                    outln!("{public}");
                    found = true;
                }
                Some(_) => {}
                None => outln!("{private}/{} -> {public}", p.protocol),
            }
        }
    }
    if let (Some(p), false) = (&args.port, found) {
        anyhow::bail!("no public port '{p}' published for {}", c.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes log entries to stdout or stderr as their stream was (`timestamps`: each with its time).
pub(super) fn write_entries(entries: &[container::logs::Entry], timestamps: bool) {
    use std::io::Write;
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for e in entries {
        let w: &mut dyn Write = if e.stream == "stderr" {
            &mut err
        } else {
            &mut out
        };
        let _ = if timestamps {
            write!(w, "{} {}", e.time, e.log)
        } else {
            write!(w, "{}", e.log)
        };
    }
    let _ = out.flush();
}

/// `--since`/`--until` as docker reads them: an RFC 3339 time, Unix seconds (`1700000000`,
/// `1700000000.5`), or a duration before now (`10m`, `1h30m`); nanoseconds since the epoch.
fn log_time(flag: &str, text: &str) -> anyhow::Result<i128> {
    if let Some(t) = kiln_runtime::timefmt::parse_rfc3339_nanos(text) {
        return Ok(t);
    }
    if let Ok(secs) = text.parse::<f64>() {
        return Ok((secs * 1e9) as i128);
    }
    if let Some(d) = kiln_parser::instruction::values::parse_go_duration(text) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        return Ok(now - d);
    }
    anyhow::bail!(
        "invalid --{flag} {text:?}: a time (2024-01-02T15:04:05Z), Unix seconds or a duration (10m)"
    )
}

/// `3 seconds`, `5 minutes`, `2 hours`, `4 days`.
pub fn rm(root: Option<&Path>, args: RmArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let mut failed = false;
    for what in &args.containers {
        match container::remove(&store, what, args.force, args.volumes) {
            Ok(_) => outln!("{what}"),
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

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Follow the output until the container ends.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines (`all`: every line).
    #[arg(short = 'n', long, value_name = "N", default_value = "all")]
    pub tail: String,
    /// Show each line's time.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Only lines written since this time (RFC 3339, Unix seconds, or a duration ago: `10m`).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only lines written before this time (same forms as `--since`).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// The container (name or ID prefix).
    pub container: String,
}

pub fn logs(root: Option<&Path>, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let Some(c) = store.find_container(&args.container)? else {
        anyhow::bail!("no such container: {}", args.container);
    };
    let tail = match args.tail.as_str() {
        "all" => None,
        n => Some(
            n.parse::<usize>()
                .map_err(|_| anyhow::anyhow!("invalid --tail {n:?}: a number of lines, or all"))?,
        ),
    };
    let since = args
        .since
        .as_deref()
        .map(|t| log_time("since", t))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|t| log_time("until", t))
        .transpose()?;
    let show = |entries: Vec<container::logs::Entry>| {
        let kept: Vec<_> = entries
            .into_iter()
            .filter(|e| {
                let t = kiln_runtime::timefmt::parse_rfc3339_nanos(&e.time);
                since.is_none_or(|s| t.is_some_and(|t| t >= s))
                    && until.is_none_or(|u| t.is_some_and(|t| t < u))
            })
            .collect();
        write_entries(&kept, args.timestamps);
    };
    container::logs::show(&store, &c.id, tail, args.follow, show)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// Seconds to wait after the stop signal before killing it.
    #[arg(short = 't', long = "time", value_name = "N", default_value_t = 10)]
    pub time: u64,
    /// The stop signal (default: the image's STOPSIGNAL, else SIGTERM).
    #[arg(short = 's', long = "signal", value_name = "SIGNAL")]
    pub signal: Option<String>,
    /// Containers (names or ID prefixes).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// The signal to send.
    #[arg(
        short = 's',
        long = "signal",
        value_name = "SIGNAL",
        default_value = "KILL"
    )]
    pub signal: String,
    /// Containers (names or ID prefixes).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// Containers (names or ID prefixes).
    #[arg(required = true)]
    pub containers: Vec<String>,
}

fn signal(s: &str) -> anyhow::Result<container::control::Signal> {
    container::control::parse_signal(s)
        .ok_or_else(|| anyhow::anyhow!("invalid signal {s:?}: a name (TERM, SIGKILL) or number"))
}

/// Runs `f` on each container, printing what docker prints (the name given) or the error; exit
/// 1 when one failed.
pub(super) fn each(names: &[String], f: impl Fn(&str) -> anyhow::Result<String>) -> ExitCode {
    let mut failed = false;
    for n in names {
        match f(n) {
            Ok(out) => outln!("{out}"),
            Err(e) => {
                eprintln!("kiln: error: {}", crate::render::error_chain(&e));
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

pub fn stop(root: Option<&Path>, args: StopArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let sig = args.signal.as_deref().map(signal).transpose()?;
    let timeout = std::time::Duration::from_secs(args.time);
    Ok(each(&args.containers, |n| {
        container::control::stop(&store, n, timeout, sig)?;
        Ok(n.to_string())
    }))
}

pub fn kill(root: Option<&Path>, args: KillArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let sig = signal(&args.signal)?;
    Ok(each(&args.containers, |n| {
        container::control::kill(&store, n, sig)?;
        Ok(n.to_string())
    }))
}

pub fn wait(root: Option<&Path>, args: WaitArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    Ok(each(&args.containers, |n| {
        Ok(container::control::wait(&store, n)?.to_string())
    }))
}

#[derive(Debug, clap::Args)]
pub struct RenameArgs {
    /// The container (name or ID prefix).
    pub container: String,
    /// Its new name.
    pub name: String,
}

pub fn rename(root: Option<&Path>, args: RenameArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    container::control::rename(&store, &args.container, &args.name)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Subcommand)]
pub enum ContainerCommand {
    /// Remove every container that is not running.
    Prune {
        /// Do not ask (kiln never asks; accepted for docker's scripts).
        #[arg(short, long)]
        force: bool,
    },
}

pub fn container(root: Option<&Path>, cmd: ContainerCommand) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    match cmd {
        ContainerCommand::Prune { force } => {
            if !super::confirm("This will remove all stopped containers.", force)? {
                return Ok(ExitCode::SUCCESS);
            }
            let removed = container::control::prune(&store)?;
            outln!("Deleted Containers:");
            for id in &removed {
                outln!("{id}");
            }
            outln!();
            outln!("Total reclaimed containers: {}", removed.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// Set an environment variable (`K=V`, or `K` to pass the host's value).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Read environment variables from a file (one `K=V` or `K` per line, `#` comments).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<std::path::PathBuf>,
    /// Keep stdin open (without it the command reads nothing, as docker's).
    #[arg(short = 'i', long = "interactive")]
    pub interactive: bool,
    /// Give the command a terminal of its own in the container.
    #[arg(short = 't', long = "tty")]
    pub tty: bool,
    /// Run it in the background: kiln returns at once, the command goes on.
    #[arg(short = 'd', long = "detach")]
    pub detach: bool,
    /// Run as this user (`name|uid[:group|gid]`; default: the container's).
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Working directory inside the container (default: the image's).
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// The container (name or ID prefix).
    pub container: String,
    /// The command and its arguments.
    #[arg(required = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `kiln exec -d`: the same exec, without `-d` and with no stdio, as a process of its own in a
/// session of its own (it outlives this one); the container must run now.
fn exec_detached(store: &kiln_runtime::store::Store, args: &ExecArgs) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let c = store
        .find_container(&args.container)?
        .filter(|c| c.state() == ContainerState::Running)
        .ok_or_else(|| anyhow::anyhow!("container {} is not running", args.container))?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("--root").arg(store.root()).arg("exec");
    for e in &args.env {
        cmd.arg("-e").arg(e);
    }
    for f in &args.env_file {
        cmd.arg("--env-file").arg(f);
    }
    if let Some(u) = &args.user {
        cmd.arg("-u").arg(u);
    }
    if let Some(w) = &args.workdir {
        cmd.arg("-w").arg(w);
    }
    if args.tty {
        cmd.arg("-t");
    }
    cmd.arg(&c.id)
        .args(&args.command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid(2) is async-signal-safe and touches no shared data: the exec leaves this
    // terminal's session, so its hangup or Ctrl-C does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()?;
    Ok(ExitCode::SUCCESS)
}

/// `kiln exec`: exits with the command's status, or docker's 126 (the command could not be
/// run: missing, not executable; dockerd gives 126 for both, unlike `run`'s 127), 1 (no such
/// container, or not running).
pub fn exec(root: Option<&Path>, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    if args.detach {
        return exec_detached(&store, &args);
    }
    // Rootless, kiln did not make a user namespace for exec: it joins the container's.
    container::exec::join_user_namespace(&store, &args.container)?;
    let mut env = super::run::env_files(&args.env_file)?;
    env.extend(args.env);
    let opts = container::exec::ExecOptions {
        args: args.command,
        env,
        user: args.user,
        workdir: args.workdir,
        timeout: None,
    };
    let io = super::run::stdio(args.tty, args.interactive)?;
    match container::exec::exec(&store, &args.container, &opts, io) {
        Ok(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(255))),
        Err(e) => {
            eprintln!("kiln: error: {e}");
            Ok(ExitCode::from(match e.exit_code() {
                125 => 1,
                _ => 126,
            }))
        }
    }
}
