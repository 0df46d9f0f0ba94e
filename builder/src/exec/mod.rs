//! The executor: runs the stages `--target` needs, in dependency order, and writes the image.
//!
//! A stage's state is its layers, its merged filesystem view, its image config and its ARGs.
//! Metadata instructions change the config only (`empty_layer` history); COPY/ADD and WORKDIR
//! write layers; RUN goes through a [`StepRunner`] (the sandbox), and without one it
//! fails at its line with a clear error rather than being skipped.
//!
//! Cache keys chain through filesystem operations only, as BuildKit's LLB does: a changed ENV
//! does not invalidate a later COPY (it will be part of a RUN's key).

mod copy;
mod ctx;
mod dispatch;
mod elfcheck;
pub mod fsutil;
mod gofmt;
mod metadata;
pub mod mounts;
mod run;
mod schedule;
mod stage;
mod state;
mod workdir;

use ctx::Ctx;
use schedule::run_stages;
use stage::load_image;
pub(crate) use state::{LayerRef, StageState};

use std::{collections::BTreeMap, path::PathBuf};

use kiln_parser::{
    ParseError,
    instruction::{self, Command, Instruction},
    shell::Lexer,
    span::Span,
};
use kiln_runtime::{
    digest::Digest,
    oci::{self, Manifest},
    store::{Store, StoreError},
};

use crate::{
    context::snapshot::ContextError,
    graph::{BuildGraph, GraphError, GraphOptions},
};

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub context: PathBuf,
    /// The Dockerfile's path (for `<Dockerfile>.dockerignore`), `None` when read from stdin.
    pub dockerfile_path: Option<PathBuf>,
    pub dockerfile_text: String,
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// `--cache-to type=inline`: the image's config carries the cache of its steps.
    pub inline_cache: bool,
    pub labels: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub no_cache: bool,
    /// `SOURCE_DATE_EPOCH`: clamps every timestamp in the image.
    pub source_date_epoch: Option<i64>,
    /// How many stages may run at once (`--jobs`); 0 means one per core.
    pub jobs: usize,
    /// `--build-context NAME=...`: what FROM NAME / --from=NAME use when no stage has the name.
    pub build_contexts: BTreeMap<String, NamedContext>,
    /// `--secret id=...`: where each secret's value comes from (read only when a step mounts it).
    pub secrets: BTreeMap<String, mounts::SecretSource>,
    /// `--ssh id[=socket]`: the agent socket each id forwards.
    pub ssh: BTreeMap<String, PathBuf>,
    /// `--memory`, `--pids-limit`: for each RUN step.
    pub limits: kiln_runtime::sandbox::cgroup::Limits,
    /// `--explain-cache`: say HIT or MISS for each step and why the first miss missed.
    pub explain_cache: bool,
    /// `kiln cache explain`: compute the keys, execute nothing, stop each stage at its first
    /// miss.
    pub dry_run: bool,
    /// How base images missing from the store are pulled; `None`: never.
    pub registry: Option<kiln_runtime::registry::PullOptions>,
    /// `--pull`: pull base images named by tag even when the store has them.
    pub pull_always: bool,
    /// `--platform`: the platforms to build for; none: this machine's. One gives an image for
    /// it, several an index of one image each.
    pub platforms: Vec<oci::Platform>,
    /// `--network`: the network of RUN steps that name none (or `default`), as BuildKit's;
    /// `None` or `default`: the host's.
    pub network: Option<kiln_parser::instruction::Network>,
    /// `--add-host NAME:IP`: lines added to every RUN step's /etc/hosts (name, address).
    pub add_hosts: Vec<(String, String)>,
}

/// A named build context (BuildKit `--build-context`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory: its files (after its own `.dockerignore`).
    Dir(PathBuf),
    /// An image in the store (a tag or a manifest digest), e.g. loaded from `oci-layout://`.
    Image(String),
}

/// Progress, for the CLI to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A step started: `[build 2/5] COPY . /app`.
    Started {
        name: String,
    },
    Cached {
        name: String,
    },
    Done {
        name: String,
        millis: u128,
    },
    /// One line a RUN step printed (stdout and stderr together).
    Output {
        name: String,
        line: String,
    },
    /// A base image is being pulled from its registry.
    Pulling {
        reference: String,
    },
    /// Something the build could not do as asked and went on without (a refused limit).
    Warning {
        message: String,
    },
    /// A step failed: BuildKit's `#N ERROR: ...` line in the plain log.
    Failed {
        name: String,
        message: String,
    },
}

/// The image that was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutput {
    pub manifest: Digest,
    pub config: Digest,
    pub tags: Vec<String>,
    pub manifest_size: u64,
    /// With `explain_cache`: HIT/MISS per keyed step and the first miss's cause.
    pub explained: Vec<crate::cache::explain::Explained>,
    /// What a `--cache-to` export of this build takes.
    pub cache: crate::cache::transfer::Made,
}

/// Why a build failed. `At` errors point into the Dockerfile.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{message}")]
    At { span: Span, message: String },
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
    /// A dry run (`kiln cache explain`) reached a step that would have to run.
    #[error("a step would have to run (dry run)")]
    DryRunMiss,
    /// The answer of a dry run: what [`explain`] returns.
    #[error("dry run")]
    Explained(Vec<crate::cache::explain::Explained>),
}

impl Event {
    /// The event of one platform's build among several: its step names start with the
    /// platform, as BuildKit's `[linux/arm64 build 2/5] RUN ...`.
    fn for_platform(self, p: &oci::Platform) -> Event {
        let named = |name: String| match name.strip_prefix('[') {
            Some(rest) => format!("[{p} {rest}"),
            None => format!("[{p}] {name}"),
        };
        match self {
            Event::Started { name } => Event::Started { name: named(name) },
            Event::Cached { name } => Event::Cached { name: named(name) },
            Event::Done { name, millis } => Event::Done {
                name: named(name),
                millis,
            },
            Event::Output { name, line } => Event::Output {
                name: named(name),
                line,
            },
            Event::Failed { name, message } => Event::Failed {
                name: named(name),
                message,
            },
            Event::Warning { message } => Event::Warning {
                message: format!("{p}: {message}"),
            },
            e @ Event::Pulling { .. } => e,
        }
    }
}

impl BuildError {
    pub fn at(span: Span, message: impl Into<String>) -> Self {
        BuildError::At {
            span,
            message: message.into(),
        }
    }

    /// The error of one platform's build among several, which names the platform.
    fn for_platform(self, p: &oci::Platform) -> BuildError {
        match self {
            BuildError::At { span, message } => BuildError::At {
                span,
                message: format!("{p}: {message}"),
            },
            BuildError::Other(m) => BuildError::Other(format!("{p}: {m}")),
            e => e,
        }
    }

    /// Where in the Dockerfile the error is, when it is about a line.
    pub fn span(&self) -> Option<Span> {
        match self {
            BuildError::At { span, .. } => Some(*span),
            BuildError::Parse(e) => Some(e.span),
            BuildError::Graph(g) => g.span(),
            _ => None,
        }
    }
}

/// What one RUN step needs from the machine: its root filesystem is `lower` (top first) under
/// a writable `upper`, mounted on `rootfs`; its process is `spec`; its output goes to `log`.
#[derive(Debug)]
pub struct RunJob<'a> {
    pub lower: &'a [PathBuf],
    pub upper: &'a std::path::Path,
    pub work: &'a std::path::Path,
    pub rootfs: &'a std::path::Path,
    pub spec: &'a kiln_runtime::sandbox::process::Spec,
    pub log: &'a std::fs::File,
}

/// Runs RUN steps: [`Sandbox`] (namespaces and overlayfs), or [`NoSandbox`] where nothing may
/// execute. The executor prepares the directories, the cache key and the layer; a runner only
/// mounts, runs and unmounts (tests substitute a fake to observe scheduling).
pub trait StepRunner: Sync {
    /// Runs `job` for instruction `ins` of stage `stage`; returns the process's exit code.
    fn run(&self, stage: &str, ins: &Instruction, job: &RunJob<'_>) -> Result<i32, BuildError>;
}

/// RUN steps run in `kiln_runtime::sandbox` (needs root).
#[derive(Debug, Default)]
pub struct Sandbox;

impl StepRunner for Sandbox {
    fn run(&self, _stage: &str, ins: &Instruction, job: &RunJob<'_>) -> Result<i32, BuildError> {
        use kiln_runtime::sandbox::{overlay, process};
        let failed = |e: &dyn std::fmt::Display| {
            BuildError::at(ins.span, format!("{}: {e}", short(&ins.text)))
        };
        let ov = overlay::Overlay {
            lower: job.lower,
            upper: job.upper,
            work: job.work,
        };
        // The upper is read into the layer blob after the unmount, then removed: scratch.
        overlay::mount_scratch(ov, job.rootfs).map_err(|e| failed(&e))?;
        let stdio = || job.log.try_clone().map(process::Stdio::from);
        let status = stdio()
            .and_then(|o| Ok((o, stdio()?)))
            .map_err(|e| failed(&e))
            .and_then(|(o, e)| {
                process::run(job.spec, process::Stdio::null(), o, e).map_err(|e| failed(&e))
            });
        let unmounted = overlay::unmount(job.rootfs);
        let status = status?;
        unmounted.map_err(|e| failed(&e))?;
        overlay::finish(ov, job.rootfs).map_err(|e| failed(&e))?;
        Ok(process::exit_code(status))
    }
}

/// No sandbox: every RUN fails with a clear error naming the step.
#[derive(Debug, Default)]
pub struct NoSandbox;

impl StepRunner for NoSandbox {
    fn run(&self, _stage: &str, ins: &Instruction, _job: &RunJob<'_>) -> Result<i32, BuildError> {
        Err(BuildError::at(
            ins.span,
            format!("{}: RUN needs the sandbox, which is off", short(&ins.text)),
        ))
    }
}

/// The build's threads: `--jobs` (0: one per core), but never more than there is work for:
/// one per stage that could run at once, or one per core for hashing the context, whichever is
/// more (`--jobs 20000` must not start 20,000 threads).
fn threads(jobs: usize, stages: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let wanted = if jobs == 0 { cores } else { jobs };
    wanted.min(stages.max(cores)).max(1)
}

/// An instruction's text after its keyword.
fn args_of(text: &str) -> &str {
    text.split_once(char::is_whitespace)
        .map_or("", |(_, rest)| rest.trim_start())
}

fn short(text: &str) -> String {
    let t: String = text.chars().take(60).collect();
    if t.len() < text.len() {
        format!("{t}...")
    } else {
        t
    }
}

/// What a keyed step's record says went into it (see [`Ctx::lookup`]).
pub(crate) enum Recorded<'a> {
    /// The key's own inputs.
    KeyInputs,
    /// Inputs per file, and the context path each was copied from where it differs (what an
    /// explanation names, since that is the file a user edits).
    Files(&'a BTreeMap<String, Digest>, BTreeMap<String, String>),
    /// Not worked out: only for a hit whose key the store already has a record of, outside
    /// `--explain-cache` and dry runs ([`Ctx::needs_record`]).
    Skipped,
}

/// The automatic platform ARGs, as BuildKit defines them: `BUILD*` for this machine,
/// `TARGET*` for the platform being built.
fn platform_args(target: &oci::Platform) -> BTreeMap<String, String> {
    let build = oci::host_platform().normalized();
    let mut out = BTreeMap::new();
    for (prefix, p) in [("TARGET", target), ("BUILD", &build)] {
        out.insert(format!("{prefix}PLATFORM"), p.to_string());
        out.insert(format!("{prefix}OS"), p.os.clone());
        out.insert(format!("{prefix}ARCH"), p.architecture.clone());
        out.insert(
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        );
    }
    out
}

/// Builds the image `opts` describes: for this machine's platform, for the one platform
/// asked for, or, for several, one image each (side by side, sharing the context's snapshot)
/// joined in an index that the tags name.
pub fn build(
    store: &Store,
    opts: &BuildOptions,
    runner: &dyn StepRunner,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<BuildOutput, BuildError> {
    let snapshot = std::sync::OnceLock::new();
    // A remote cache hit's layer is fetched when a later step needs its files. One the
    // registry no longer serves, or serves wrong (checked by digest and diff_id), is never a
    // failed build: it is forgotten, said in a warning, and the build goes again, its step now
    // a miss that runs. Each round forgets one layer, so this ends.
    loop {
        let built = match opts.platforms.as_slice() {
            [] => build_one(
                store,
                opts,
                &oci::host_platform(),
                runner,
                on_event,
                &snapshot,
            ),
            [p] => build_one(store, opts, p, runner, on_event, &snapshot),
            several => build_index(store, opts, several, runner, on_event, &snapshot),
        };
        match built {
            Err(BuildError::Store(StoreError::Fetch { digest, reason }))
                if store.forget_remote_layer(&digest)? =>
            {
                on_event(Event::Warning {
                    message: format!(
                        "a layer of the imported cache could not be fetched ({digest}: \
                         {reason}); building its step instead"
                    ),
                });
            }
            other => return other,
        }
    }
}

/// Several platforms: each built on a thread of its own (its progress names it, as
/// BuildKit's `[linux/arm64 build 2/5]`), then an index of the images, tagged.
fn build_index(
    store: &Store,
    opts: &BuildOptions,
    platforms: &[oci::Platform],
    runner: &dyn StepRunner,
    on_event: &(dyn Fn(Event) + Sync),
    snapshot: &SharedSnapshot,
) -> Result<BuildOutput, BuildError> {
    let _guard = store.build_guard()?;
    let each = BuildOptions {
        tags: Vec::new(),
        ..opts.clone()
    };
    let results: Vec<Result<BuildOutput, BuildError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = platforms
            .iter()
            .map(|p| {
                let each = &each;
                scope.spawn(move || {
                    let named = |e: Event| on_event(e.for_platform(p));
                    build_one(store, each, p, runner, &named, snapshot)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(BuildError::Other(
                        "a platform's build thread panicked".into(),
                    ))
                })
            })
            .collect()
    });
    let mut outs = Vec::new();
    for (p, r) in platforms.iter().zip(results) {
        outs.push(r.map_err(|e| e.for_platform(p))?);
    }
    let manifests: Vec<Digest> = outs.iter().map(|o| o.manifest).collect();
    let index = store.put_index(&manifests)?;
    store.note_image(&index)?;
    let mut tags = Vec::new();
    for t in &opts.tags {
        tags.push(store.set_tag(t, &index)?);
    }
    let mut cache = crate::cache::transfer::Made::default();
    let mut explained = Vec::new();
    for o in &mut outs {
        cache.merge(std::mem::take(&mut o.cache));
        explained.append(&mut o.explained);
    }
    Ok(BuildOutput {
        manifest: index,
        config: index,
        tags,
        manifest_size: store.read_blob(&index)?.len() as u64,
        explained,
        cache,
    })
}

/// The build context's snapshot, read once and shared by every platform's build.
pub(crate) type SharedSnapshot =
    std::sync::OnceLock<Result<crate::context::snapshot::Snapshot, String>>;

/// Builds the image for `platform`.
fn build_one(
    store: &Store,
    opts: &BuildOptions,
    platform: &oci::Platform,
    runner: &dyn StepRunner,
    on_event: &(dyn Fn(Event) + Sync),
    snapshot: &SharedSnapshot,
) -> Result<BuildOutput, BuildError> {
    // Held for the whole build: `kiln cache prune` waits for it, so no entry this build hits
    // disappears before the image that uses it is tagged.
    let _guard = store.build_guard()?;
    let df = kiln_parser::parse(&opts.dockerfile_text)?;
    let instructions = instruction::from_ast(&df)?;
    let platform = platform.normalized();
    let graph = BuildGraph::new(
        &instructions,
        &GraphOptions {
            target: opts.target.clone(),
            build_args: opts.build_args.clone(),
            platform_args: platform_args(&platform),
            named_contexts: opts.build_contexts.keys().cloned().collect(),
        },
    )?;
    let now = opts.source_date_epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    let ctx = Ctx {
        store,
        opts,
        lex: Lexer::new(df.escape),
        snapshot,
        platform: platform.clone(),
        graph: &graph,
        instructions: &instructions,
        on_event,
        runner,
        now,
        limits_warned: std::sync::atomic::AtomicBool::new(false),
        records: std::sync::Mutex::new(Vec::new()),
        times: std::sync::Mutex::new(Vec::new()),
        cache_mounts: std::sync::Mutex::new(std::collections::BTreeSet::new()),
        previous: std::sync::OnceLock::new(),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads(opts.jobs, graph.stages.len()))
        .build()
        .map_err(|e| BuildError::Other(format!("cannot start the build threads: {e}")))?;
    let ran = pool.install(|| run_stages(&ctx));
    let mut records = std::mem::take(&mut *ctx.records.lock().unwrap_or_else(|p| p.into_inner()));
    // Stages ran side by side: order the records as the Dockerfile does.
    records.sort_by(|a, b| (&a.stage, a.index).cmp(&(&b.stage, b.index)));
    let identity = build_identity(opts, &platform);
    let explained = || -> Result<Vec<crate::cache::explain::Explained>, BuildError> {
        let previous = crate::cache::history::load(ctx.store, &identity)?;
        Ok(crate::cache::explain::explain(
            &records,
            previous.as_deref(),
        ))
    };
    if opts.dry_run {
        return match ran {
            Ok(_) | Err(BuildError::DryRunMiss) => Err(BuildError::Explained(explained()?)),
            Err(e) => Err(e),
        };
    }
    let mut done = ran?;
    let state = done
        .remove(&graph.target)
        .ok_or_else(|| BuildError::Other("the target stage was not built".into()))?;
    // Never a silent wrong-platform image: a last stage pinned to another platform
    // (`FROM --platform=$BUILDPLATFORM`) makes an image that does not run where it is sent.
    let made_for = state.config.platform();
    // (A base image whose config names no platform says nothing to check.)
    if !opts.platforms.is_empty()
        && !made_for.architecture.is_empty()
        && !made_for.matches(&platform)
    {
        let message = format!(
            "the image built for {platform} is a {} image: the last stage runs on another \
             platform (FROM --platform); build it for the target platform and COPY --from the \
             cross-compiling stage",
            made_for.normalized()
        );
        // One platform asked for: the image is what the Dockerfile says (BuildKit's too),
        // said aloud; in an index it would be a wrong entry, so that is refused.
        if opts.platforms.len() == 1 {
            on_event(Event::Warning { message });
        } else {
            return Err(BuildError::at(graph.stages[graph.target].span, message));
        }
    }
    // What a cache export takes: every keyed step, the metadata steps' times, and which layers
    // the image has (`mode=min` exports only theirs).
    let made = crate::cache::transfer::Made {
        keys: records.iter().map(|r| r.key.clone()).collect(),
        times: std::mem::take(&mut *ctx.times.lock().unwrap_or_else(|p| p.into_inner())),
        image_layers: state.config.rootfs.diff_ids.iter().cloned().collect(),
        mounts: std::mem::take(&mut *ctx.cache_mounts.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .collect(),
    };
    let mut state = state;
    if opts.inline_cache {
        state.config.inline_cache = Some(
            crate::cache::transfer::inline(store, &made)
                .map_err(|e| BuildError::Other(format!("the inline cache: {e}")))?,
        );
    }
    let mut out = assemble(&ctx, state)?;
    if opts.explain_cache {
        out.explained = explained()?;
    }
    out.cache = made;
    crate::cache::history::save(ctx.store, &identity, &records)?;
    Ok(out)
}

/// `kiln cache explain`: the keys of `opts`'s build computed without executing anything, in
/// each stage up to the first step that would have to run (a stage that needs a stage which
/// misses is not keyed); HIT/MISS per step and why each stage's first miss missed.
pub fn explain(
    store: &Store,
    opts: &BuildOptions,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<Vec<crate::cache::explain::Explained>, BuildError> {
    let opts = BuildOptions {
        dry_run: true,
        ..opts.clone()
    };
    match build(store, &opts, &NoSandbox, on_event) {
        Err(BuildError::Explained(e)) => Ok(e),
        Err(e) => Err(e),
        Ok(_) => Err(BuildError::Other("a dry run built an image".into())),
    }
}

/// Which earlier build a build compares with: the same context, Dockerfile and target.
fn build_identity(opts: &BuildOptions, platform: &oci::Platform) -> String {
    let canon = |p: &std::path::Path| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let platform = if platform.is_host() {
        String::new()
    } else {
        format!("\n{platform}")
    };
    format!(
        "{}\n{}\n{}{platform}",
        canon(&opts.context),
        opts.dockerfile_path.as_deref().map_or("-".into(), canon),
        opts.target.as_deref().unwrap_or("")
    )
}

pub(crate) fn shell_wrap(st: &StageState, cmd: &Command) -> Vec<String> {
    match cmd {
        Command::Exec(v) => v.clone(),
        Command::Shell(s) => {
            let mut v = if st.config.config.shell.is_empty() {
                vec!["/bin/sh".to_string(), "-c".to_string()]
            } else {
                st.config.config.shell.clone()
            };
            v.push(s.clone());
            v
        }
    }
}

/// Writes the config and manifest of the final state and tags them.
fn assemble(ctx: &Ctx<'_>, mut st: StageState) -> Result<BuildOutput, BuildError> {
    for (k, v) in &ctx.opts.labels {
        st.config.config.labels.insert(k.clone(), v.clone());
    }
    // The image was made when its newest step was: a rebuild from the cache gives the same.
    st.config.created = st
        .config
        .history
        .iter()
        .filter_map(|h| h.created.clone())
        .max()
        .or_else(|| Some(ctx.created(&st)));
    if let Some(epoch) = ctx.opts.source_date_epoch {
        // Clamp inherited history too.
        let clamp = fsutil::rfc3339(epoch);
        for h in &mut st.config.history {
            if h.created.as_deref().is_some_and(|c| c > clamp.as_str()) {
                h.created = Some(clamp.clone());
            }
        }
    }
    let config = oci::write_json(&st.config, oci::MEDIA_CONFIG);
    let config_digest = ctx.store.put_blob(&config.bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: oci::MEDIA_MANIFEST.into(),
        config: config.descriptor,
        layers: st.layers.iter().map(|l| l.descriptor.clone()).collect(),
        annotations: BTreeMap::new(),
    };
    let m = oci::write_json(&manifest, oci::MEDIA_MANIFEST);
    let manifest_digest = ctx.store.put_blob(&m.bytes)?;
    // Named by its ID even without a tag (`kiln run $(kiln build -q .)`).
    ctx.store.note_image(&manifest_digest)?;
    let mut tags = Vec::new();
    for t in &ctx.opts.tags {
        tags.push(ctx.store.set_tag(t, &manifest_digest)?);
    }
    Ok(BuildOutput {
        manifest: manifest_digest,
        config: config_digest,
        tags,
        manifest_size: m.bytes.len() as u64,
        explained: Vec::new(),
        cache: Default::default(),
    })
}
