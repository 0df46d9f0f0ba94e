//! COPY/ADD from the build context, and WORKDIR's directory: steps that write a layer.
//!
//! Semantics: sources are relative to the context root and cannot leave it;
//! wildcards use Go `filepath.Match`; a directory source copies its contents; a single file goes
//! to `dest` exactly unless `dest` ends in `/` or is an existing directory; several sources need a
//! directory destination; missing parents are created (0755, owned by `--chown`); ownership is
//! 0:0 unless `--chown` (names resolved in the image's own `/etc/passwd` and `/etc/group`);
//! modes are kept unless `--chmod`. Destination paths are resolved inside the rootfs, so a
//! symlink in the image can never send a file outside it.

mod archive;
mod checksum;
mod layer;
mod owner;
mod remote;
mod sources;

use std::collections::{BTreeMap, BTreeSet};

use bstr::{BString, ByteSlice};

use archive::{Archive, plan_archive, sniff_archive};
pub(crate) use layer::adopt_layer;
use layer::commit_layer;
pub(crate) use owner::{image_file, resolve_chown};
pub(crate) use sources::{SrcEntry, SrcKind, context_entries};
use sources::{
    context_entries_for, context_link, entries_below, entry_at, extract_stage_files, follow_source,
    stage_entries,
};

use kiln_parser::{instruction::Copy, instruction::Instruction, span::Span};
use kiln_runtime::{
    digest::Digest,
    layer::view::{Node, NodeKind, as_path, open_layer, read_file},
    oci,
    store::CacheEntry,
};

use super::{BuildError, Ctx, LayerRef, Recorded, StageState, fsutil};
use crate::{
    cache::key::{CacheKey, Step},
    context::{ignore::has_wildcard, snapshot::EntryKind},
    image::layer::{EntryMeta, LayerWriter},
};

/// What goes into the new layer at one path.
#[derive(Debug, Clone)]
enum Item {
    Dir,
    /// A file from the context (absolute host path) of `size` bytes.
    File {
        host: std::path::PathBuf,
        size: u64,
    },
    /// Inline content (heredoc source).
    Inline(Vec<u8>),
    Symlink(BString),
    /// Another name of the file at this layer path (from an archive).
    Hardlink(BString),
    /// A fifo or device node (from an archive).
    Special(kiln_runtime::layer::diff::Special),
}

#[derive(Debug, Clone)]
struct Planned {
    item: Item,
    meta: EntryMeta,
    /// What the cache key sees of this entry (kind, mode, owner, content digest).
    fingerprint: String,
}

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
            Some(super::NamedContext::Dir(dir)) => From::Dir(snapshot_dir(ctx, dir)?),
            Some(super::NamedContext::Image(r)) => {
                From::State(Box::new(super::load_image(ctx, r, span)?))
            }
            None => {
                return Err(BuildError::at(
                    span,
                    format!("no build context named {n:?}"),
                ));
            }
        },
        _ => From::State(Box::new(super::load_image(ctx, f, span)?)),
    })
}

/// A named directory context, read like the main one (its own `.dockerignore` applies).
fn snapshot_dir(
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

/// A context source path: relative, cleaned, unable to climb out (`/a`, `../a` → `a`): `..`
/// stops at the root. Bytes: a link target that is not UTF-8 is followed as it is.
pub(crate) fn context_path(src: impl AsRef<[u8]>) -> BString {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in src.as_ref().split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    bstr::join("/", parts).into()
}

fn join(dir: &[u8], name: &[u8]) -> BString {
    match (dir.is_empty(), name.is_empty()) {
        (true, _) => name.into(),
        (_, true) => dir.into(),
        _ => [dir, b"/", name].concat().into(),
    }
}

/// How the entries of one COPY are written: where, as whom, with which mode.
#[derive(Clone, Copy)]
struct Planning<'a> {
    dest_rel: &'a [u8],
    /// The step's scratch directory (archives are extracted there).
    tmpdir: &'a std::path::Path,
    chown: Option<(u32, u32)>,
    /// The owner when neither `--chown` nor the source gives one.
    owner: (u32, u32),
    chmod: Option<&'a str>,
    cmd: &'a str,
    span: Span,
}

/// The layer entries for the chosen sources: files, directories, links (hard links to a file
/// this copy writes), and for ADD the contents of local archives.
fn plan_entries(
    c: &Copy,
    (chosen, order): (&BTreeMap<BString, &SrcEntry>, &BTreeMap<BString, usize>),
    hard_links: &BTreeMap<BString, BString>,
    fetched: &BTreeMap<BString, std::path::PathBuf>,
    p: &Planning<'_>,
) -> Result<BTreeMap<BString, Planned>, BuildError> {
    let Planning {
        dest_rel,
        tmpdir,
        chown,
        owner: (uid, gid),
        chmod,
        cmd,
        span,
    } = *p;
    let mode_of = |mode: u32, is_dir: bool| -> Result<u32, BuildError> {
        match chmod {
            None => Ok(mode),
            Some(spec) => fsutil::apply_chmod(spec, mode, is_dir)
                .ok_or_else(|| BuildError::at(span, format!("invalid chmod parameter {spec:?}"))),
        }
    };
    let mut planned: BTreeMap<BString, Planned> = BTreeMap::new();
    let mut extracted = 0usize;
    // Context files' extended attributes, as the snapshot read (or remembered) them.
    let host_xattrs: BTreeMap<&[u8], BTreeMap<String, Vec<u8>>> = chosen
        .iter()
        .filter_map(|(t, e)| match &e.kind {
            SrcKind::File { xattrs, .. } if !xattrs.is_empty() => {
                Some((t.as_slice(), xattrs.iter().cloned().collect()))
            }
            _ => None,
        })
        .collect();
    // In the order the sources were named (then by path): ADD unpacks several archives into
    // one destination one after the other, a later one's entries over an earlier one's.
    let mut listed: Vec<(&BString, &&SrcEntry)> = chosen.iter().collect();
    listed.sort_by_key(|(t, _)| (order.get(*t).copied().unwrap_or(usize::MAX), (*t).clone()));
    for (target, e) in listed {
        // ADD extracts local archives into the destination directory (unless --unpack=false).
        let remote = e.fingerprint.starts_with("url ");
        let unpack = if remote {
            c.unpack == Some(true)
        } else {
            c.unpack != Some(false)
        };
        if let (true, SrcKind::File { host, .. }) = (c.is_add && unpack, &e.kind) {
            match sniff_archive(host) {
                Archive::None => {}
                kind => {
                    std::fs::create_dir_all(tmpdir)
                        .map_err(|err| BuildError::Other(format!("{}: {err}", tmpdir.display())))?;
                    // An archive always unpacks into the destination as a directory; an xz file
                    // that turns out not to hold a tar is copied as it is.
                    if plan_archive(
                        host,
                        kind,
                        dest_rel,
                        tmpdir,
                        chown,
                        &mut planned,
                        &e.fingerprint,
                        &mut extracted,
                    )
                    .map_err(|err| match err {
                        BuildError::Other(m) => BuildError::at(span, format!("{cmd}: {m}")),
                        err => err,
                    })? {
                        continue;
                    }
                }
            }
        }
        let (item, mode) = match &e.kind {
            SrcKind::Dir => (Item::Dir, mode_of(e.mode, true)?),
            SrcKind::File { size, host, .. } => (
                Item::File {
                    host: host.clone(),
                    size: *size,
                },
                mode_of(e.mode, false)?,
            ),
            SrcKind::StageFile { size } => {
                let host = fetched.get(&e.path).cloned().ok_or_else(|| {
                    BuildError::at(
                        span,
                        format!("{cmd}: {} could not be read from its layer", e.path),
                    )
                })?;
                (Item::File { host, size: *size }, mode_of(e.mode, false)?)
            }
            SrcKind::Symlink(t) => (Item::Symlink(t.clone()), 0o777),
        };
        let (uid, gid) = chown.or(e.owner).unwrap_or((uid, gid));
        // Another name of a file this copy writes: a hard link to it.
        let linked_to = hard_links.get(target).filter(|first| {
            chosen
                .get(*first)
                .is_some_and(|f| matches!(f.kind, SrcKind::File { .. } | SrcKind::StageFile { .. }))
        });
        // A context file's extended attributes go with it (as BuildKit's context transfer
        // carries them), and into the cache key.
        let xattrs = host_xattrs
            .get(target.as_slice())
            .cloned()
            .unwrap_or_default();
        let (item, mut fingerprint) = match (linked_to, &item) {
            (Some(first), Item::File { .. }) => (
                Item::Hardlink(first.clone()),
                format!("{} link {}", e.fingerprint, fsutil::key_text(first)),
            ),
            _ => (item, e.fingerprint.clone()),
        };
        for (k, v) in &xattrs {
            fingerprint.push_str(&format!(" xattr {k}={}", Digest::of(v)));
        }
        planned.insert(
            target.clone(),
            Planned {
                item,
                meta: EntryMeta {
                    mode,
                    uid,
                    gid,
                    mtime: e.mtime,
                    xattrs,
                },
                fingerprint,
            },
        );
    }
    Ok(planned)
}

/// Where each selected source goes: destination path → source entry, the destinations that
/// are other names of one file (hard links inside a copied directory), and the directories to
/// create. A selected symlink is followed (BuildKit's FollowSymlinks).
fn targets<'e>(
    picks: &[(BString, Option<BString>)],
    entries: &'e [SrcEntry],
    exclude: &crate::context::ignore::Matcher,
    (below, dest_rel, dest_is_dir): (&kiln_runtime::layer::view::View, &[u8], bool),
    (cmd, where_): (&str, &str),
    span: Span,
) -> Result<Targets<'e>, BuildError> {
    let mut chosen: BTreeMap<BString, &SrcEntry> = BTreeMap::new();
    // Destination → the destination of the first name of the same file (hard links).
    let mut hard_links: BTreeMap<BString, BString> = BTreeMap::new();
    let mut created_dirs: BTreeSet<BString> = BTreeSet::new();
    let mut order: BTreeMap<BString, usize> = BTreeMap::new();
    for (i, (named, kept)) in picks.iter().enumerate() {
        // A source named (or matched) itself that is a symlink is followed, inside its root, as
        // BuildKit's FollowSymlinks: its target's content is copied under the link's name.
        // Links inside a copied directory stay links.
        let pick = &follow_source(
            |p: &[u8]| match entry_at(entries, p).map(|e| &e.kind) {
                Some(SrcKind::Symlink(t)) => Some(t.as_slice()),
                _ => None,
            },
            named,
        );
        let entry = entry_at(entries, pick);
        if entry.is_none() && !pick.is_empty() {
            return Err(BuildError::at(
                span,
                format!("{cmd} {named}: the symlink's target /{pick} is not found in {where_}"),
            ));
        }
        let is_dir = pick.is_empty() || matches!(entry.map(|e| &e.kind), Some(SrcKind::Dir));
        // With --parents the part of the source path after the `./` marker (or all of it) is
        // kept under the destination.
        let base_dest = match kept {
            Some(k) if is_dir => join(dest_rel, k),
            _ => dest_rel.into(),
        };
        if is_dir {
            // A directory copies its contents into the destination, which is created (0755,
            // owned by --chown) when missing, as BuildKit's MkdirAll: the source directory's
            // own mode and time are not copied (a read-only source dir gives a 0755 dest).
            if entry.is_some() && !below.is_dir(&base_dest) && !base_dest.is_empty() {
                created_dirs.insert(base_dest.clone());
            }
            let strip = if pick.is_empty() { 0 } else { pick.len() + 1 };
            // Names of one file within this directory stay one file (BuildKit keeps hard
            // links inside a copied tree; separate sources are copied separately).
            let mut first_name: BTreeMap<&[u8], BString> = BTreeMap::new();
            for e in entries_below(entries, pick) {
                let rel = &e.path[strip..];
                if exclude.excludes(&rel.to_str_lossy()) {
                    continue;
                }
                let target = join(&base_dest, rel);
                if let Some(id) = e.link.as_ref().map(|l| l.as_slice()) {
                    match first_name.get(id) {
                        Some(first) => {
                            hard_links.insert(target.clone(), first.clone());
                        }
                        None => {
                            first_name.insert(id, target.clone());
                        }
                    }
                }
                order.entry(target.clone()).or_insert(i);
                chosen.insert(target, e);
            }
        } else if let Some(e) = entry {
            let base = named.rsplit(|&b| b == b'/').next().unwrap_or(named);
            if exclude.excludes(&base.to_str_lossy()) || exclude.excludes(&named.to_str_lossy()) {
                continue;
            }
            let target = match kept {
                Some(k) => join(dest_rel, k),
                None if dest_is_dir => join(dest_rel, base),
                None => dest_rel.into(),
            };
            order.insert(target.clone(), i);
            chosen.insert(target, e);
        }
    }
    Ok(Targets {
        chosen,
        order,
        hard_links,
        created_dirs,
    })
}

/// What [`targets`] planned.
struct Targets<'e> {
    chosen: BTreeMap<BString, &'e SrcEntry>,
    /// Destination → the index of the source that chose it.
    order: BTreeMap<BString, usize>,
    /// Destination → the destination of the first name of the same file.
    hard_links: BTreeMap<BString, BString>,
    created_dirs: BTreeSet<BString>,
}

/// Selects what `sources` name among `paths` (sorted): (path in the source, the part kept under the
/// destination with `--parents`). A pattern matching nothing
/// selects nothing; a plain path that is missing is an error naming `where_`.
fn select<'t>(
    c: &Copy,
    sources: &[String],
    paths: &[&[u8]],
    link_of: &dyn Fn(&[u8]) -> Option<&'t [u8]>,
    (cmd, where_): (&str, &str),
    span: Span,
) -> Result<SelectedSources, BuildError> {
    let mut picks: SelectedSources = Vec::new();
    for s in sources {
        // `./` inside a --parents source marks where the kept structure starts.
        let marker = if c.parents {
            s.find("/./").map(|i| context_path(&s[..i]).len())
        } else {
            None
        };
        let p = context_path(s);
        let kept = |path: &[u8]| -> Option<BString> {
            if !c.parents {
                return None;
            }
            Some(match marker {
                Some(0) | None => path.into(),
                Some(n) => path
                    .get(n..)
                    .unwrap_or_default()
                    .trim_start_with(|c| c == '/')
                    .into(),
            })
        };
        if has_wildcard(&p.to_str_lossy()) {
            // A pattern that matches nothing copies nothing, and is no error, as BuildKit's
            // `AllowEmptyWildcard` (a plain path that is missing still is).
            // Compiled once, tried against every path.
            let pattern = crate::context::ignore::FilepathPattern::new(&p.to_str_lossy())
                .map_err(|e| BuildError::at(span, e.to_string()))?;
            // Patterns are text: a name that is not UTF-8 is matched with its stray bytes as
            // U+FFFD, as Go's filepath.Match reads such a name.
            for path in paths {
                if pattern.matches(&path.to_str_lossy()) {
                    picks.push(((*path).into(), kept(path)));
                }
            }
        } else if p.is_empty() || paths.binary_search(&p.as_slice()).is_ok() {
            let k = kept(&p);
            picks.push((p, k));
        } else if let Some(real) = through_links(&p, paths, link_of) {
            // A directory on the way is a symlink (`current/bin/x`, `current -> releases/v2`):
            // followed inside the origin, as BuildKit does; the file keeps the name it was
            // asked by under the destination.
            let k = kept(&p);
            picks.push((real, k));
        } else {
            let hint = if c.from.is_none() {
                " (or excluded by .dockerignore)"
            } else {
                ""
            };
            return Err(BuildError::at(
                span,
                format!("{cmd} {s}: not found in {where_}{hint}"),
            ));
        }
    }
    Ok(picks)
}

/// `path` with the symlinks among its directories followed inside the origin (`paths`, sorted,
/// whose links `link_of` names), when that names something there.
fn through_links<'t>(
    path: &[u8],
    paths: &[&[u8]],
    link_of: &dyn Fn(&[u8]) -> Option<&'t [u8]>,
) -> Option<BString> {
    let real = fsutil::resolve_with(link_of, path, false);
    (real != path && paths.binary_search(&real.as_slice()).is_ok()).then_some(real)
}

/// What [`select`] chose: each path, and where it goes under the destination with `--parents`.
type SelectedSources = Vec<(BString, Option<BString>)>;

/// Runs one COPY/ADD. Returns whether the layer came from the cache.
pub(crate) fn copy(
    ctx: &Ctx<'_>,
    st: &mut StageState,
    stage: usize,
    ins: &Instruction,
    c: &Copy,
    name: &str,
    done: &BTreeMap<usize, StageState>,
) -> Result<bool, BuildError> {
    let span = ins.span;
    let cmd = if c.is_add { "ADD" } else { "COPY" };
    // --exclude: patternmatcher semantics (as .dockerignore), relative to each source.
    let exclude = crate::context::ignore::Matcher::new(&expand_all(ctx, st, &c.exclude, span)?)
        .map_err(|e| BuildError::at(span, format!("{cmd} --exclude: {e}")))?;
    // --link: the layer does not depend on what is below it, so destinations are resolved in an
    // empty filesystem (no symlink of the image is followed; parents are always written).
    let empty = kiln_runtime::layer::view::View::default();
    st.sync_view(ctx.store)?;
    let below = if c.link { &empty } else { st.view()? };
    let is_url = |s: &str| s.starts_with("http://") || s.starts_with("https://");
    let chown = match &c.chown {
        Some(s) => Some(resolve_chown(ctx, st, &ctx.expand(st, s, span)?, span)?),
        None => None,
    };
    let chmod = expand_opt(ctx, st, c.chmod.as_ref(), span)?;
    let (uid, gid) = chown.unwrap_or((0, 0));
    let (dest_raw, dest_rel, dest_slash) = destination(ctx, st, c, below, span)?;
    let all_sources = expand_all(ctx, st, &c.sources, span)?;
    // As BuildKit's history line names them: expanded, in order, heredocs as `<<NAME`.
    let sources_text: Vec<String> = all_sources
        .iter()
        .cloned()
        .chain(c.heredoc_sources.iter().map(|h| format!("<<{}", h.name)))
        .collect();
    let (urls, sources): (Vec<String>, Vec<String>) =
        all_sources.into_iter().partition(|s| c.is_add && is_url(s));
    check_sources(c, &urls, &sources, span)?;

    let mut origin = origin(ctx, (stage, ins, done), c, sources.is_empty())?;
    let where_ = origin.place;
    let picks = select(
        c,
        &sources,
        &origin.paths(),
        &|p| origin.link_of(p),
        (cmd, where_),
        span,
    )?;
    // Several files only when several are really named or matched: a wildcard that matches
    // one file may go to a destination without `/` (`COPY target/*.jar app.jar`), as in
    // BuildKit and the classic builder.
    let multiple = picks.len() + urls.len() + c.heredoc_sources.len() > 1 || c.parents;
    let dest_is_dir = dest_slash || multiple || below.is_dir(&dest_rel);
    if let Some(file) = fsutil::not_a_directory(below, &dest_rel, dest_is_dir) {
        return Err(BuildError::at(
            span,
            format!("{cmd} {dest_raw}: /{file} is not a directory"),
        ));
    }
    if multiple && !dest_slash && !below.is_dir(&dest_rel) {
        return Err(BuildError::at(
            span,
            format!(
                "when using {cmd} with more than one source file, the destination must be a directory and end with a /"
            ),
        ));
    }
    let step = copy_step(c, &dest_rel, (uid, gid), chmod.as_deref(), &origin.key);
    let dest_rel = dest_rel.as_slice();
    let history = history_line(c, &sources_text, &dest_raw, chmod.as_deref());
    // A copy of plain context sources is keyed by each source's content digest, known from
    // the snapshot: on a hit, the layer is taken without planning it file by file.
    let by_source = if c.is_add || c.parents || !urls.is_empty() || !c.heredoc_sources.is_empty() {
        None
    } else {
        match (&origin.snapshot, c.from.is_none(), c.exclude.is_empty()) {
            (Some(snap), true, true) => source_inputs(snap, &picks, (dest_rel, dest_is_dir)),
            _ => None,
        }
    };
    if let Some(inputs) = &by_source {
        let parent = if c.link { None } else { Some(&st.key) };
        let key = CacheKey::for_step(parent, &step, inputs);
        if !ctx.opts.no_cache
            && ctx.store.cache_get(&key.to_string())?.is_some()
            && !ctx.needs_record(&key)?
        {
            let (key, cached) = ctx.lookup(name, parent, &step, inputs, Recorded::Skipped)?;
            if let Some(entry) = cached {
                adopt_layer(st, &entry, key, &history)?;
                return Ok(true);
            }
        }
    }
    let entries = origin.entries_for(&picks);

    // Plan the layer: target path → source entry.
    let Targets {
        mut chosen,
        order,
        hard_links,
        created_dirs,
    } = targets(
        &picks,
        &entries,
        &exclude,
        (below, dest_rel, dest_is_dir),
        (cmd, where_),
        span,
    )?;
    // URLs are downloaded into the step's temporary directory.
    let tmpdir = ctx
        .store
        .root()
        .join(format!("tmp/copy-{}-{stage}", std::process::id()));
    let checksum = expand_opt(ctx, st, c.checksum.as_ref(), span)?;
    let downloaded = remote::download_all(
        &urls,
        checksum.as_deref(),
        &tmpdir,
        (dest_rel, dest_is_dir),
        span,
    )
    .inspect_err(|_| {
        // What was downloaded before the failure goes at once.
        let _ = std::fs::remove_dir_all(&tmpdir);
    })?;
    for (target, entry) in &downloaded {
        chosen.insert(target.clone(), entry);
    }
    // Files from another stage are fetched from its layers first.
    let fetched = match &origin.state {
        Some(src) => fetch_stage_files(ctx, src, &chosen, &tmpdir)?,
        None => BTreeMap::new(),
    };
    let mut planned = plan_entries(
        c,
        (&chosen, &order),
        &hard_links,
        &fetched,
        &Planning {
            dest_rel,
            tmpdir: &tmpdir,
            chown,
            owner: (uid, gid),
            chmod: chmod.as_deref(),
            cmd,
            span,
        },
    )?;
    add_created_dirs(&mut planned, created_dirs, (uid, gid), ctx.now);
    add_heredocs(
        ctx,
        st,
        c,
        &mut planned,
        (dest_rel, dest_is_dir),
        (uid, gid, chmod.as_deref()),
        span,
    )?;
    if planned.is_empty() && dest_rel.is_empty() {
        let _ = std::fs::remove_dir_all(&tmpdir);
        return Err(BuildError::at(span, format!("{cmd}: nothing to copy")));
    }

    let files = file_inputs(&planned);
    let result = commit_layer(
        ctx,
        st,
        step,
        (files, by_source),
        planned,
        (uid, gid),
        name,
        &history,
        c.link,
    );
    let _ = std::fs::remove_dir_all(&tmpdir);
    result
}

/// The destination of a COPY/ADD: as written (expanded), resolved in `below` (a link leads to
/// what it names, inside the root, as in BuildKit: into a linked directory; over a linked
/// file's target, the link itself kept), and whether its form names a directory.
fn destination(
    ctx: &Ctx<'_>,
    st: &StageState,
    c: &Copy,
    below: &kiln_runtime::layer::view::View,
    span: Span,
) -> Result<(String, BString, bool), BuildError> {
    let raw = ctx.expand(st, &c.dest, span)?;
    let slash = raw.ends_with('/') || raw == "." || raw.ends_with("/.");
    let rel = fsutil::resolve_all_in_root(below, fsutil::absolute(&st.workdir(), &raw));
    Ok((raw, rel, slash))
}

/// Created destination directories: 0755, owned by --chown, as BuildKit's MkdirAll (a path
/// the copy writes itself keeps its own entry).
fn add_created_dirs(
    planned: &mut BTreeMap<BString, Planned>,
    dirs: BTreeSet<BString>,
    (uid, gid): (u32, u32),
    now: i64,
) {
    for dir in dirs {
        planned.entry(dir).or_insert_with(|| Planned {
            item: Item::Dir,
            meta: EntryMeta {
                mode: 0o755,
                uid,
                gid,
                mtime: now,
                ..Default::default()
            },
            fingerprint: "dir 755".into(),
        });
    }
}

/// Each of `words` expanded in the stage's environment.
fn expand_all(
    ctx: &Ctx<'_>,
    st: &StageState,
    words: &[String],
    span: Span,
) -> Result<Vec<String>, BuildError> {
    words.iter().map(|w| ctx.expand(st, w, span)).collect()
}

/// An optional flag value expanded in the stage's environment.
fn expand_opt(
    ctx: &Ctx<'_>,
    st: &StageState,
    word: Option<&String>,
    span: Span,
) -> Result<Option<String>, BuildError> {
    word.map(|w| ctx.expand(st, w, span)).transpose()
}

/// The files a copy takes from another stage, read out of its layers into `tmpdir`.
fn fetch_stage_files(
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
struct Origin<'s> {
    /// Another stage or image (`--from`), whose files are read from its layers.
    state: Option<StageState>,
    /// The build context or a named directory context.
    snapshot: Option<std::borrow::Cow<'s, crate::context::snapshot::Snapshot>>,
    /// Another stage's or image's entries, sorted by path.
    stage: Vec<SrcEntry>,
    /// What the cache key names as the origin.
    key: String,
    /// For messages: `the build context`, `the source stage`.
    place: &'static str,
}

impl Origin<'_> {
    /// Every path a source may name, sorted.
    fn paths(&self) -> Vec<&[u8]> {
        match &self.snapshot {
            Some(snap) => snap.entries.iter().map(|e| e.path.as_slice()).collect(),
            None => self.stage.iter().map(|e| e.path.as_slice()).collect(),
        }
    }

    /// The target of the symlink at `path`, if it is one.
    fn link_of(&self, path: &[u8]) -> Option<&[u8]> {
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
    fn entries_for(&mut self, picks: &[(BString, Option<BString>)]) -> Vec<SrcEntry> {
        match &self.snapshot {
            Some(snap) => context_entries_for(snap, picks),
            None => std::mem::take(&mut self.stage),
        }
    }
}

/// The origin of a COPY/ADD: the context, another stage or image, or a named context
/// (`--from`), as the graph resolved it. No source from the context: the context is not read.
fn origin<'s>(
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
fn check_sources(
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

/// Heredoc sources (`COPY <<EOF /dest`): each a file of its body, expanded unless its
/// delimiter was quoted.
fn add_heredocs(
    ctx: &Ctx<'_>,
    st: &StageState,
    c: &Copy,
    planned: &mut BTreeMap<BString, Planned>,
    (dest_rel, dest_is_dir): (&[u8], bool),
    (uid, gid, chmod): (u32, u32, Option<&str>),
    span: Span,
) -> Result<(), BuildError> {
    let mode = match chmod {
        Some(spec) => fsutil::apply_chmod(spec, 0o644, false)
            .ok_or_else(|| BuildError::at(span, format!("invalid chmod parameter {spec:?}")))?,
        None => 0o644,
    };
    for h in &c.heredoc_sources {
        let body = h.body();
        let content = if h.expand {
            ctx.expand(st, &body, span)?
        } else {
            body
        };
        let target = if dest_is_dir {
            join(dest_rel, h.name.as_bytes())
        } else {
            dest_rel.into()
        };
        let digest = Digest::of(content.as_bytes());
        planned.insert(
            target,
            Planned {
                item: Item::Inline(content.into_bytes()),
                meta: EntryMeta {
                    mode,
                    uid,
                    gid,
                    mtime: ctx.now,
                    ..Default::default()
                },
                fingerprint: format!("inline {digest}"),
            },
        );
    }
    Ok(())
}

/// The cache step of a COPY/ADD: what it writes where, as whom, from which origin.
fn copy_step(
    c: &Copy,
    dest_rel: &[u8],
    (uid, gid): (u32, u32),
    chmod: Option<&str>,
    origin_key: &str,
) -> Step {
    let step = Step::new(if c.is_add { "ADD" } else { "COPY" })
        .field("dest", format!("/{}", fsutil::key_text(dest_rel)))
        .field("owner", format!("{uid}:{gid}"))
        .field("chmod", chmod.unwrap_or_default().to_string())
        .field("from", origin_key);
    if c.link {
        step.field("link", "true")
    } else {
        step
    }
}

/// Each planned path's fingerprint digest: a copy's inputs file by file.
fn file_inputs(planned: &BTreeMap<BString, Planned>) -> BTreeMap<String, Digest> {
    // Hashed on every core; the pairs come sorted, which a map is built from in one pass.
    use rayon::prelude::*;
    let inputs: Vec<(String, Digest)> = planned
        .par_iter()
        .map(|(p, e)| {
            (
                fsutil::key_text(p).into_owned(),
                Digest::of(e.fingerprint.as_bytes()),
            )
        })
        .collect();
    inputs.into_iter().collect()
}

/// A context copy's inputs by source: for each source in order, where it goes and the
/// content digest of what it names ([`checksum::context_source`]); `None` when a source is
/// missing (the per-file planning then says so).
fn source_inputs(
    snap: &crate::context::snapshot::Snapshot,
    picks: &[(BString, Option<BString>)],
    (dest_rel, dest_is_dir): (&[u8], bool),
) -> Option<BTreeMap<String, Digest>> {
    let mut out = BTreeMap::new();
    for (i, (named, _)) in picks.iter().enumerate() {
        let resolved = follow_source(|p: &[u8]| context_link(snap, p), named);
        let digest = checksum::context_source(snap, &resolved)?;
        let is_dir = resolved.is_empty() || snap.find(&resolved)?.kind == EntryKind::Dir;
        let base = named.rsplit(|&b| b == b'/').next().unwrap_or(named);
        let target = match (is_dir, dest_is_dir) {
            (true, _) | (false, false) => dest_rel.into(),
            (false, true) => join(dest_rel, base),
        };
        out.insert(
            format!(
                "source {i} {} -> /{}",
                fsutil::key_text(named),
                fsutil::key_text(&target)
            ),
            digest,
        );
    }
    Some(out)
}

/// The history line of a COPY or ADD as BuildKit writes it (`convert_copy.go`): the command,
/// `--parents`, `--chown`, `--chmod` as given, the expanded sources and destination; never
/// `--from` or `--link`.
fn history_line(c: &Copy, sources: &[String], dest: &str, chmod: Option<&str>) -> String {
    let mut parts = vec![if c.is_add { "ADD" } else { "COPY" }.to_string()];
    if c.parents {
        parts.push("--parents".into());
    }
    if let Some(o) = &c.chown {
        parts.push(format!("--chown={o}"));
    }
    if let Some(m) = chmod {
        parts.push(format!("--chmod={m}"));
    }
    parts.extend(sources.iter().cloned());
    parts.push(dest.to_string());
    format!("{} # buildkit", parts.join(" "))
}

/// Creates WORKDIR's directory when it is missing. Returns whether the layer was cached.
pub(crate) fn mkdir_workdir(
    ctx: &Ctx<'_>,
    st: &mut StageState,
    abs: &str,
    name: &str,
    span: Span,
) -> Result<bool, BuildError> {
    st.sync_view(ctx.store)?;
    let rel = fsutil::resolve_all_in_root(st.view()?, abs);
    if let Some(file) = fsutil::not_a_directory(st.view()?, &rel, true) {
        return Err(BuildError::at(
            span,
            format!("WORKDIR {abs}: /{file} is not a directory"),
        ));
    }
    if rel.is_empty() || st.view()?.is_dir(&rel) {
        ctx.history(st, format!("WORKDIR {abs}"), true);
        return Ok(false);
    }
    // BuildKit creates WORKDIR as the current USER.
    let user = st.config.config.user.clone();
    let owner = if user.is_empty() {
        (0, 0)
    } else {
        resolve_chown(ctx, st, &user, span)?
    };
    let step = Step::new("MKDIR")
        .field("path", format!("/{}", fsutil::key_text(&rel)))
        .field("owner", format!("{}:{}", owner.0, owner.1));
    let dir = Planned {
        item: Item::Dir,
        meta: EntryMeta {
            mode: 0o755,
            uid: owner.0,
            gid: owner.1,
            mtime: ctx.now,
            ..Default::default()
        },
        fingerprint: "dir 755".into(),
    };
    commit_layer(
        ctx,
        st,
        step,
        (BTreeMap::new(), None),
        BTreeMap::from([(rel, dir)]),
        owner,
        name,
        // BuildKit's WORKDIR history line has no `# buildkit` mark (it passes no state).
        &format!("WORKDIR {abs}"),
        false,
    )
}
