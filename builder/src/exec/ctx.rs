//! The build's shared context ([`Ctx`]) and what the steps ask of it: cache lookups and
//! records, the build context's snapshot, word expansion, history and step times.

use std::collections::BTreeMap;

use kiln_parser::{instruction::Instruction, shell::Lexer, span::Span};
use kiln_runtime::{digest::Digest, store::Store};

use super::{
    BuildError, BuildOptions, Event, Recorded, StageState, StepRunner, build_identity, fsutil,
    metadata,
};
use crate::{cache::key::CacheKey, context::snapshot::Snapshot, graph::BuildGraph};

/// What every step of a build shares: the store, the options, the graph, the build context
/// (read once), the progress sink and the cache's records.
pub(super) struct Ctx<'a> {
    pub(super) store: &'a Store,
    pub(super) opts: &'a BuildOptions,
    pub(super) lex: Lexer,
    /// The build context, read on first use (a COPY, or an ONBUILD trigger of a base image) and
    /// then shared read-only by every stage; the error is kept as text to be reported by each.
    pub(super) snapshot: &'a super::SharedSnapshot,
    /// The platform being built (`TARGETPLATFORM`); a stage's own is
    /// [`Ctx::stage_platform`].
    pub(super) platform: kiln_runtime::oci::Platform,
    pub(super) graph: &'a BuildGraph,
    pub(super) instructions: &'a [Instruction],
    pub(super) on_event: &'a (dyn Fn(Event) + Sync),
    pub(super) runner: &'a dyn StepRunner,
    pub(super) now: i64,
    /// A limit the kernel refused was reported (once per build).
    pub(super) limits_warned: std::sync::atomic::AtomicBool,
    /// What went into each keyed step (for `--explain-cache` and the next build's).
    pub(super) records: std::sync::Mutex<Vec<crate::cache::explain::Record>>,
    /// The ids of the cache mounts the build's RUN steps used: a cache export may carry them.
    pub(super) cache_mounts: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// The metadata steps' times as they were resolved (key, time): a cache export carries them.
    pub(super) times: std::sync::Mutex<Vec<(String, i64)>>,
    /// The last build of this Dockerfile and target: each step's key (read on first use).
    pub(super) previous: std::sync::OnceLock<Vec<crate::cache::explain::Record>>,
}

impl Ctx<'_> {
    /// A filesystem step's key ([`CacheKey::for_step`] over `inputs`) and its cache entry
    /// (`None` with `--no-cache`), noted for `--explain-cache` with what `recorded` says went
    /// in; in a dry run, a miss ends the build here, before anything executes.
    pub(super) fn lookup(
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
            (
                cached.is_some(),
                cached.as_ref().and_then(|e| e.origin.clone()),
            ),
        )?;
        Ok((key, cached))
    }

    /// The layer the last build of this Dockerfile and target made at step `name` (which this
    /// build missed), if it is still cached: its unpacked files are the likeliest to be the
    /// same as this build's.
    pub(super) fn previous_layer(&self, name: &str) -> Option<Digest> {
        let previous = self.previous.get_or_init(|| {
            self.store
                .build_record(&build_identity(self.opts, &self.platform))
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
    pub(super) fn needs_record(&self, key: &CacheKey) -> Result<bool, BuildError> {
        Ok(self.opts.explain_cache
            || self.opts.dry_run
            || !self
                .store
                .keys_without_record(&[key.to_string().as_str()])?
                .is_empty())
    }

    /// What `kiln cache ls` says made an entry: the step and where it is written,
    /// `[build 3/7] RUN make (Dockerfile:12)`.
    pub(super) fn description(&self, name: &str, st: &StageState) -> String {
        let file = self
            .opts
            .dockerfile_path
            .as_deref()
            .and_then(|p| p.file_name())
            .map_or_else(|| "Dockerfile".into(), |f| f.to_string_lossy());
        format!("{name} ({file}:{})", st.line)
    }

    /// Notes what went into a keyed step (FROM's base included, as a hit).
    pub(super) fn record(
        &self,
        name: &str,
        parent: Option<&CacheKey>,
        step: &crate::cache::key::Step,
        (inputs, sources): (&BTreeMap<String, Digest>, BTreeMap<String, String>),
        key: &CacheKey,
        (hit, from): (bool, Option<String>),
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
            from,
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
    /// The platform stage `s` runs on: its `FROM --platform` (expanded), else the target's.
    pub(super) fn stage_platform(
        &self,
        s: usize,
    ) -> Result<kiln_runtime::oci::Platform, BuildError> {
        let stage = &self.graph.stages[s];
        match stage.platform.as_deref() {
            Some(p) => kiln_runtime::oci::Platform::parse(p)
                .map_err(|e| BuildError::at(stage.span, format!("FROM --platform: {e}"))),
            None => Ok(self.platform.clone()),
        }
    }

    pub(super) fn snapshot(&self) -> Result<&Snapshot, BuildError> {
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
    pub(super) fn shown(&self, st: &StageState, text: &str) -> String {
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

    /// What the metadata instructions need of the build ([`metadata::Meta`]).
    pub(super) fn meta(&self) -> metadata::Meta<'_> {
        metadata::Meta {
            lex: &self.lex,
            source_date_epoch: self.opts.source_date_epoch,
        }
    }

    pub(super) fn expand(
        &self,
        st: &StageState,
        word: &str,
        span: Span,
    ) -> Result<String, BuildError> {
        self.meta().expand(st, word, span)
    }

    /// The time a metadata step is recorded at: that of the last filesystem change, else the
    /// base image's, else now (or `SOURCE_DATE_EPOCH`).
    pub(super) fn created(&self, st: &StageState) -> String {
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
    pub(super) fn resolve_times(&self, st: &mut StageState) -> Result<(), BuildError> {
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
        let mut kept = self.times.lock().unwrap_or_else(|p| p.into_inner());
        for ((i, key), t) in pending.iter().zip(times) {
            if let Some(h) = st.config.history.get_mut(*i) {
                h.created = Some(fsutil::rfc3339(t));
            }
            kept.push((key.clone(), t));
        }
        Ok(())
    }

    pub(super) fn history(&self, st: &mut StageState, created_by: String, empty_layer: bool) {
        self.meta().history(st, created_by, empty_layer);
    }
}
