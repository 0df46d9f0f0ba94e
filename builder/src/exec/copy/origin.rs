//! Where a COPY/ADD takes its sources from: the build context, another stage or image read
//! out of its layers, or a named context (`--from`), and the source kinds that may not mix.

use std::collections::{BTreeMap, BTreeSet};

use bstr::BString;

use kiln_parser::{instruction::Copy, instruction::Instruction, span::Span};

use super::{
    Item, Planned, file_inputs,
    layer::commit_layer,
    sources::{
        SrcEntry, SrcKind, context_entries, context_entries_for, extract_stage_files, stage_entries,
    },
};
use crate::{
    cache::key::Step,
    exec::{BuildError, Ctx, StageState},
    image::layer::EntryMeta,
};

/// What a `--from` / `from=` names, as the graph resolved it.
pub(crate) enum From {
    /// A stage of this build, or an image.
    State(Box<StageState>),
    /// A named directory context.
    Dir(crate::context::snapshot::Snapshot),
}

/// Resolves the `nth` `--from`/`from=` of instruction `ins` (of stage `stage`), named `f`.
pub(crate) fn from_source(
    ctx: &Ctx<'_>,
    stage: usize,
    ins: &Instruction,
    nth: usize,
    f: &str,
    done: &BTreeMap<usize, StageState>,
    what: &str,
) -> Result<From, BuildError> {
    let span = ins.span;
    let this_step = ctx.graph.stages[stage]
        .steps
        .iter()
        .copied()
        .find(|&i| ctx.instructions[i].span == span);
    let src = this_step
        .and_then(|i| ctx.graph.stages[stage].sources.get(&i))
        .and_then(|v| v.get(nth).cloned());
    Ok(match src {
        Some(crate::graph::Source::Stage(s)) => {
            From::State(Box::new(done.get(&s).cloned().ok_or_else(|| {
                BuildError::at(span, format!("{what}={f}: stage {s} was not built"))
            })?))
        }
        Some(crate::graph::Source::Context(n)) => match ctx.opts.build_contexts.get(&n) {
            Some(crate::exec::NamedContext::Dir(dir)) => From::Dir(snapshot_dir(ctx, dir)?),
            Some(crate::exec::NamedContext::Image(r)) => From::State(Box::new(
                crate::exec::load_image(ctx, r, span, &ctx.stage_platform(stage)?)?,
            )),
            None => {
                return Err(BuildError::at(
                    span,
                    format!("no build context named {n:?}"),
                ));
            }
        },
        _ => From::State(Box::new(crate::exec::load_image(
            ctx,
            f,
            span,
            &ctx.stage_platform(stage)?,
        )?)),
    })
}

/// A named directory context, read like the main one (its own `.dockerignore` applies).
pub(super) fn snapshot_dir(
    ctx: &Ctx<'_>,
    dir: &std::path::Path,
) -> Result<crate::context::snapshot::Snapshot, BuildError> {
    let m = crate::context::snapshot::load_ignore(dir, None)?;
    Ok(crate::context::snapshot::scan(dir, &m, Some(ctx.store))?)
}

/// `FROM <named directory context>`: a stage whose filesystem is the directory's files.
pub(crate) fn dir_as_rootfs(
    ctx: &Ctx<'_>,
    st: &mut StageState,
    dir: &std::path::Path,
    name: &str,
    span: Span,
) -> Result<(), BuildError> {
    let snap = snapshot_dir(ctx, dir)?;
    let mut planned = BTreeMap::new();
    for e in context_entries(&snap) {
        let item = match &e.kind {
            SrcKind::Dir => Item::Dir,
            SrcKind::File { size, host, .. } => Item::File {
                host: host.clone(),
                size: *size,
            },
            SrcKind::Symlink(t) => Item::Symlink(t.clone()),
            SrcKind::StageFile { .. } => continue,
        };
        planned.insert(
            e.path.clone(),
            Planned {
                item,
                meta: EntryMeta {
                    mode: e.mode,
                    uid: 0,
                    gid: 0,
                    mtime: e.mtime,
                    ..Default::default()
                },
                fingerprint: e.fingerprint.clone(),
            },
        );
    }
    if planned.is_empty() {
        return Err(BuildError::at(
            span,
            format!("build context {name:?} ({}) is empty", dir.display()),
        ));
    }
    commit_layer(
        ctx,
        st,
        Step::new("CONTEXT"),
        (file_inputs(&planned), None),
        planned,
        (0, 0),
        &format!("FROM context {name}"),
        &format!("FROM {name} (build context {})", dir.display()),
        false,
    )?;
    Ok(())
}

/// The files a copy takes from another stage, read out of its layers into `tmpdir`.
pub(super) fn fetch_stage_files(
    ctx: &Ctx<'_>,
    src: &StageState,
    chosen: &BTreeMap<BString, &SrcEntry>,
    tmpdir: &std::path::Path,
) -> Result<BTreeMap<BString, std::path::PathBuf>, BuildError> {
    let wanted: BTreeSet<BString> = chosen
        .values()
        .filter(|e| matches!(e.kind, SrcKind::StageFile { .. }))
        .map(|e| e.path.clone())
        .collect();
    std::fs::create_dir_all(tmpdir)
        .map_err(|e| BuildError::Other(format!("{}: {e}", tmpdir.display())))?;
    extract_stage_files(ctx, src, &wanted, tmpdir)
}

/// Where the sources of a COPY/ADD come from.
pub(super) struct Origin<'s> {
    /// Another stage or image (`--from`), whose files are read from its layers.
    pub(super) state: Option<StageState>,
    /// The build context or a named directory context.
    pub(super) snapshot: Option<std::borrow::Cow<'s, crate::context::snapshot::Snapshot>>,
    /// Another stage's or image's entries, sorted by path.
    pub(super) stage: Vec<SrcEntry>,
    /// What the cache key names as the origin.
    pub(super) key: String,
    /// For messages: `the build context`, `the source stage`.
    pub(super) place: &'static str,
}

impl Origin<'_> {
    /// Every path a source may name, sorted.
    pub(super) fn paths(&self) -> Vec<&[u8]> {
        match &self.snapshot {
            Some(snap) => snap.entries.iter().map(|e| e.path.as_slice()).collect(),
            None => self.stage.iter().map(|e| e.path.as_slice()).collect(),
        }
    }

    /// The target of the symlink at `path`, if it is one.
    pub(super) fn link_of(&self, path: &[u8]) -> Option<&[u8]> {
        match &self.snapshot {
            Some(snap) => match &snap.find(path)?.kind {
                crate::context::snapshot::EntryKind::Symlink { target } => Some(target),
                _ => None,
            },
            None => {
                let i = self
                    .stage
                    .binary_search_by(|e| e.path.as_slice().cmp(path))
                    .ok()?;
                match &self.stage[i].kind {
                    SrcKind::Symlink(target) => Some(target),
                    _ => None,
                }
            }
        }
    }

    /// The entries a copy of `picks` reads, sorted by path.
    pub(super) fn entries_for(&mut self, picks: &[(BString, Option<BString>)]) -> Vec<SrcEntry> {
        match &self.snapshot {
            Some(snap) => context_entries_for(snap, picks),
            None => std::mem::take(&mut self.stage),
        }
    }
}

/// The origin of a COPY/ADD: the context, another stage or image, or a named context
/// (`--from`), as the graph resolved it. No source from the context: the context is not read.
pub(super) fn origin<'s>(
    ctx: &'s Ctx<'_>,
    (stage, ins, done): (usize, &Instruction, &BTreeMap<usize, StageState>),
    c: &Copy,
    no_sources: bool,
) -> Result<Origin<'s>, BuildError> {
    use std::borrow::Cow;
    let cmd = if c.is_add { "ADD" } else { "COPY" };
    let (mut state, mut named_dir) = (None, None);
    if let Some(f) = &c.from {
        match from_source(ctx, stage, ins, 0, f, done, &format!("{cmd} --from"))? {
            From::State(mut s) => {
                s.sync_view(ctx.store)?;
                state = Some(*s);
            }
            From::Dir(d) => named_dir = Some(d),
        }
    }
    let (snapshot, mut stage_files, key) = match (&state, named_dir) {
        (Some(src), _) => (None, stage_entries(src)?, src.key.to_string()),
        (None, Some(snap)) => {
            let key = format!("named context {}", snap.root.display());
            (Some(Cow::Owned(snap)), Vec::new(), key)
        }
        (None, None) if no_sources => (None, Vec::new(), "context".to_string()),
        (None, None) => (
            Some(Cow::Borrowed(ctx.snapshot()?)),
            Vec::new(),
            "context".to_string(),
        ),
    };
    // Sorted by path, as lookups by binary search need (a layer view iterates in this order).
    if !stage_files.is_sorted_by(|a, b| a.path <= b.path) {
        stage_files.sort_by(|a, b| a.path.cmp(&b.path));
    }
    let place = if c.from.is_some() {
        "the source stage"
    } else {
        "the build context"
    };
    Ok(Origin {
        state,
        snapshot,
        stage: stage_files,
        key,
        place,
    })
}

/// The source kinds a COPY/ADD may not combine: git repositories, `--checksum` on COPY or on
/// anything but one URL.
pub(super) fn check_sources(
    c: &Copy,
    urls: &[String],
    sources: &[String],
    span: Span,
) -> Result<(), BuildError> {
    let is_git = |s: &str| s.starts_with("git@") || s.ends_with(".git") || s.contains(".git#");
    if c.is_add && c.sources.iter().any(|s| is_git(s)) {
        return Err(BuildError::at(
            span,
            "ADD of a git repository is not supported",
        ));
    }
    if !c.is_add && c.checksum.is_some() {
        return Err(BuildError::at(span, "--checksum is only for ADD"));
    }
    if c.checksum.is_some() && (urls.len() != 1 || !sources.is_empty()) {
        return Err(BuildError::at(
            span,
            "ADD --checksum needs a single http(s) source",
        ));
    }
    Ok(())
}
