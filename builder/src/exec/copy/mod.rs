//! COPY/ADD: steps that write a layer of files from the build context, another stage or
//! image, a URL or a heredoc.
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
mod origin;
mod owner;
mod plan;
mod remote;
mod sources;

use std::collections::{BTreeMap, BTreeSet};

use bstr::{BString, ByteSlice};

pub(crate) use layer::adopt_layer;
pub(in crate::exec) use layer::commit_layer;
pub(crate) use origin::{From, dir_as_rootfs, from_source};
use origin::{check_sources, fetch_stage_files, origin};
pub(crate) use owner::{image_file, resolve_chown};
use plan::*;
pub(crate) use sources::{SrcEntry, SrcKind, context_entries};
use sources::{context_link, follow_source};

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
    context::snapshot::EntryKind,
    image::layer::{EntryMeta, LayerWriter},
};

/// What goes into the new layer at one path.
#[derive(Debug, Clone)]
pub(in crate::exec) enum Item {
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
pub(in crate::exec) struct Planned {
    pub(in crate::exec) item: Item,
    pub(in crate::exec) meta: EntryMeta,
    /// What the cache key sees of this entry (kind, mode, owner, content digest).
    pub(in crate::exec) fingerprint: String,
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
    let count = picks.len() + urls.len() + c.heredoc_sources.len();
    let dest_is_dir =
        destination_is_dir(c, below, (&dest_raw, &dest_rel, dest_slash), count, span)?;
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
        if let Some((key, entry)) = hit_by_source(ctx, parent, (&step, inputs), name)? {
            adopt_layer(st, &entry, key, &history)?;
            return Ok(true);
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
    // URLs are downloaded into the step's temporary directory: one of its own, also when
    // builds for several platforms run in this process at once.
    static STEP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmpdir = ctx.store.root().join(format!(
        "tmp/copy-{}-{stage}-{}",
        std::process::id(),
        STEP.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
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

/// Whether a COPY/ADD's destination is a directory: it ends in `/`, several files go there
/// (`count` sources; a wildcard that matches one file may name the destination file, `COPY
/// target/*.jar app.jar`, as in BuildKit and the classic builder), or it is one in `below`.
/// Several files to a destination that is none are refused, as the Dockerfile reference says.
fn destination_is_dir(
    c: &Copy,
    below: &kiln_runtime::layer::view::View,
    (dest_raw, dest_rel, dest_slash): (&str, &[u8], bool),
    count: usize,
    span: Span,
) -> Result<bool, BuildError> {
    let cmd = if c.is_add { "ADD" } else { "COPY" };
    let multiple = count > 1 || c.parents;
    let dest_is_dir = dest_slash || multiple || below.is_dir(dest_rel);
    if let Some(file) = fsutil::not_a_directory(below, dest_rel, dest_is_dir) {
        return Err(BuildError::at(
            span,
            format!("{cmd} {dest_raw}: /{file} is not a directory"),
        ));
    }
    if multiple && !dest_slash && !below.is_dir(dest_rel) {
        return Err(BuildError::at(
            span,
            format!(
                "when using {cmd} with more than one source file, the destination must be a directory and end with a /"
            ),
        ));
    }
    Ok(dest_is_dir)
}

/// A copy of plain context sources keyed by each source's content digest: a hit (whose
/// record the store already has) is taken without planning the copy file by file. The key
/// and the entry when it is one.
fn hit_by_source(
    ctx: &Ctx<'_>,
    parent: Option<&CacheKey>,
    (step, inputs): (&Step, &BTreeMap<String, Digest>),
    name: &str,
) -> Result<Option<(CacheKey, CacheEntry)>, BuildError> {
    let key = CacheKey::for_step(parent, step, inputs);
    if ctx.opts.no_cache
        || ctx.store.cache_get(&key.to_string())?.is_none()
        || ctx.needs_record(&key)?
    {
        return Ok(None);
    }
    let (key, cached) = ctx.lookup(name, parent, step, inputs, Recorded::Skipped)?;
    Ok(cached.map(|entry| (key, entry)))
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
pub(super) fn file_inputs(planned: &BTreeMap<BString, Planned>) -> BTreeMap<String, Digest> {
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
