//! `kiln build`: flags to [`kiln_builder::exec::BuildOptions`], progress and errors rendered.

use std::{collections::BTreeMap, io::IsTerminal, path::PathBuf, process::ExitCode};

use anyhow::{Context, bail};
use clap::ValueEnum;
use kiln_builder::cache::transfer;
use kiln_builder::exec::{self, BuildError, BuildOptions, Event, NamedContext, Sandbox};
use kiln_runtime::store::LayerCompression;

use crate::render;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    Auto,
    Plain,
    Tty,
    Rawjson,
    Quiet,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The build context directory.
    pub context: PathBuf,
    /// Name and tag the image (repeatable).
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// The Dockerfile (default CONTEXT/Dockerfile; - for standard input).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Build-time variables (`KEY=VALUE`, or `KEY` to take the value from the environment).
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// The stage to build (default: the last).
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// The platforms to build for, comma-separated (`linux/amd64,linux/arm64`); default:
    /// this machine's. Several make one image each, joined in an index under the tags;
    /// another platform's RUN steps run under QEMU (see `kiln system binfmt`).
    #[arg(
        long,
        value_name = "PLATFORM[,PLATFORM...]",
        env = "DOCKER_DEFAULT_PLATFORM"
    )]
    pub platform: Vec<String>,
    /// Named contexts for `FROM NAME` / `COPY --from=NAME`: `NAME=DIR`,
    /// `NAME=oci-layout://PATH[:TAG]`, `NAME=docker-image://IMAGE` (an image in kiln's store).
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// A secret for `RUN --mount=type=secret`: `id=ID,src=FILE` or `id=ID,env=VAR` (never
    /// stored in the image, the cache or the logs).
    #[arg(long = "secret", value_name = "id=ID,src=FILE|env=VAR")]
    pub secrets: Vec<String>,
    /// An ssh agent for `RUN --mount=type=ssh`: `default` (`$SSH_AUTH_SOCK`) or `ID=SOCKET`.
    #[arg(long = "ssh", value_name = "ID[=SOCKET]")]
    pub ssh: Vec<String>,
    /// The network of RUN steps that name none (or `RUN --network=default`): `default` (the
    /// host's, kiln's default), `none` or `host`, as BuildKit takes them.
    #[arg(long, value_name = "MODE", value_parser = ["default", "none", "host"])]
    pub network: Option<String>,
    /// A line of every RUN step's /etc/hosts: `NAME:IP` (`host-gateway`: the host, 127.0.0.1
    /// on its network).
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_host: Vec<String>,
    /// Memory limit for each RUN step (`64m`, `1g`; a cgroup, where the kernel allows it).
    #[arg(short = 'm', long = "memory", value_name = "SIZE")]
    pub memory: Option<String>,
    /// Limit on processes and threads for each RUN step.
    #[arg(long = "pids-limit", value_name = "N")]
    pub pids_limit: Option<u64>,
    /// Image labels (`KEY=VALUE`, repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write build metadata (image and config digests, as buildx names them) as JSON.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Also export the image: `type=oci|docker,dest=FILE` (an OCI layout with Docker's
    /// manifest.json, as `kiln save`), `type=tar,dest=FILE` (the filesystem as one tar),
    /// `type=local,dest=DIR` (the filesystem in a new or empty directory), or push it:
    /// `type=registry[,name=NAME]` (`type=image,push=true`). `compression=gzip|zstd` sets how
    /// layers are compressed for oci, docker and registry.
    #[arg(short = 'o', long = "output", value_name = "type=TYPE,dest=PATH")]
    pub output: Option<String>,
    /// Print only the image ID.
    #[arg(short, long)]
    pub quiet: bool,
    /// How many stages may run at once (default: one per core).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub jobs: usize,
    /// After the build, say HIT or MISS for each step and why the first miss of each stage
    /// missed (compared with the last build of this context, Dockerfile and target).
    #[arg(long)]
    pub explain_cache: bool,
    /// Progress output (auto: the TTY view on a terminal, plain text otherwise).
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: Progress,
    /// Pull base images named by tag even when the store has them (a moved tag is a cache
    /// miss).
    #[arg(long)]
    pub pull: bool,
    /// Push the image to its registry after the build (every `-t` name; as `-o
    /// type=registry`).
    #[arg(long)]
    pub push: bool,
    /// Import a build cache before building: `type=registry,ref=REPO:TAG`,
    /// `type=local,src=DIR`, or `REPO:TAG` (repeatable, tried in order). One that cannot be
    /// read is a warning; the build goes on without it.
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Export the build cache after building: `type=registry,ref=REPO:TAG` or
    /// `type=local,dest=DIR`, with `mode=min|max`, `compression=gzip|zstd`,
    /// `ignore-error=true` (repeatable).
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    #[command(flatten)]
    pub registry: super::registry::RegistryFlags,
}

fn kv(s: &str, what: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ if what == "build-arg" && !s.is_empty() => {
            Ok((s.to_string(), std::env::var(s).unwrap_or_default()))
        }
        _ => bail!("invalid --{what} {s:?}: expected KEY=VALUE"),
    }
}

/// The build `args` describe (the Dockerfile read, named contexts loaded into `store`), with
/// the Dockerfile's display name and text for error rendering.
pub fn options(
    store: &kiln_runtime::store::Store,
    args: &Args,
) -> anyhow::Result<(BuildOptions, String, String)> {
    // `kiln build - < Dockerfile`: the Dockerfile on standard input and no context (an empty
    // directory of the store's stands for it), as docker does.
    let no_context = args.context == std::path::Path::new("-");
    if no_context && args.file.is_some() {
        bail!("a Dockerfile on standard input (context -) cannot be combined with -f");
    }
    let empty;
    let context: &std::path::Path = if no_context {
        empty = store.root().join("empty-context");
        std::fs::create_dir_all(&empty)
            .with_context(|| format!("cannot make {}", empty.display()))?;
        &empty
    } else {
        &args.context
    };
    let (dockerfile_path, text, name) = match args.file.as_deref() {
        _ if no_context => {
            let src = super::dockerfile::read(Some(std::path::Path::new("-")))?;
            (None, src.text, src.name)
        }
        Some(p) if p == std::path::Path::new("-") => {
            let src = super::dockerfile::read(Some(p))?;
            (None, src.text, src.name)
        }
        Some(p) => {
            let src = super::dockerfile::read(Some(p))?;
            (Some(p.to_path_buf()), src.text, src.name)
        }
        None => {
            // Named as BuildKit names it in messages: `Dockerfile`, relative to the context.
            let p = context.join("Dockerfile");
            let src = super::dockerfile::read(Some(&p))?;
            (Some(p), src.text, "Dockerfile".to_string())
        }
    };
    if !context.is_dir() {
        bail!("build context {} is not a directory", context.display());
    }
    let build_args: BTreeMap<String, String> = args
        .build_args
        .iter()
        .map(|s| kv(s, "build-arg"))
        .collect::<Result<_, _>>()?;
    let labels: BTreeMap<String, String> = args
        .labels
        .iter()
        .map(|s| kv(s, "label"))
        .collect::<Result<_, _>>()?;
    let epoch = build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<i64>()
                .with_context(|| format!("invalid SOURCE_DATE_EPOCH {s:?}"))
        })
        .transpose()?;
    let mut build_contexts = BTreeMap::new();
    for spec in &args.build_contexts {
        let (name, value) = kv(spec, "build-context")?;
        let ctx = if let Some(rest) = value.strip_prefix("oci-layout://") {
            // PATH[:TAG]: the tag picks one image of a layout holding several.
            let (path, tag) = match rest.rsplit_once(':') {
                Some((p, t)) if !t.contains('/') && std::path::Path::new(p).is_dir() => {
                    (p, Some(t))
                }
                _ => (rest, None),
            };
            let loaded = store
                .load(std::path::Path::new(path))
                .with_context(|| format!("--build-context {name}: cannot load {path}"))?;
            let pick = match tag {
                Some(t) => loaded.iter().find(|l| {
                    l.reference
                        .as_deref()
                        .is_some_and(|r| r.ends_with(&format!(":{t}")))
                }),
                None if loaded.len() == 1 => loaded.first(),
                None => bail!(
                    "--build-context {name}: {path} holds {} images; name one with :TAG",
                    loaded.len()
                ),
            };
            let Some(l) = pick else {
                bail!(
                    "--build-context {name}: no image tagged {:?} in {path}",
                    tag.unwrap_or("")
                )
            };
            NamedContext::Image(l.manifest.to_string())
        } else if let Some(image) = value.strip_prefix("docker-image://") {
            NamedContext::Image(image.to_string())
        } else if value.contains("://") {
            bail!(
                "--build-context {name}={value}: only directories, oci-layout:// and docker-image:// are supported yet"
            );
        } else if std::path::Path::new(&value).is_dir() {
            NamedContext::Dir(PathBuf::from(&value))
        } else {
            bail!("--build-context {name}={value}: not a directory");
        };
        build_contexts.insert(name, ctx);
    }
    let mut platforms: Vec<kiln_runtime::oci::Platform> = Vec::new();
    for p in args.platform.iter().flat_map(|p| p.split(',')) {
        let p = kiln_runtime::oci::Platform::parse(p)
            .map_err(|e| anyhow::anyhow!("--platform: {e}"))?;
        if !platforms.contains(&p) {
            platforms.push(p);
        }
    }
    // Names are checked before anything is built: a bad `-t` must not cost a whole build.
    for t in &args.tags {
        kiln_runtime::store::normalize_tag(t).map_err(|e| anyhow::anyhow!("-t {t}: {e}"))?;
    }
    let secrets = args
        .secrets
        .iter()
        .map(|s| exec::mounts::parse_secret(s))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let ssh = args
        .ssh
        .iter()
        .map(|s| exec::mounts::parse_ssh(s))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let opts = BuildOptions {
        context: context.to_path_buf(),
        dockerfile_path,
        dockerfile_text: text.clone(),
        target: args.target.clone(),
        build_args,
        labels,
        tags: args.tags.clone(),
        no_cache: args.no_cache,
        source_date_epoch: epoch,
        jobs: args.jobs,
        build_contexts,
        secrets,
        ssh,
        limits: super::limits(args.memory.as_deref(), args.pids_limit)?,
        explain_cache: args.explain_cache,
        dry_run: false,
        registry: Some(kiln_runtime::registry::PullOptions {
            registry: args.registry.options()?,
            platform: None,
            jobs: 0,
            no_tag: false,
            all_platforms: false,
        }),
        pull_always: args.pull,
        inline_cache: false,
        platforms,
        network: args.network.as_deref().map(|n| match n {
            "none" => kiln_parser::instruction::Network::None,
            "host" => kiln_parser::instruction::Network::Host,
            _ => kiln_parser::instruction::Network::Default,
        }),
        add_hosts: args
            .add_host
            .iter()
            .map(|h| {
                // RUN steps are on the host's network (or none): the host is its loopback.
                super::run::parse_add_host(h).map(|(n, ip)| match ip.as_str() {
                    "host-gateway" => (n, "127.0.0.1".to_string()),
                    _ => (n, ip),
                })
            })
            .collect::<anyhow::Result<_>>()?,
    };
    Ok((opts, name, text))
}

/// `--cache-from`/`--cache-to` values, each checked before the build starts.
pub(super) fn parse_cache_specs(
    values: &[String],
    to: bool,
) -> anyhow::Result<Vec<transfer::Spec>> {
    values
        .iter()
        .map(|v| transfer::parse_spec(v, to).map_err(anyhow::Error::msg))
        .collect()
}

/// The names `--push` pushes to: `-o type=registry,name=`'s, else every `-t`; each checked.
fn push_names(names: &mut Vec<String>, tags: &[String]) -> anyhow::Result<()> {
    if names.is_empty() {
        names.extend_from_slice(tags);
    }
    if names.is_empty() {
        bail!(
            "--push needs a name to push to: -t REGISTRY/NAME[:TAG] (or -o type=registry,name=...)"
        );
    }
    for n in names.iter() {
        kiln_runtime::registry::Target::parse(n).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(())
}

/// `--cache-from`: each cache imported in order; one that cannot be read is a warning, never
/// a failed build (docker's rule).
pub(super) fn import_caches(
    store: &kiln_runtime::store::Store,
    specs: &[transfer::Spec],
    registry: &kiln_runtime::registry::Options,
) {
    for spec in specs {
        match transfer::import_from(store, spec, registry) {
            Ok(n) => eprintln!("kiln: imported {n} cache entries from {}", shown(spec)),
            Err(e) => eprintln!("kiln: warning: cache from {} not used: {e}", shown(spec)),
        }
    }
}

/// `--cache-to`: each export of the build's cache; a failed one fails the build unless
/// `ignore-error=true`.
fn export_caches(
    store: &kiln_runtime::store::Store,
    made: &transfer::Made,
    specs: &[transfer::Spec],
    registry: &kiln_runtime::registry::Options,
) -> anyhow::Result<()> {
    for spec in specs {
        match transfer::export_to(store, made, spec, registry) {
            Ok((n, warnings)) => {
                for w in warnings {
                    eprintln!("kiln: warning: {w}");
                }
                eprintln!("kiln: exported {n} cache entries to {}", shown(spec))
            }
            Err(e) if spec.ignore_error => {
                eprintln!("kiln: warning: cache to {} not written: {e}", shown(spec))
            }
            Err(e) => bail!("cannot export the build cache to {}: {e}", shown(spec)),
        }
    }
    Ok(())
}

/// Where a cache goes or comes from, as a message names it.
fn shown(spec: &transfer::Spec) -> String {
    match &spec.location {
        transfer::Location::Local(dir) => dir.display().to_string(),
        transfer::Location::Registry(r) => r.clone(),
        transfer::Location::Inline => "the image (inline)".into(),
    }
}

pub fn run(root: Option<&std::path::Path>, args: Args) -> anyhow::Result<ExitCode> {
    let store = super::store::open(root)?;
    super::registry::fetch_layers_with(&store, &args.registry)?;
    let (mut opts, name, text) = options(&store, &args)?;
    let mode = match (args.quiet, args.progress) {
        (true, _) | (_, Progress::Quiet) => render::progress::Mode::Quiet,
        (_, Progress::Plain) => render::progress::Mode::Plain,
        (_, Progress::Tty) => render::progress::Mode::Tty,
        (_, Progress::Rawjson) => render::progress::Mode::Json,
        // The TTY view when stderr is a terminal, plain text for logs and CI.
        (_, Progress::Auto) if std::io::stderr().is_terminal() => render::progress::Mode::Tty,
        (_, Progress::Auto) => render::progress::Mode::Plain,
    };
    let progress = render::progress::Progress::new(mode);
    let on_event = |e: Event| progress.event(e);
    // Validate -o before building, so a typo does not cost a build.
    let Output {
        export,
        push: mut push_to,
        compression,
    } = output(args.output.as_deref())?;
    if args.push {
        push_to.get_or_insert_with(Vec::new);
    }
    if let Some(names) = &mut push_to {
        push_names(names, &args.tags)?;
    }
    let cache_from = parse_cache_specs(&args.cache_from, false)?;
    let cache_to = parse_cache_specs(&args.cache_to, true)?;
    opts.inline_cache = cache_to
        .iter()
        .any(|s| s.location == transfer::Location::Inline);
    // Read (and checked) before anything is imported or built.
    let registry = if cache_from.is_empty() && cache_to.is_empty() {
        None
    } else {
        Some(args.registry.options()?)
    };
    if let Some(registry) = &registry {
        import_caches(&store, &cache_from, registry);
    }
    let result = exec::build(&store, &opts, &Sandbox, &on_event);
    progress.finish();
    if let (Ok(out), Some(registry)) = (&result, &registry) {
        export_caches(&store, &out.cache, &cache_to, registry)?;
    }
    match result {
        Ok(out) => {
            let name = out
                .tags
                .first()
                .cloned()
                .unwrap_or_else(|| "kiln.local/unnamed:latest".into());
            match &export {
                // `dest=-`: the archive on stdout, as BuildKit writes it (`> image.tar`).
                Some((k, dest)) if dest.as_os_str() == "-" => {
                    if std::io::stdout().is_terminal() {
                        bail!("refusing to write the {k} archive to a terminal: redirect stdout");
                    }
                    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
                    let written = if k == "tar" {
                        store.export_rootfs_to(&out.manifest, &mut w)
                    } else {
                        store
                            .save_to(&[(name, out.manifest)], &mut w, compression)
                            .map(drop)
                    };
                    written.context("cannot write the archive to stdout")?;
                    std::io::Write::flush(&mut w).context("cannot write the archive to stdout")?;
                }
                Some((k, dest)) if k == "tar" || k == "local" => store
                    .export_rootfs(&out.manifest, dest, k == "local")
                    .with_context(|| format!("cannot export to {}", dest.display()))?,
                Some((_, dest)) => {
                    store
                        .save(
                            &[(name, out.manifest)],
                            dest,
                            dest.to_string_lossy().ends_with('/'),
                            compression,
                        )
                        .with_context(|| format!("cannot export to {}", dest.display()))?;
                }
                None => {}
            }
            for name in push_to.iter().flatten() {
                // The image takes the pushed name too, as BuildKit's image exporter does.
                store.set_tag(name, &out.manifest)?;
                super::registry::push_image(
                    &store,
                    &out.manifest.to_string(),
                    name,
                    &args.registry,
                    compression,
                    mode == render::progress::Mode::Quiet,
                )?;
            }
            // The image's digest as it is distributed (its layers compressed as a push and an
            // OCI export compress them): the one a registry serves after a push, so the
            // metadata file, the line below, `-o type=oci` and the registry agree. Computed
            // when something reports or sends it: compressing costs time a plain build skips.
            let distributed = if args.metadata_file.is_some()
                || push_to.is_some()
                || matches!(&export, Some((k, _)) if k != "tar" && k != "local")
            {
                let (bytes, digest) = store.distributable_any(&out.manifest, compression)?;
                Some((digest, bytes.len() as u64))
            } else {
                None
            };
            if let Some(p) = &args.metadata_file {
                let (digest, size) = distributed.unwrap_or((out.manifest, out.manifest_size));
                let meta = serde_json::json!({
                    "containerimage.digest": digest.to_string(),
                    "containerimage.config.digest": out.config.to_string(),
                    "containerimage.descriptor": {
                        "mediaType": if store.read_index(&out.manifest)?.is_some() {
                            kiln_runtime::oci::MEDIA_INDEX
                        } else {
                            kiln_runtime::oci::MEDIA_MANIFEST
                        },
                        "digest": digest.to_string(),
                        "size": size,
                    },
                    "image.name": out.tags.join(","),
                });
                std::fs::write(p, serde_json::to_vec_pretty(&meta)?)
                    .with_context(|| format!("cannot write {}", p.display()))?;
            }
            if let Some(p) = &args.iidfile {
                std::fs::write(p, out.config.to_string())
                    .with_context(|| format!("cannot write {}", p.display()))?;
            }
            // The store's GC policy (ROOT/kiln.json), if any, once the image is tagged.
            match store.auto_gc() {
                Ok(0) => {}
                Ok(freed) => eprintln!(
                    "kiln: the cache was over its limit: freed {}",
                    render::table::size(freed)
                ),
                Err(e) => eprintln!("kiln: warning: automatic GC: {e}"),
            }
            if !out.explained.is_empty() {
                eprint!("{}", render::explain::render(&out.explained));
            }
            let archive_on_stdout = matches!(&export, Some((_, d)) if d.as_os_str() == "-");
            if mode == render::progress::Mode::Quiet {
                // Not into an archive written to stdout.
                if !archive_on_stdout {
                    outln!("{}", out.config);
                }
            } else {
                eprintln!("writing image {} done", out.config);
                if let Some((digest, _)) = &distributed {
                    eprintln!("manifest {digest}");
                }
                for t in &out.tags {
                    eprintln!("naming to {t} done");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            report(&name, &text, &e);
            Ok(ExitCode::from(1))
        }
    }
}

/// Prints a failed build's error, with the Dockerfile's line when it has one.
pub(super) fn report(name: &str, text: &str, e: &BuildError) {
    match (e, e.span()) {
        (BuildError::Parse(p), _) => eprint!("{}", render::diagnostic::error(name, text, p)),
        (_, Some(span)) => eprint!(
            "{}",
            render::diagnostic::render(name, text, span, "error", &e.to_string())
        ),
        _ => eprintln!("kiln: error: {e}"),
    }
}

/// What `-o` asks for.
#[derive(Debug, Default)]
struct Output {
    /// An export: `type=oci|docker|tar|local,dest=PATH`.
    export: Option<(String, PathBuf)>,
    /// A push (`type=registry[,name=N]`, `type=image,push=true[,name=N]`; names are comma-free,
    /// several with `name="a,b"` as BuildKit): the names, empty for the `-t` names.
    push: Option<Vec<String>>,
    /// `compression=gzip|zstd`.
    compression: LayerCompression,
}

/// Parses `-o`.
fn output(spec: Option<&str>) -> anyhow::Result<Output> {
    let Some(spec) = spec else {
        return Ok(Output::default());
    };
    let usage = || {
        anyhow::anyhow!(
            "invalid --output {spec:?}: expected type=oci|docker|tar|local,dest=PATH or \
             type=registry[,name=NAME] (and compression=gzip|zstd)"
        )
    };
    let (mut kind, mut dest, mut names, mut push) = (None, None, Vec::new(), false);
    let mut compression = LayerCompression::default();
    for part in split_quoted(spec) {
        match part.split_once('=') {
            Some(("type", v)) => kind = Some(v.to_string()),
            Some(("dest", v)) => dest = Some(PathBuf::from(v)),
            Some(("name", v)) => names.extend(
                v.trim_matches('"')
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(str::to_string),
            ),
            Some(("push", v)) => push = v == "true",
            Some(("compression", v)) => {
                compression = LayerCompression::parse(v).ok_or_else(|| {
                    anyhow::anyhow!("invalid --output {spec:?}: compression is gzip or zstd")
                })?;
            }
            _ => return Err(usage()),
        }
    }
    if kind.as_deref() == Some("local") && dest.as_deref() == Some(std::path::Path::new("-")) {
        bail!(
            "invalid --output {spec:?}: type=local writes a directory; for a tar on stdout use type=tar,dest=-"
        );
    }
    let (export, push) = match (kind.as_deref(), dest) {
        (Some(k @ ("oci" | "docker" | "tar" | "local")), Some(d)) => {
            (Some((k.to_string(), d)), None)
        }
        (Some("registry"), None) => (None, Some(names)),
        (Some("image"), None) if push => (None, Some(names)),
        (Some("image"), None) => (None, None),
        _ => return Err(usage()),
    };
    Ok(Output {
        export,
        push,
        compression,
    })
}

/// Splits on commas outside double quotes.
fn split_quoted(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}
