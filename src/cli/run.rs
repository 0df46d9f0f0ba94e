//! `kiln run [OPTIONS] IMAGE [ARG...]`: runs an image in kiln's sandbox, with docker's meanings
//! for the options; kiln exits with the container's exit code, or docker's 125 (kiln failed),
//! 126 (the command cannot run) or 127 (the command does not exist).
//!
//! `-d`: kiln starts itself again as the container's monitor (a session of its own, no
//! terminal), which runs the container as the foreground `kiln run` does, with its output going
//! to the container's log, and records how it ends. The first `kiln` waits until the container
//! runs (or failed to start), prints its id and returns.

use std::process::ExitCode;

use anyhow::{Context, bail};
use kiln_runtime::{
    container::{self, RunOptions, Stdio},
    network::Mode as Network,
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
    /// `bridge` (the default where netavark is installed: a network namespace of its own on
    /// the kiln0 bridge, outbound traffic NATed), `host` (the host's network) or `none`
    /// (loopback only).
    #[arg(long = "network", alias = "net", value_name = "MODE")]
    pub network: Option<String>,
    /// Publish a container's port(s) on the host: `[IP:][HOSTPORT:]CONTAINERPORT[/PROTO]`,
    /// ranges too (`8000-8001:80-81`); no HOSTPORT: one the kernel chooses.
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    pub publish: Vec<String>,
    /// Publish every EXPOSEd port of the image on a port the kernel chooses.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// A mount: `type=bind|volume|tmpfs,source=,target=[,readonly]` (docker's `--mount`).
    #[arg(long = "mount", value_name = "SPEC")]
    pub mount: Vec<String>,
    /// Mount every volume and bind of another container, at the same paths (`:ro`/`:rw`).
    #[arg(long = "volumes-from", value_name = "CONTAINER[:ro|rw]")]
    pub volumes_from: Vec<String>,
    /// A line of /etc/hosts: `NAME:IP` (`host-gateway`: the host, as the network's gateway).
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_host: Vec<String>,
    /// A name server for the container's resolv.conf (replacing the host's).
    #[arg(long = "dns", value_name = "IP")]
    pub dns: Vec<String>,
    /// A search domain for the container's resolv.conf.
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// An option line for the container's resolv.conf (`ndots:2`).
    #[arg(long = "dns-option", alias = "dns-opt", value_name = "OPTION")]
    pub dns_option: Vec<String>,
    /// The container's MAC address on its network.
    #[arg(long = "mac-address", value_name = "MAC")]
    pub mac_address: Option<String>,
    /// Another name the container answers to on a user network.
    #[arg(long = "network-alias", alias = "net-alias", value_name = "NAME")]
    pub network_alias: Vec<String>,
    /// The container's address on a user network.
    #[arg(long = "ip", value_name = "IPv4")]
    pub ip: Option<String>,
    /// The platform of the image to run (`linux/arm64`): picks it from a multi-platform name
    /// (pulling it when missing); another platform's programs run under QEMU.
    #[arg(
        long = "platform",
        value_name = "PLATFORM",
        env = "DOCKER_DEFAULT_PLATFORM"
    )]
    pub platform: Option<String>,
    /// The container's hostname (default: the first 12 digits of its id).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Bind a host path (`/HOST:/CTR[:ro]`; a missing host directory is created), mount a
    /// volume (`NAME:/CTR[:ro]`, made when missing, seeded with the image's content there), or
    /// an anonymous volume (`/CTR`).
    #[arg(short = 'v', long = "volume", value_name = "SRC:CTR[:ro]")]
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
    /// Number of CPUs the container may use (`1.5`: a CFS quota).
    #[arg(long, value_name = "N")]
    pub cpus: Option<String>,
    /// Relative CPU weight (2 to 262144; 1024 is the default).
    #[arg(short = 'c', long = "cpu-shares", value_name = "N")]
    pub cpu_shares: Option<u64>,
    /// Memory plus swap (`-1`: unlimited swap); with `-m`.
    #[arg(long = "memory-swap", value_name = "SIZE")]
    pub memory_swap: Option<String>,
    /// A resource limit: `NAME=SOFT[:HARD]` (`nofile=1024:2048`).
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    pub ulimit: Vec<String>,
    /// Size of /dev/shm (64m by default).
    #[arg(long = "shm-size", value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// Mount a fresh tmpfs: `PATH[:size=64m,mode=1777]`.
    #[arg(long, value_name = "PATH[:OPTS]")]
    pub tmpfs: Vec<String>,
    /// Add a capability to docker's default set (`NET_ADMIN`, `ALL`).
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a capability from docker's default set (`NET_RAW`, `ALL`).
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// `no-new-privileges` (setuid programs grant nothing) or `seccomp=unconfined`.
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Every capability, no seccomp filter, nothing masked in /proc and /sys (/sys writable).
    #[arg(long)]
    pub privileged: bool,
    /// Another supplementary group for the container's user (a name in its /etc/group, or an
    /// id).
    #[arg(long = "group-add", value_name = "GROUP")]
    pub group_add: Vec<String>,
    /// A label on the container (`K=V`; `ps --filter label=K[=V]` finds it).
    #[arg(short = 'l', long = "label", value_name = "K=V")]
    pub label: Vec<String>,
    /// Run a small init as process 1 (it passes on signals and reaps orphans).
    #[arg(long)]
    pub init: bool,
    /// Write the container's id to this file (which must not exist).
    #[arg(long, value_name = "FILE")]
    pub cidfile: Option<std::path::PathBuf>,
    /// Restart policy of a detached container: `no`, `on-failure[:N]`, `always`,
    /// `unless-stopped` (`kiln stop` and `kiln kill` end it for good).
    #[arg(long, value_name = "POLICY", default_value = "no")]
    pub restart: String,
    /// The image (tag or manifest digest), then the arguments that replace its CMD. One
    /// positional list: once the image is named, every word after it is the container's (`kiln
    /// run IMAGE ls -l` passes `-l` on, as docker does), never an option of kiln's.
    #[arg(required = true, num_args = 1.., value_name = "IMAGE [ARG]")]
    pub command: Vec<String>,
    /// Pull the image before running: `missing` (when the store lacks it), `always`, `never`.
    #[arg(long, value_enum, default_value = "missing", value_name = "POLICY")]
    pub pull: super::registry::PullPolicy,
    #[command(flatten)]
    pub registry: super::registry::RegistryFlags,
}

pub fn run(root: Option<&std::path::Path>, args: Args) -> anyhow::Result<ExitCode> {
    run_or_create(root, args, false)
}

/// `kiln create`: `kiln run`'s options, the container made and kept, not started; its id.
pub fn create(root: Option<&std::path::Path>, args: Args) -> anyhow::Result<ExitCode> {
    run_or_create(root, args, true)
}

fn run_or_create(
    root: Option<&std::path::Path>,
    args: Args,
    create_only: bool,
) -> anyhow::Result<ExitCode> {
    if create_only && args.detach {
        bail!(
            "conflicting options: -d/--detach is for kiln run (kiln start runs a created container)"
        );
    }
    let health_override = health(&args)?;
    let granted = privileges(&args)?;
    let restart = container::restart::Policy::parse(&args.restart).map_err(anyhow::Error::msg)?;
    if restart != container::restart::Policy::No && args.rm {
        bail!("conflicting options: --restart and --rm");
    }
    let store = super::store::open(root)?;
    let (network, ip) = network_options(&store, &args)?;
    let mut publish = Vec::new();
    for p in &args.publish {
        publish.extend(kiln_runtime::network::ports::parse(p).map_err(anyhow::Error::msg)?);
    }
    let mut env = env_files(&args.env_file)?;
    env.extend(args.env.iter().cloned());
    let (volumes, tmpfs) = mounts(&args)?;
    let mut limits = super::limits(args.memory.as_deref(), args.pids_limit)?;
    cpu_and_swap(&args, &mut limits)?;
    let monitor = container::detach::is_monitor();
    let detach_now = args.detach && !monitor;
    let platform = args
        .platform
        .as_deref()
        .map(super::registry::platform)
        .transpose()?;
    let mut opts = RunOptions {
        image: args.command[0].clone(),
        platform,
        args: args.command[1..].to_vec(),
        entrypoint: args.entrypoint,
        env,
        workdir: args.workdir,
        user: args.user,
        network,
        publish,
        publish_all: args.publish_all,
        network_aliases: args.network_alias.clone(),
        networks: None,
        add_hosts: args.add_host.clone(),
        dns: container::Dns {
            servers: args.dns.clone(),
            search: args.dns_search.clone(),
            options: args.dns_option.clone(),
        },
        ip,
        mac: args.mac_address.clone(),
        hostname: args.hostname,
        volumes,
        volumes_from: args.volumes_from.clone(),
        read_only: args.read_only,
        limits,
        name: args.name,
        remove: args.rm,
        id: None,
        started: None,
        log_rotation: log_rotation(&store.default_log_opts()?, &args.log_opt)?,
        health: health_override,
        restart,
        tty: args.tty,
        interactive: args.interactive,
        privileges: granted,
        shm_size: args
            .shm_size
            .as_deref()
            .map(|s| size("shm-size", s))
            .transpose()?,
        tmpfs,
        group_add: args.group_add.clone(),
        init: args.init,
        labels: super::labels(&args.label),
    };
    // docker's --cidfile: refused when the file exists, written once the container runs.
    let cidfile = args.cidfile.clone().filter(|_| !monitor);
    if let Some(f) = &cidfile {
        if f.exists() {
            bail!(
                "container ID file found, make sure the other container isn't running or \
                 delete {}",
                f.display()
            );
        }
    }
    // Every option is checked (above) before anything is pulled or started.
    if !monitor {
        super::registry::pull_for_run(
            &store,
            &opts.image,
            opts.platform.as_ref(),
            args.pull,
            &args.registry,
        )?;
    }
    if create_only {
        let id = container::create(&store, &opts)?;
        if let Some(f) = &cidfile {
            std::fs::write(f, &id).with_context(|| format!("--cidfile {}", f.display()))?;
        }
        outln!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    if detach_now {
        return detach(cidfile.as_deref());
    }
    if monitor {
        let code = container::detach::monitor(&store, &mut opts);
        return Ok(ExitCode::from(code));
    }
    if let Some(f) = cidfile {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        opts.started = Some(tx);
        std::thread::spawn(move || {
            if let Ok(id) = rx.recv() {
                if let Err(e) = write_cidfile(&f, &id) {
                    eprintln!("kiln: warning: {e:#}");
                }
            }
        });
    }
    if restart != container::restart::Policy::No {
        eprintln!(
            "kiln: warning: --restart is applied by a detached container's monitor: this run \
             in the foreground is not restarted (kiln start runs it with its policy)"
        );
    }
    let io = stdio(opts.tty, opts.interactive)?;
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

/// `--network` and the options that go with it, checked as docker checks them: the network
/// mode, and `--ip`'s address.
fn network_options(
    store: &kiln_runtime::store::Store,
    args: &Args,
) -> anyhow::Result<(Option<Network>, Option<std::net::Ipv4Addr>)> {
    let network = match args.network.as_deref() {
        None => None,
        Some("bridge" | "default") => Some(Network::Bridge),
        Some("host") => Some(Network::Host),
        Some("none") => Some(Network::None),
        Some(other) if other.starts_with("container:") => {
            Some(Network::Container(other["container:".len()..].to_string()))
        }
        Some(other) => {
            if store.find_network(other)?.is_none() {
                bail!("network {other} not found");
            }
            Some(Network::User(other.to_string()))
        }
    };
    let ip = match &args.ip {
        Some(ip) if !matches!(network, Some(Network::User(_))) => {
            bail!("--ip {ip}: user specified IP address is supported on user defined networks only")
        }
        Some(ip) => Some(
            ip.parse::<std::net::Ipv4Addr>()
                .map_err(|_| anyhow::anyhow!("--ip {ip}: not an IPv4 address"))?,
        ),
        None => None,
    };
    for h in &args.add_host {
        parse_add_host(h)?;
    }
    for d in &args.dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            bail!("--dns {d}: not an IP address");
        }
    }
    if let Some(m) = &args.mac_address {
        let parts: Vec<&str> = m.split(':').collect();
        if parts.len() != 6
            || parts
                .iter()
                .any(|p| u8::from_str_radix(p, 16).is_err() || p.len() != 2)
        {
            bail!("--mac-address {m}: expected six hex pairs (02:42:ac:11:00:02)");
        }
    }
    if !args.network_alias.is_empty() && !matches!(network, Some(Network::User(_))) {
        bail!(
            "--network-alias needs a user network (--network NAME): the default bridge has no names"
        );
    }
    Ok((network, ip))
}

/// `-v`, `--tmpfs` and `--mount` (a `type=tmpfs` mount becomes a `--tmpfs`, docker's fields
/// mapped).
fn mounts(args: &Args) -> anyhow::Result<(Vec<container::Volume>, Vec<container::Tmpfs>)> {
    let mut volumes = args
        .volume
        .iter()
        .map(|v| container::Volume::parse(v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let mut tmpfs = args
        .tmpfs
        .iter()
        .map(|t| container::Tmpfs::parse(t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    for m in &args.mount {
        match container::Volume::parse_mount(m) {
            Ok(v) => volumes.push(v),
            Err(Some(e)) => bail!("{e}"),
            // type=tmpfs: docker's fields as a --tmpfs.
            Err(None) => {
                let mut target = String::new();
                let mut opts = Vec::new();
                for f in m.split(',') {
                    match f.split_once('=') {
                        Some(("target" | "destination" | "dst", t)) => target = t.to_string(),
                        Some(("tmpfs-size", s)) => opts.push(format!("size={s}")),
                        Some(("tmpfs-mode", s)) => opts.push(format!("mode={s}")),
                        Some(("type", _)) => {}
                        _ => bail!("--mount {m}: unsupported option {f:?} for a tmpfs"),
                    }
                }
                tmpfs.push(
                    container::Tmpfs::parse(&format!("{target}:{}", opts.join(",")))
                        .map_err(|e| anyhow::anyhow!("--mount {m}: {e}"))?,
                );
            }
        }
    }
    Ok((volumes, tmpfs))
}

/// `--cpu-shares`, `--cpus` (a CFS quota) and `--memory-swap` (at least `-m`) on `limits`.
fn cpu_and_swap(
    args: &Args,
    limits: &mut kiln_runtime::sandbox::cgroup::Limits,
) -> anyhow::Result<()> {
    limits.cpu_shares = args.cpu_shares;
    if let Some(c) = &args.cpus {
        let n: f64 = c
            .parse()
            .ok()
            .filter(|n: &f64| *n > 0.0 && n.is_finite())
            .ok_or_else(|| anyhow::anyhow!("--cpus {c}: expected a number of CPUs such as 1.5"))?;
        let quota = (n * kiln_runtime::sandbox::cgroup::CPU_PERIOD as f64) as u64;
        if quota < 1000 {
            bail!("--cpus {c}: the minimum is 0.01");
        }
        limits.cpu_quota = Some(quota);
    }
    if let Some(s) = &args.memory_swap {
        let total = if s == "-1" {
            u64::MAX
        } else {
            size("memory-swap", s)?
        };
        match limits.memory {
            None => bail!("--memory-swap {s}: needs --memory (-m) as well"),
            Some(m) if total < m => {
                bail!("--memory-swap {s}: must be at least the memory limit (-m)")
            }
            Some(_) => limits.memory_swap = Some(total),
        }
    }
    Ok(())
}

/// `kiln run -d`: this same command again, as the container's monitor; the id once it runs.
fn detach(cidfile: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find the kiln binary")?;
    match container::detach::start(&exe, std::env::args_os().skip(1))? {
        container::detach::Started::Running(id) => {
            if let Some(f) = cidfile {
                write_cidfile(f, &id)?;
            }
            outln!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        container::detach::Started::Failed { code, message } => {
            eprintln!("kiln: error: {message}");
            Ok(ExitCode::from(code))
        }
    }
}

/// The stdio of a container's process (`kiln run`, `kiln exec`) as docker's `-i` and `-t`
/// make it: with `-t` a terminal of its own joined to this one (raw while it runs with `-i`,
/// its size followed); without, this process's stdout and stderr, and stdin only with `-i`.
pub(super) fn stdio(tty: bool, interactive: bool) -> anyhow::Result<container::Io> {
    use std::{io::IsTerminal, os::fd::AsFd};
    if !tty {
        let stdin = if interactive {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        return Ok(container::Io::Pipes(
            stdin,
            Stdio::inherit(),
            Stdio::inherit(),
        ));
    }
    let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
    let tty_in = stdin.is_terminal();
    let tty_out = stdout.is_terminal();
    if interactive && !tty_in {
        // docker refuses; kiln goes on with the input copied as it comes.
        eprintln!("kiln: warning: the input device is not a TTY");
    }
    let dup = |fd: std::os::fd::BorrowedFd<'_>, yes: bool| {
        yes.then(|| fd.try_clone_to_owned()).transpose()
    };
    Ok(container::Io::Terminal(container::tty::Terminal {
        input: dup(stdin.as_fd(), interactive)?,
        user: dup(stdin.as_fd(), interactive && tty_in)?,
        size: dup(stdout.as_fd(), tty_out)?.or(dup(stdin.as_fd(), tty_in)?),
        output: Box::new(stdout),
        share: None,
    }))
}

/// `--env-file` lines (`K=V`, or `K` for the host's value; blank lines and `#` comments
/// skipped), file by file.
pub(super) fn env_files(files: &[std::path::PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut env = Vec::new();
    for f in files {
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
    Ok(env)
}

fn write_cidfile(f: &std::path::Path, id: &str) -> anyhow::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(f)
        .and_then(|mut file| std::io::Write::write_all(&mut file, id.as_bytes()))
        .with_context(|| format!("--cidfile {}", f.display()))
}

/// A size option (`64m`, `1g`, bytes).
fn size(flag: &str, s: &str) -> anyhow::Result<u64> {
    kiln_parser::instruction::values::parse_ram_size(s)
        .filter(|n| *n > 0)
        .ok_or_else(|| anyhow::anyhow!("--{flag} {s}: expected a size such as 64m or 1g"))
}

/// `--privileged`, `--cap-add`, `--cap-drop`, `--security-opt`, `--ulimit` as docker reads
/// them: `ALL` among the adds starts from every capability, among the drops from none; then
/// the drops are taken out and the adds put in.
fn privileges(args: &Args) -> anyhow::Result<kiln_runtime::sandbox::identity::Privileges> {
    use kiln_runtime::sandbox::identity::{self, DEFAULT_CAPS};
    let parse = |flag: &str, names: &[String]| {
        names
            .iter()
            .map(|n| {
                identity::parse_cap(n)
                    .map(|c| (n.trim().eq_ignore_ascii_case("all"), c))
                    .ok_or_else(|| anyhow::anyhow!("--{flag} {n}: unknown capability"))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let (adds, drops) = (
        parse("cap-add", &args.cap_add)?,
        parse("cap-drop", &args.cap_drop)?,
    );
    let mut set = if args.privileged || adds.iter().any(|(all, _)| *all) {
        identity::all_caps()
    } else if drops.iter().any(|(all, _)| *all) {
        identity::CapabilitySet::empty()
    } else {
        DEFAULT_CAPS
    };
    for (all, c) in &drops {
        if !all && !args.privileged {
            set.remove(*c);
        }
    }
    for (_, c) in &adds {
        set.insert(*c);
    }
    let mut p = identity::Privileges {
        caps: (set != DEFAULT_CAPS).then(|| set.bits()),
        privileged: args.privileged,
        unconfined: args.privileged,
        ..Default::default()
    };
    for o in &args.security_opt {
        match o.as_str() {
            "no-new-privileges" | "no-new-privileges=true" | "no-new-privileges:true" => {
                p.no_new_privs = true;
            }
            "no-new-privileges=false" | "no-new-privileges:false" => p.no_new_privs = false,
            "seccomp=unconfined" | "seccomp:unconfined" => p.unconfined = true,
            other => bail!(
                "--security-opt {other}: kiln supports no-new-privileges and seccomp=unconfined"
            ),
        }
    }
    for u in &args.ulimit {
        p.rlimits
            .push(identity::Rlimit::parse(u).map_err(anyhow::Error::msg)?);
    }
    Ok(p)
}

/// `--log-opt max-size=,max-file=` as docker's json-file driver reads them, over the store's
/// defaults (`log-opts` in kiln.json: a container's own option wins, key by key).
fn log_rotation(
    defaults: &[String],
    opts: &[String],
) -> anyhow::Result<Option<kiln_runtime::container::logs::Rotation>> {
    let (mut size, mut files) = (None, None);
    for o in defaults.iter().chain(opts) {
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

/// `--add-host NAME:IP` (or `NAME=IP`; `IP` may be `host-gateway`): (name, address).
pub(super) fn parse_add_host(h: &str) -> anyhow::Result<(String, String)> {
    h.split_once(':')
        .or_else(|| h.split_once('='))
        .filter(|(n, ip)| {
            !n.is_empty() && (*ip == "host-gateway" || ip.parse::<std::net::IpAddr>().is_ok())
        })
        .map(|(n, ip)| (n.to_string(), ip.to_string()))
        .ok_or_else(|| anyhow::anyhow!("--add-host {h}: expected NAME:IP or NAME:host-gateway"))
}
