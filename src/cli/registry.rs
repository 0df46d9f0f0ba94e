//! `kiln pull`, `kiln push`, `kiln login`, `kiln logout`: the registry commands, with docker's
//! flags and output.

use std::{io::Read, process::ExitCode};

use anyhow::{Context, bail};
use kiln_runtime::{
    registry::{
        self, Options, PullOptions, PushOptions, credentials, pull::PullEvent, push::PushEvent,
    },
    store::LayerCompression,
};

/// Registry settings every command that talks to a registry takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RegistryFlags {
    /// Allow plain HTTP or an unverified certificate for this registry (`host[:port]` or an
    /// IPv4 network; repeatable). `localhost` and 127.0.0.0/8 always are, as in docker.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure: Vec<String>,
}

impl RegistryFlags {
    /// The settings file's options plus these flags.
    pub fn options(&self) -> anyhow::Result<Options> {
        let mut o = Options::load()?;
        o.insecure.extend(self.insecure.iter().cloned());
        Ok(o)
    }
}

/// `--platform os/arch[/variant]`.
pub(super) fn platform(s: &str) -> anyhow::Result<kiln_runtime::oci::Platform> {
    kiln_runtime::oci::Platform::parse(s).map_err(|e| anyhow::anyhow!("--platform: {e}"))
}

fn short(d: &kiln_runtime::digest::Digest) -> &str {
    &d.hex()[..12]
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The image: `NAME[:TAG|@DIGEST]` (`alpine` is `docker.io/library/alpine:latest`).
    pub image: String,
    /// From a multi-platform image, the one for this platform (default: this machine's).
    #[arg(
        long,
        value_name = "OS/ARCH[/VARIANT]",
        env = "DOCKER_DEFAULT_PLATFORM"
    )]
    pub platform: Option<String>,
    /// Every platform of a multi-platform image: the name then holds them all, as built by
    /// `kiln build --platform a,b` (and `kiln push` pushes them all).
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
    /// Print only the image name.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

pub fn pull(root: Option<&std::path::Path>, args: PullArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    let target = registry::Target::parse(&args.image)?;
    let opts = PullOptions {
        registry: args.registry.options()?,
        platform: args.platform.as_deref().map(platform).transpose()?,
        jobs: 0,
        no_tag: false,
        all_platforms: args.all_platforms,
    };
    if !args.quiet {
        if kiln_runtime::reference::parse(&args.image)?.tag.is_none() && target.digest.is_none() {
            outln!("Using default tag: latest");
        }
        outln!(
            "{}: Pulling from {}",
            target
                .tag
                .as_deref()
                .or(target.digest.as_deref())
                .unwrap_or("latest"),
            target.repo
        );
    }
    let quiet = args.quiet;
    let show = move |e: PullEvent| {
        if quiet {
            return;
        }
        match e {
            PullEvent::Resolved { .. } => {}
            PullEvent::Exists { digest } => outln!("{}: Already exists", short(&digest)),
            PullEvent::Downloaded { digest, .. } => outln!("{}: Pull complete", short(&digest)),
        }
    };
    let pulled = registry::pull(&store, &args.image, &opts, &show)
        .with_context(|| format!("cannot pull {}", args.image))?;
    if !quiet {
        outln!("Digest: {}", pulled.resolved);
        let name = pulled.tag.clone().unwrap_or_else(|| args.image.clone());
        if pulled.downloaded == 0 {
            outln!("Status: Image is up to date for {name}");
        } else {
            outln!("Status: Downloaded newer image for {name}");
        }
    }
    outln!("{}", pulled.target);
    Ok(ExitCode::SUCCESS)
}

/// `--compression` of push, save and build outputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
}

impl From<Compression> for LayerCompression {
    fn from(c: Compression) -> Self {
        match c {
            Compression::Gzip => LayerCompression::Gzip,
            Compression::Zstd => LayerCompression::Zstd,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The image to push: `NAME[:TAG]`, whose name says the registry.
    pub image: String,
    /// How the layers kiln keeps uncompressed are compressed: gzip (read by every tool) or zstd.
    /// Layers that came in compressed leave as they are.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: Compression,
    /// Print only the manifest digest.
    #[arg(short, long)]
    pub quiet: bool,
    /// Of a multi-platform image, push only the image for this platform (`linux/arm64`)
    /// under the name; without it, every image and the index.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// Pushes the store's `source` as `dest`, printing as docker does unless `quiet`.
pub fn push_image(
    store: &kiln_runtime::store::Store,
    source: &str,
    dest: &str,
    flags: &RegistryFlags,
    compression: LayerCompression,
    quiet: bool,
) -> anyhow::Result<registry::Pushed> {
    let target = registry::Target::parse(dest)?;
    let opts = PushOptions {
        registry: flags.options()?,
        jobs: 0,
        compression,
    };
    if !quiet {
        outln!(
            "The push refers to repository [{}/{}]",
            target.registry,
            target.repo
        );
    }
    let show = move |e: PushEvent| {
        if quiet {
            return;
        }
        match e {
            PushEvent::Exists { digest } => outln!("{}: Layer already exists", short(&digest)),
            PushEvent::Mounted { digest, from } => {
                outln!("{}: Mounted from {from}", short(&digest))
            }
            PushEvent::Uploaded { digest, .. } => outln!("{}: Pushed", short(&digest)),
        }
    };
    let pushed = registry::push(store, source, dest, &opts, &show)
        .with_context(|| format!("cannot push {dest}"))?;
    if !quiet {
        outln!(
            "{}: digest: {} size: {}",
            target.tag.as_deref().unwrap_or("latest"),
            pushed.digest,
            pushed.size
        );
    }
    Ok(pushed)
}

pub fn push(root: Option<&std::path::Path>, args: PushArgs) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    fetch_layers_with(&store, &args.registry)?;
    // `--platform`: the one image, named by its digest in the store.
    let source = match args.platform.as_deref().map(platform).transpose()? {
        Some(p) => {
            let Some(d) = store.resolve(&args.image)? else {
                bail!("no such image: {}", args.image);
            };
            store
                .platform_manifest(&d, Some(&p))
                .with_context(|| format!("{}: --platform {p}", args.image))?
                .to_string()
        }
        None => args.image.clone(),
    };
    let pushed = push_image(
        &store,
        &source,
        &args.image,
        &args.registry,
        args.compression.into(),
        args.quiet,
    )?;
    if args.quiet {
        outln!("{}", pushed.digest);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The registry (default: Docker Hub).
    pub server: Option<String>,
    #[arg(short, long)]
    pub username: Option<String>,
    /// The password (visible to other users in `ps`: prefer --password-stdin).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// A registry as the user names it (`https://r.example/v2/`, `docker.io`) → `host[:port]`.
fn server_host(server: Option<&str>) -> String {
    let s = server.unwrap_or("docker.io");
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

/// Reads one line typed at the terminal after `prompt` (on stderr), without echo when
/// `secret`.
fn prompt(prompt: &str, secret: bool) -> anyhow::Result<String> {
    eprint!("{prompt}");
    let stdin = std::io::stdin();
    let fd = std::os::fd::AsFd::as_fd(&stdin)
        .try_clone_to_owned()
        .context("cannot read the terminal")?;
    let quiet = secret
        .then(|| kiln_runtime::container::tty::NoEcho::enter(&fd))
        .flatten();
    let mut line = String::new();
    let read = std::io::BufRead::read_line(&mut stdin.lock(), &mut line);
    drop(quiet);
    if secret {
        eprintln!();
    }
    read.context("cannot read the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let host = server_host(args.server.as_deref());
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let username = match args.username.clone() {
        Some(u) => u,
        // As docker: asked at the terminal, never read from a pipe.
        None if tty && !args.password_stdin => prompt("Username: ", false)?,
        None => bail!(
            "cannot perform an interactive login from a non-TTY device: give -u USERNAME \
             with --password-stdin"
        ),
    };
    if username.is_empty() {
        bail!("the username is empty");
    }
    let password = match (&args.password, args.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(p), false) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p.clone()
        }
        (None, true) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the password from standard input")?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) if tty => prompt("Password: ", true)?,
        (None, false) => bail!(
            "cannot perform an interactive login from a non-TTY device: give the password \
             with --password-stdin"
        ),
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let credential = credentials::Credential {
        username: username.clone(),
        secret: password.clone(),
        identity_token: false,
        source: "the command line".into(),
    };
    let client = registry::Client::connect_with(&host, &args.registry.options()?, Some(credential))
        .with_context(|| format!("cannot log in to {host}"))?;
    match client.check_login() {
        Ok(()) => {}
        // Not "log in with kiln login": that is the command that just failed.
        Err(registry::RegistryError::Denied { .. }) => {
            bail!("cannot log in to {host}: unauthorized: incorrect username or password")
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot log in to {host}"))),
    }
    let place = credentials::store(&host, &username, &password)
        .with_context(|| format!("cannot store the credentials for {host}"))?;
    eprintln!("credentials stored in {place}");
    outln!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// The registry (default: Docker Hub).
    pub server: Option<String>,
}

pub fn logout(args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let host = server_host(args.server.as_deref());
    if credentials::erase(&host)? {
        outln!(
            "Removing login credentials for {}",
            credentials::key_for(&host)
        );
    } else {
        outln!("Not logged in to {host}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Lets the store fetch the layers it knows a registry has (a remote cache hit's, an image
/// joined by `kiln manifest create`) when a command needs their files.
pub fn fetch_layers_with(
    store: &kiln_runtime::store::Store,
    flags: &RegistryFlags,
) -> anyhow::Result<()> {
    registry::install_fetcher(store, &flags.options()?);
    Ok(())
}

/// `--pull` of `kiln run`, as docker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PullPolicy {
    Missing,
    Always,
    Never,
}

/// Pulls `image` for `kiln run` as `policy` says, reporting on stderr as `docker run` does.
pub fn pull_for_run(
    store: &kiln_runtime::store::Store,
    image: &str,
    platform: Option<&kiln_runtime::oci::Platform>,
    policy: PullPolicy,
    flags: &RegistryFlags,
) -> anyhow::Result<()> {
    // With `--platform`, an image for another platform under the name is no image.
    let named = store.resolve(image)?;
    let present = named.is_some_and(|d| store.has_runnable(&d, platform));
    if let (Some(d), true) = (named, present) {
        // Layers only a registry has come in now, before anything starts.
        fetch_layers_with(store, flags)?;
        store
            .fetch_missing_layers(&d, platform)
            .with_context(|| format!("cannot fetch the layers of {image}"))?;
    }
    match policy {
        PullPolicy::Never => return Ok(()),
        PullPolicy::Missing if present => return Ok(()),
        PullPolicy::Missing => eprintln!("Unable to find image '{image}' locally"),
        PullPolicy::Always => {}
    }
    let opts = PullOptions {
        registry: flags.options()?,
        platform: platform.cloned(),
        jobs: 0,
        no_tag: false,
        all_platforms: false,
    };
    let pulled = registry::pull(store, image, &opts, &|_| {})
        .with_context(|| format!("cannot pull {image}"))?;
    eprintln!("Digest: {}", pulled.resolved);
    Ok(())
}
