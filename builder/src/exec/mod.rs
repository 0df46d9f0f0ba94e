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
pub mod fsutil;
mod gofmt;
pub mod mounts;
mod run;

use std::{collections::BTreeMap, path::PathBuf, time::Instant};

use kiln_parser::{
    ParseError,
    instruction::{self, Command, Health, Instruction, Kind},
    shell::Lexer,
    span::Span,
};
use kiln_runtime::{
    digest::Digest,
    layer::view::View,
    oci::{self, Descriptor, History, ImageConfig, Manifest, RootFs},
    store::{Store, StoreError},
};

use crate::{
    cache::key::CacheKey,
    context::snapshot::{ContextError, Snapshot},
    graph::{Base, BuildGraph, GraphError, GraphOptions},
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

impl BuildError {
    pub fn at(span: Span, message: impl Into<String>) -> Self {
        BuildError::At {
            span,
            message: message.into(),
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
        overlay::mount(ov, job.rootfs).map_err(|e| failed(&e))?;
        let stdio = || job.log.try_clone().map(std::process::Stdio::from);
        let status = stdio()
            .and_then(|o| Ok((o, stdio()?)))
            .map_err(|e| failed(&e))
            .and_then(|(o, e)| {
                process::run(job.spec, std::process::Stdio::null(), o, e).map_err(|e| failed(&e))
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

/// A layer of a stage: its manifest descriptor and diff_id.
#[derive(Debug, Clone)]
pub(crate) struct LayerRef {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
}

/// Everything a stage has built so far.
#[derive(Debug, Clone)]
pub(crate) struct StageState {
    pub layers: Vec<LayerRef>,
    /// The merged filesystem view of `layers`, less those in `view_pending`: a layer is read
    /// into it only when a later step looks ([`StageState::sync_view`]), so a cached
    /// 30,000-file COPY followed by RUNs is never read back.
    view: View,
    /// Layers (index, blob) not yet in `view`, in order.
    view_pending: Vec<(usize, Digest)>,
    pub config: ImageConfig,
    /// ARGs in scope with their values (`None`: declared, no value).
    pub args: BTreeMap<String, Option<String>>,
    /// The cache key of the filesystem so far.
    pub key: CacheKey,
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    pub cmd_set: bool,
    /// When the filesystem last changed (seconds): the time of the last layer step, reused from
    /// the cache on a hit, so a fully cached rebuild gives the same image.
    pub time: Option<i64>,
    /// The base image's `created`, for a stage that has not changed its filesystem yet.
    pub base_created: Option<String>,
    /// The Dockerfile line of the step being built (for cache entry descriptions).
    pub line: usize,
    /// Where each ENV name is in `config.config.env`: lookups and `ENV` updates take log n,
    /// not n, so a Dockerfile of n instructions builds in n log n ([`StageState::reindex_env`]
    /// after the config is replaced).
    env_index: BTreeMap<String, usize>,
    /// The variables steps see (BuildKit's LLB state env): every ENV and every ARG with a
    /// value, the later of the two winning, as in BuildKit where `ARG V` after `ENV V=x`
    /// overrides it for expansion and RUN while the config keeps `V=x`. A stage built on
    /// another starts with that one's.
    state_env: BTreeMap<String, String>,
    /// Every ARG this stage (and the stage it is built on) declared, in order, repeats
    /// included: BuildKit's `buildArgs`, which prefix a RUN's history (`|2 A=1 B= ...`).
    pub arg_order: Vec<String>,
    /// Metadata history entries whose time is still to be looked up (index in the history, the
    /// step's key): [`Ctx::resolve_times`] asks the store for all of them at once.
    pending_times: Vec<(usize, String)>,
}

impl StageState {
    /// An empty stage, as BuildKit's `emptyImage`: the working directory `/` and the default
    /// PATH in its config.
    fn scratch() -> StageState {
        let mut st = StageState::nothing();
        st.config.config.working_dir = "/".into();
        st.set_env("PATH", kiln_runtime::sandbox::process::DEFAULT_PATH);
        st
    }

    /// A stage with an empty config (filled from a base image by the caller).
    fn nothing() -> StageState {
        let p = oci::host_platform();
        StageState {
            layers: Vec::new(),
            view: View::default(),
            view_pending: Vec::new(),
            config: ImageConfig {
                architecture: p.architecture,
                os: p.os,
                variant: p.variant,
                rootfs: RootFs {
                    kind: "layers".into(),
                    diff_ids: Vec::new(),
                },
                ..Default::default()
            },
            args: BTreeMap::new(),
            key: CacheKey::for_base("scratch"),
            cmd_set: false,
            time: None,
            base_created: None,
            line: 0,
            env_index: BTreeMap::new(),
            state_env: BTreeMap::new(),
            arg_order: Vec::new(),
            pending_times: Vec::new(),
        }
    }

    /// Applies the layers added since the view was last brought up to date, from the store's
    /// index of each (its tar is not read).
    pub fn sync_view(&mut self, store: &Store) -> Result<(), BuildError> {
        for (index, blob) in std::mem::take(&mut self.view_pending) {
            self.view.apply_entries(index, &store.layer_entries(&blob)?);
        }
        Ok(())
    }

    /// The filesystem view; [`StageState::sync_view`] must have brought it up to date.
    pub fn view(&self) -> Result<&View, BuildError> {
        if self.view_pending.is_empty() {
            Ok(&self.view)
        } else {
            Err(BuildError::Other(
                "internal error: the filesystem view was read before its layers were applied"
                    .into(),
            ))
        }
    }

    /// Adds layer `index`, whose blob is `blob`, to the view when it is next brought up to date.
    pub fn view_later(&mut self, index: usize, blob: Digest) {
        self.view_pending.push((index, blob));
    }

    /// The variables steps see ([`StageState::state_env`]).
    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.state_env
    }

    pub fn workdir(&self) -> String {
        let w = &self.config.config.working_dir;
        if w.is_empty() {
            "/".to_string()
        } else {
            w.clone()
        }
    }

    /// Rebuilds the ENV index after `config` was replaced (a base image's config).
    fn reindex_env(&mut self) {
        self.state_env = self
            .config
            .config
            .env
            .iter()
            .map(|e| {
                let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        self.env_index = self
            .config
            .config
            .env
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    e.split_once('=').map_or(e.as_str(), |(k, _)| k).to_string(),
                    i,
                )
            })
            .collect();
    }

    fn set_env(&mut self, key: &str, value: &str) {
        self.state_env.insert(key.to_string(), value.to_string());
        let entry = format!("{key}={value}");
        let env = &mut self.config.config.env;
        match self.env_index.get(key) {
            Some(&i) => env[i] = entry,
            None => {
                self.env_index.insert(key.to_string(), env.len());
                env.push(entry);
            }
        }
    }

    pub fn add_layer(&mut self, layer: LayerRef, key: CacheKey) {
        self.config.rootfs.diff_ids.push(layer.diff_id.to_string());
        self.layers.push(layer);
        self.key = key;
    }
}

struct Ctx<'a> {
    store: &'a Store,
    opts: &'a BuildOptions,
    lex: Lexer,
    /// The build context, read on first use (a COPY, or an ONBUILD trigger of a base image) and
    /// then shared read-only by every stage; the error is kept as text to be reported by each.
    snapshot: std::sync::OnceLock<Result<Snapshot, String>>,
    graph: &'a BuildGraph,
    instructions: &'a [Instruction],
    on_event: &'a (dyn Fn(Event) + Sync),
    runner: &'a dyn StepRunner,
    now: i64,
    /// A limit the kernel refused was reported (once per build).
    limits_warned: std::sync::atomic::AtomicBool,
    /// What went into each keyed step (for `--explain-cache` and the next build's).
    records: std::sync::Mutex<Vec<crate::cache::explain::Record>>,
    /// The last build of this Dockerfile and target: each step's key (read on first use).
    previous: std::sync::OnceLock<Vec<crate::cache::explain::Record>>,
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

/// Builds the image `opts` describes.
pub fn build(
    store: &Store,
    opts: &BuildOptions,
    runner: &dyn StepRunner,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<BuildOutput, BuildError> {
    // Held for the whole build: `kiln cache prune` waits for it, so no entry this build hits
    // disappears before the image that uses it is tagged.
    let _guard = store.build_guard()?;
    let df = kiln_parser::parse(&opts.dockerfile_text)?;
    let instructions = instruction::from_ast(&df)?;
    let host = oci::host_platform();
    let platform_args: BTreeMap<String, String> = [
        (
            "TARGETPLATFORM",
            format!("{}/{}", host.os, host.architecture),
        ),
        ("TARGETOS", host.os.clone()),
        ("TARGETARCH", host.architecture.clone()),
        ("TARGETVARIANT", host.variant.clone().unwrap_or_default()),
        (
            "BUILDPLATFORM",
            format!("{}/{}", host.os, host.architecture),
        ),
        ("BUILDOS", host.os.clone()),
        ("BUILDARCH", host.architecture.clone()),
        ("BUILDVARIANT", host.variant.clone().unwrap_or_default()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let graph = BuildGraph::new(
        &instructions,
        &GraphOptions {
            target: opts.target.clone(),
            build_args: opts.build_args.clone(),
            platform_args,
            named_contexts: opts.build_contexts.keys().cloned().collect(),
        },
    )?;
    // One platform, this machine's, until multi-platform builds exist: a stage for another is
    // refused at its FROM rather than silently built for this one.
    for &s in &graph.order {
        let stage = &graph.stages[s];
        if let Some(p) = stage
            .platform
            .as_deref()
            .filter(|p| !oci::is_host_platform(p))
        {
            return Err(BuildError::at(
                stage.span,
                format!(
                    "FROM --platform={p}: kiln builds for this machine's platform ({}) only",
                    oci::host_platform_string()
                ),
            ));
        }
    }
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
        snapshot: std::sync::OnceLock::new(),
        graph: &graph,
        instructions: &instructions,
        on_event,
        runner,
        now,
        limits_warned: std::sync::atomic::AtomicBool::new(false),
        records: std::sync::Mutex::new(Vec::new()),
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
    let identity = build_identity(opts);
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
    let mut out = assemble(&ctx, state)?;
    if opts.explain_cache {
        out.explained = explained()?;
    }
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
fn build_identity(opts: &BuildOptions) -> String {
    let canon = |p: &std::path::Path| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    format!(
        "{}\n{}\n{}",
        canon(&opts.context),
        opts.dockerfile_path.as_deref().map_or("-".into(), canon),
        opts.target.as_deref().unwrap_or("")
    )
}

/// Shared state of one scheduler run.
struct Sched {
    done: std::sync::Mutex<BTreeMap<usize, StageState>>,
    /// For each needed stage, how many of its needed dependencies are not built yet.
    waiting: std::sync::Mutex<BTreeMap<usize, usize>>,
    /// The first failure, by stage (the lowest-numbered stage's error is reported).
    failed: std::sync::Mutex<BTreeMap<usize, BuildError>>,
    /// Dry run: stages that stopped at a miss. The stages that need them cannot be keyed and
    /// never start; the others go on, so each independent stage's first miss is found.
    missed: std::sync::atomic::AtomicBool,
}

/// Runs the needed stages, each as soon as the stages it needs are built (independent stages
/// run side by side on the pool). After a failure no new stage starts; running ones finish.
fn run_stages(ctx: &Ctx<'_>) -> Result<BTreeMap<usize, StageState>, BuildError> {
    let needed: std::collections::BTreeSet<usize> = ctx.graph.order.iter().copied().collect();
    let waiting: BTreeMap<usize, usize> = needed
        .iter()
        .map(|&s| {
            (
                s,
                ctx.graph.stages[s]
                    .deps
                    .iter()
                    .filter(|d| needed.contains(d))
                    .count(),
            )
        })
        .collect();
    let ready: Vec<usize> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(s, _)| *s)
        .collect();
    let sched = Sched {
        done: std::sync::Mutex::new(BTreeMap::new()),
        waiting: std::sync::Mutex::new(waiting),
        failed: std::sync::Mutex::new(BTreeMap::new()),
        missed: std::sync::atomic::AtomicBool::new(false),
    };
    rayon::scope(|scope| {
        for s in ready {
            spawn_stage(scope, ctx, &sched, s);
        }
    });
    let failed = sched.failed.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some((_, e)) = failed.into_iter().next() {
        return Err(e);
    }
    if sched.missed.into_inner() {
        return Err(BuildError::DryRunMiss);
    }
    let done = sched.done.into_inner().unwrap_or_else(|p| p.into_inner());
    if done.len() != needed.len() {
        return Err(BuildError::Other(
            "the stage graph has a dependency that cannot be met".into(),
        ));
    }
    Ok(done)
}

fn spawn_stage<'s>(scope: &rayon::Scope<'s>, ctx: &'s Ctx<'s>, sched: &'s Sched, s: usize) {
    scope.spawn(move |scope| {
        if !sched
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            return;
        }
        // The stages this one reads (its base, --from sources) are all built: take a snapshot.
        let inputs: BTreeMap<usize, StageState> = {
            let done = sched.done.lock().unwrap_or_else(|p| p.into_inner());
            ctx.graph.stages[s]
                .deps
                .iter()
                .filter_map(|d| done.get(d).map(|st| (*d, st.clone())))
                .collect()
        };
        match run_stage(ctx, s, &inputs) {
            Err(BuildError::DryRunMiss) => {
                sched
                    .missed
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            Err(e) => {
                sched
                    .failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(s, e);
            }
            Ok(state) => {
                sched
                    .done
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(s, state);
                // Release every stage for which this was the last missing dependency.
                let mut now_ready = Vec::new();
                {
                    let mut waiting = sched.waiting.lock().unwrap_or_else(|p| p.into_inner());
                    for (&t, n) in waiting.iter_mut() {
                        if ctx.graph.stages[t].deps.contains(&s) && *n > 0 {
                            *n -= 1;
                            if *n == 0 {
                                now_ready.push(t);
                            }
                        }
                    }
                }
                for t in now_ready {
                    spawn_stage(scope, ctx, sched, t);
                }
            }
        }
    });
}

fn stage_label(graph: &BuildGraph, s: usize) -> String {
    graph.stages[s]
        .name
        .clone()
        .unwrap_or_else(|| format!("stage-{s}"))
}

/// The manifest `reference` names: from the store, pulled when it is missing (or, with
/// `--pull`, whenever it is named by tag), unless pulling is off.
fn resolve_image(ctx: &Ctx<'_>, reference: &str, span: Span) -> Result<Digest, BuildError> {
    let local = ctx.store.resolve(reference)?;
    let pinned = kiln_runtime::reference::parse(reference).is_ok_and(|r| r.digest.is_some());
    let wanted = local.is_none() || (ctx.opts.pull_always && !pinned);
    let Some(opts) = ctx
        .opts
        .registry
        .as_ref()
        .filter(|_| wanted && !ctx.opts.dry_run)
    else {
        return local.ok_or_else(|| {
            BuildError::at(
                span,
                format!(
                    "base image {reference:?} is not in kiln's store (pulling is off); load it \
                     with `kiln load -i <oci-layout-or-archive>`, pull it with `kiln pull`, or \
                     build it and tag it with `kiln build -t {reference}`"
                ),
            )
        });
    };
    (ctx.on_event)(Event::Pulling {
        reference: reference.to_string(),
    });
    let pulled = kiln_runtime::registry::pull(ctx.store, reference, opts, &|_| {})
        .map_err(|e| BuildError::at(span, format!("pulling {reference}: {e}")))?;
    Ok(pulled.manifest)
}

fn load_image(ctx: &Ctx<'_>, reference: &str, span: Span) -> Result<StageState, BuildError> {
    let manifest = resolve_image(ctx, reference, span)?;
    let (m, config, _) = ctx.store.image(&manifest)?;
    if !ctx.opts.dry_run {
        ctx.store.record_base(reference, &manifest)?;
    }
    let mut st = StageState::nothing();
    st.key = CacheKey::for_base(&manifest.to_string());
    let diff_ids: Vec<Digest> = config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d).map_err(|e| BuildError::Other(format!("{reference}: {e}"))))
        .collect::<Result<_, _>>()?;
    if diff_ids.len() != m.layers.len() {
        return Err(BuildError::Other(format!(
            "{reference}: the config lists {} layers, the manifest {}",
            diff_ids.len(),
            m.layers.len()
        )));
    }
    for (i, (desc, diff_id)) in m.layers.iter().zip(diff_ids).enumerate() {
        let blob = Digest::parse(&desc.digest).map_err(|e| BuildError::Other(e.to_string()))?;
        st.view_later(i, blob);
        st.layers.push(LayerRef {
            descriptor: desc.clone(),
            diff_id,
        });
    }
    st.base_created = config.created.clone();
    st.config = ImageConfig {
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: config.rootfs.diff_ids.clone(),
        },
        ..config
    };
    st.reindex_env();
    // Every stage has a PATH, as in BuildKit, also when its base image set none.
    if !st.env_index.contains_key("PATH") {
        st.set_env("PATH", kiln_runtime::sandbox::process::DEFAULT_PATH);
    }
    Ok(st)
}

fn run_stage(
    ctx: &Ctx<'_>,
    s: usize,
    done: &BTreeMap<usize, StageState>,
) -> Result<StageState, BuildError> {
    let stage = &ctx.graph.stages[s];
    let label = stage_label(ctx.graph, s);
    let total = stage.steps.len() + 1;
    let base_name = match &stage.base {
        Base::Context(n) => format!("context {n}"),
        Base::Scratch => "scratch".to_string(),
        Base::Stage(p) => stage_label(ctx.graph, *p),
        Base::Image(r) => r.clone(),
    };
    let from_name = format!("[{label} 1/{total}] FROM {base_name}");
    (ctx.on_event)(Event::Started {
        name: from_name.clone(),
    });
    let t0 = Instant::now();
    let mut st = match &stage.base {
        Base::Scratch => StageState::scratch(),
        Base::Stage(p) => {
            let mut p = done.get(p).cloned().ok_or_else(|| {
                BuildError::Other(format!("stage {p} was not built before {label}"))
            })?;
            // ARGs do not cross FROM: a stage sees its parent's ARGs only
            // when it redeclares them, like global ones.
            p.cmd_set = false;
            p
        }
        Base::Image(r) => load_image(ctx, r, stage.span)?,
        Base::Context(n) => match ctx.opts.build_contexts.get(n) {
            Some(NamedContext::Image(r)) => load_image(ctx, r, stage.span)?,
            Some(NamedContext::Dir(dir)) => {
                let mut st = StageState::scratch();
                st.line = stage.span.start.line();
                copy::dir_as_rootfs(ctx, &mut st, dir, n, stage.span)?;
                st
            }
            None => {
                return Err(BuildError::at(
                    stage.span,
                    format!("no build context named {n:?}"),
                ));
            }
        },
    };
    let digest = match &stage.base {
        Base::Image(r) => ctx.store.resolve(r).ok().flatten().map(|d| d.to_string()),
        _ => None,
    }
    .unwrap_or_else(|| st.key.to_string());
    let from = crate::cache::key::Step::new("FROM")
        .field("image", base_name.clone())
        .field("digest", digest);
    ctx.record(
        &from_name,
        None,
        &from,
        (&BTreeMap::new(), BTreeMap::new()),
        &st.key,
        true,
    )?;
    // A stage keeps its parent's ARG values available for redeclaration, not in scope.
    let inherited: BTreeMap<String, Option<String>> = std::mem::take(&mut st.args);
    (ctx.on_event)(Event::Done {
        name: from_name,
        millis: t0.elapsed().as_millis(),
    });

    // ONBUILD triggers of the base run right after FROM, then are cleared.
    let triggers = std::mem::take(&mut st.config.config.on_build);
    for t in &triggers {
        let df = kiln_parser::parse(t).map_err(|e| {
            BuildError::at(
                stage.span,
                format!("ONBUILD trigger {t:?} of the base image: {}", e.message),
            )
        })?;
        for ins in instruction::from_ast(&df).map_err(|e| {
            BuildError::at(
                stage.span,
                format!("ONBUILD trigger {t:?} of the base image: {}", e.message),
            )
        })? {
            let ins = Instruction {
                span: stage.span,
                ..ins
            };
            step(
                ctx,
                &mut st,
                &inherited,
                s,
                &ins,
                &format!("[{label} 1/{total}] ONBUILD {t}"),
                done,
            )?;
        }
    }
    let steps = stage.steps.clone();
    for (n, &i) in steps.iter().enumerate() {
        let ins = &ctx.instructions[i];
        let name = format!("[{label} {}/{total}] {}", n + 2, ctx.shown(&st, &ins.text));
        step(ctx, &mut st, &inherited, s, ins, &name, done)?;
    }
    ctx.resolve_times(&mut st)?;
    Ok(st)
}

impl Ctx<'_> {
    /// A filesystem step's key ([`CacheKey::for_step`] over `inputs`) and its cache entry
    /// (`None` with `--no-cache`), noted for `--explain-cache` with what `recorded` says went
    /// in; in a dry run, a miss ends the build here, before anything executes.
    fn lookup(
        &self,
        name: &str,
        parent: Option<&CacheKey>,
        step: &crate::cache::key::Step,
        inputs: &BTreeMap<String, Digest>,
        recorded: Recorded<'_>,
    ) -> Result<(CacheKey, Option<kiln_runtime::store::CacheEntry>), BuildError> {
        let key = CacheKey::for_step(parent, step, inputs);
        let cached = if self.opts.no_cache {
            None
        } else {
            self.store.cache_get(&key.to_string())?
        };
        let (inputs, sources) = match recorded {
            Recorded::KeyInputs => (inputs, BTreeMap::new()),
            Recorded::Files(files, sources) => (files, sources),
            Recorded::Skipped => (&BTreeMap::new(), BTreeMap::new()),
        };
        self.record(
            name,
            parent,
            step,
            (inputs, sources),
            &key,
            cached.is_some(),
        )?;
        Ok((key, cached))
    }

    /// The layer the last build of this Dockerfile and target made at step `name` (which this
    /// build missed), if it is still cached: its unpacked files are the likeliest to be the
    /// same as this build's.
    fn previous_layer(&self, name: &str) -> Option<Digest> {
        let previous = self.previous.get_or_init(|| {
            self.store
                .build_record(&build_identity(self.opts))
                .ok()
                .flatten()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default()
        });
        let (stage, index) = crate::cache::explain::position(name);
        let r = previous
            .iter()
            .find(|r| r.stage == stage && r.index == index)?;
        Some(self.store.cache_get(&r.key).ok()??.layer)
    }

    /// Whether a step keyed `key` needs its inputs per file worked out for its record even on a
    /// hit: to explain this build, or because the store has no record of the key yet.
    fn needs_record(&self, key: &CacheKey) -> Result<bool, BuildError> {
        Ok(self.opts.explain_cache
            || self.opts.dry_run
            || !self
                .store
                .keys_without_record(&[key.to_string().as_str()])?
                .is_empty())
    }

    /// What `kiln cache ls` says made an entry: the step and where it is written,
    /// `[build 3/7] RUN make (Dockerfile:12)`.
    fn description(&self, name: &str, st: &StageState) -> String {
        let file = self
            .opts
            .dockerfile_path
            .as_deref()
            .and_then(|p| p.file_name())
            .map_or_else(|| "Dockerfile".into(), |f| f.to_string_lossy());
        format!("{name} ({file}:{})", st.line)
    }

    /// Notes what went into a keyed step (FROM's base included, as a hit).
    fn record(
        &self,
        name: &str,
        parent: Option<&CacheKey>,
        step: &crate::cache::key::Step,
        (inputs, sources): (&BTreeMap<String, Digest>, BTreeMap<String, String>),
        key: &CacheKey,
        hit: bool,
    ) -> Result<(), BuildError> {
        let (stage, index) = crate::cache::explain::position(name);
        let r = crate::cache::explain::Record {
            stage,
            index,
            name: name.to_string(),
            kind: step.kind.clone(),
            parent: parent.map(ToString::to_string),
            fields: step.fields.clone(),
            inputs: inputs
                .iter()
                .map(|(p, d)| (p.clone(), d.to_string()))
                .collect(),
            sources,
            key: key.to_string(),
            hit,
        };
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(r);
        if !hit && self.opts.dry_run {
            return Err(BuildError::DryRunMiss);
        }
        Ok(())
    }

    /// The main build context (read once, on first use).
    fn snapshot(&self) -> Result<&Snapshot, BuildError> {
        self.snapshot
            .get_or_init(|| {
                let m = crate::context::snapshot::load_ignore(
                    &self.opts.context,
                    self.opts.dockerfile_path.as_deref(),
                )
                .map_err(|e| e.to_string())?;
                crate::context::snapshot::scan(&self.opts.context, &m, Some(self.store))
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| BuildError::Other(e.clone()))
    }

    /// An instruction as the progress shows it: whole, its variables expanded with the
    /// stage's ARG and ENV values, as BuildKit names a step (`processCmdEnv`): quotes and
    /// unset variables stay as written, escapes are processed. Its own text if that fails.
    fn shown(&self, st: &StageState, text: &str) -> String {
        let lex = Lexer {
            raw_quotes: true,
            skip_unset: true,
            ..self.lex
        };
        // Continuation lines as one, as BuildKit prints them.
        let one_line: String = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        lex.expand_str(&one_line, st.vars()).unwrap_or(one_line)
    }

    fn expand(&self, st: &StageState, word: &str, span: Span) -> Result<String, BuildError> {
        self.lex
            .expand_str(word, st.vars())
            .map_err(|e| BuildError::at(span, format!("failed to process {:?}: {e}", short(word))))
    }

    /// The time a metadata step is recorded at: that of the last filesystem change, else the
    /// base image's, else now (or `SOURCE_DATE_EPOCH`).
    fn created(&self, st: &StageState) -> String {
        if let Some(e) = self.opts.source_date_epoch {
            return fsutil::rfc3339(e);
        }
        st.time
            .map(fsutil::rfc3339)
            .or_else(|| st.base_created.clone())
            .unwrap_or_else(|| fsutil::rfc3339(self.now))
    }

    /// Gives the metadata entries of `st`'s history their times: when each step, after what
    /// came before it, first ran in this store (so a rebuild repeats them, and the digest with
    /// them), asked of the store in one transaction.
    fn resolve_times(&self, st: &mut StageState) -> Result<(), BuildError> {
        let pending = std::mem::take(&mut st.pending_times);
        if pending.is_empty() {
            return Ok(());
        }
        let times = if self.opts.dry_run {
            vec![self.now; pending.len()]
        } else {
            let keys: Vec<String> = pending.iter().map(|(_, k)| k.clone()).collect();
            self.store.step_times(&keys, self.now)?
        };
        for ((i, _), t) in pending.iter().zip(times) {
            if let Some(h) = st.config.history.get_mut(*i) {
                h.created = Some(fsutil::rfc3339(t));
            }
        }
        Ok(())
    }

    fn history(&self, st: &mut StageState, created_by: String, empty_layer: bool) {
        // `SOURCE_DATE_EPOCH` is every step's time; else the time is looked up with the
        // stage's others when it ends ([`Ctx::resolve_times`]).
        let created = match self.opts.source_date_epoch {
            Some(e) => Some(fsutil::rfc3339(e)),
            None => {
                let key = format!("{}\n{}\n{created_by}", st.key, st.config.history.len());
                let key = Digest::of(key.as_bytes()).to_string();
                st.pending_times.push((st.config.history.len(), key));
                None
            }
        };
        st.config.history.push(History {
            created,
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer,
        });
    }
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

/// Runs one instruction of a stage, telling the progress when it starts, ends, or fails.
fn step(
    ctx: &Ctx<'_>,
    st: &mut StageState,
    inherited: &BTreeMap<String, Option<String>>,
    stage: usize,
    ins: &Instruction,
    name: &str,
    done: &BTreeMap<usize, StageState>,
) -> Result<(), BuildError> {
    let result = step_body(ctx, st, inherited, stage, ins, name, done);
    if let Err(e) = &result {
        let message = e.to_string();
        (ctx.on_event)(Event::Failed {
            name: name.to_string(),
            // The reason's first line; the output's tail follows with the located error.
            message: message.lines().next().unwrap_or_default().to_string(),
        });
    }
    result
}

fn step_body(
    ctx: &Ctx<'_>,
    st: &mut StageState,
    inherited: &BTreeMap<String, Option<String>>,
    stage: usize,
    ins: &Instruction,
    name: &str,
    done: &BTreeMap<usize, StageState>,
) -> Result<(), BuildError> {
    let t0 = Instant::now();
    (ctx.on_event)(Event::Started {
        name: name.to_string(),
    });
    let span = ins.span;
    st.line = span.start.line();
    let mut cached = false;
    match &ins.kind {
        Kind::From(_) => {}
        Kind::Arg(decls) => {
            for d in decls {
                let value = match ctx.opts.build_args.get(&d.name) {
                    Some(v) => Some(v.clone()),
                    None => match &d.default {
                        Some(def) => Some(ctx.expand(st, def, span)?),
                        // `ARG NAME` imports a global ARG's (or the parent stage's) value.
                        None => match inherited.get(&d.name) {
                            Some(v) => v.clone(),
                            None => ctx
                                .graph
                                .global_args
                                .iter()
                                .rev()
                                .find(|(k, _)| *k == d.name)
                                .and_then(|(_, v)| v.clone()),
                        },
                    },
                };
                st.args.insert(d.name.clone(), value.clone());
                st.arg_order.push(d.name.clone());
                if let Some(v) = value {
                    st.state_env.insert(d.name.clone(), v);
                }
            }
            ctx.history(st, format!("ARG {}", args_of(&ins.text)), true);
        }
        Kind::Env(pairs) | Kind::Label(pairs) => {
            // Every substitution in one instruction sees the values from before it.
            // All expanded first, then applied.
            let mut done_pairs = Vec::new();
            for (k, v) in pairs {
                let key = ctx.expand(st, k, span)?;
                let value = ctx.expand(st, v, span)?;
                done_pairs.push((key, value));
            }
            let is_env = matches!(ins.kind, Kind::Env(_));
            for (k, v) in &done_pairs {
                if is_env {
                    st.set_env(k, v);
                } else {
                    st.config.config.labels.insert(k.clone(), v.clone());
                }
            }
            let text: Vec<String> = done_pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            ctx.history(
                st,
                format!(
                    "{} {}",
                    if is_env { "ENV" } else { "LABEL" },
                    text.join(" ")
                ),
                true,
            );
        }
        Kind::Expose(ports) => {
            let mut listed = Vec::new();
            for p in ports {
                let p = ctx.expand(st, p, span)?;
                let (range, proto) = match p.split_once('/') {
                    Some((r, pr)) => (r.to_string(), pr.to_ascii_lowercase()),
                    None => (p.clone(), "tcp".to_string()),
                };
                let range = range.rsplit(':').next().unwrap_or(&range).to_string();
                let (lo, hi) = match range.split_once('-') {
                    Some((a, b)) => (a.parse::<u16>(), b.parse::<u16>()),
                    None => (range.parse::<u16>(), range.parse::<u16>()),
                };
                let (Ok(lo), Ok(hi)) = (lo, hi) else {
                    return Err(BuildError::at(span, format!("invalid port {p:?}")));
                };
                for port in lo..=hi {
                    listed.push(format!("{port}/{proto}"));
                    st.config
                        .config
                        .exposed_ports
                        .insert(format!("{port}/{proto}"), oci::Empty {});
                }
            }
            // BuildKit's `EXPOSE %v` of the parsed ports, in order, ranges expanded.
            ctx.history(st, format!("EXPOSE {}", gofmt::plain_list(&listed)), true);
        }
        Kind::Volume(v) => {
            let mut listed = Vec::new();
            for p in v {
                let p = ctx.expand(st, p, span)?;
                listed.push(p.clone());
                st.config.config.volumes.insert(p, oci::Empty {});
            }
            ctx.history(st, format!("VOLUME {}", gofmt::plain_list(&listed)), true);
        }
        Kind::User(u) => {
            st.config.config.user = ctx.expand(st, u, span)?;
            ctx.history(st, format!("USER {}", st.config.config.user.clone()), true);
        }
        Kind::Workdir(w) => {
            let w = ctx.expand(st, w, span)?;
            let abs = fsutil::absolute(&st.workdir(), &w);
            st.config.config.working_dir = abs.clone();
            cached = copy::mkdir_workdir(ctx, st, &abs, name, span)?;
        }
        Kind::StopSignal(s) => {
            st.config.config.stop_signal = ctx.expand(st, s, span)?;
            ctx.history(
                st,
                format!("STOPSIGNAL {}", st.config.config.stop_signal.clone()),
                true,
            );
        }
        Kind::Shell(v) => {
            st.config.config.shell = v.clone();
            ctx.history(st, format!("SHELL {}", gofmt::plain_list(v)), true);
        }
        Kind::Cmd(c) => {
            st.config.config.cmd = Some(shell_wrap(st, c));
            st.config.config.args_escaped = true;
            st.cmd_set = true;
            ctx.history(
                st,
                format!(
                    "CMD {}",
                    gofmt::quoted_list(&st.config.config.cmd.clone().unwrap_or_default())
                ),
                true,
            );
        }
        Kind::Entrypoint(c) => {
            st.config.config.entrypoint = Some(shell_wrap(st, c));
            // ENTRYPOINT resets a CMD inherited from the base.
            if !st.cmd_set {
                st.config.config.cmd = None;
            }
            ctx.history(
                st,
                format!(
                    "ENTRYPOINT {}",
                    gofmt::quoted_list(&st.config.config.entrypoint.clone().unwrap_or_default())
                ),
                true,
            );
        }
        Kind::Healthcheck(h) => {
            st.config.config.healthcheck = Some(match h.as_ref() {
                Health::None => oci::Healthcheck {
                    test: vec!["NONE".into()],
                    ..Default::default()
                },
                Health::Check {
                    test,
                    interval_ns,
                    timeout_ns,
                    start_period_ns,
                    start_interval_ns,
                    retries,
                } => oci::Healthcheck {
                    test: test.clone(),
                    interval: interval_ns.map(|v| v as i64),
                    timeout: timeout_ns.map(|v| v as i64),
                    start_period: start_period_ns.map(|v| v as i64),
                    start_interval: start_interval_ns.map(|v| v as i64),
                    retries: *retries,
                },
            });
            // BuildKit's `HEALTHCHECK %+v` of the config it set.
            let hc = st.config.config.healthcheck.clone().unwrap_or_default();
            let d = |v: Option<i64>| gofmt::duration(v.unwrap_or(0));
            let text = format!(
                "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
                gofmt::plain_list(&hc.test),
                d(hc.interval),
                d(hc.timeout),
                d(hc.start_period),
                d(hc.start_interval),
                hc.retries.unwrap_or(0)
            );
            ctx.history(st, text, true);
        }
        Kind::OnBuild { expression, .. } => {
            // Recorded in the config only: BuildKit writes no history line for ONBUILD.
            st.config.config.on_build.push(expression.clone());
        }
        Kind::Maintainer(m) => {
            st.config.author = Some(m.clone());
            ctx.history(st, format!("MAINTAINER {m}"), true);
        }
        Kind::Copy(c) => {
            cached = copy::copy(ctx, st, stage, ins, c, name, done)?;
        }
        Kind::Run(r) => {
            let label = stage_label(ctx.graph, stage);
            cached = run::run(ctx, st, (stage, &label), ins, r, name, done)?;
        }
    }
    (ctx.on_event)(if cached {
        Event::Cached {
            name: name.to_string(),
        }
    } else {
        Event::Done {
            name: name.to_string(),
            millis: t0.elapsed().as_millis(),
        }
    });
    Ok(())
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
    })
}
