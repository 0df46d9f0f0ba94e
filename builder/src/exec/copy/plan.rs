//! Planning a COPY: which source paths are copied, where each lands under the destination
//! (wildcards, `--parents`, links followed inside the source), and what the new layer holds.

use std::collections::{BTreeMap, BTreeSet};

use bstr::{BString, ByteSlice};

use kiln_parser::{instruction::Copy, span::Span};
use kiln_runtime::digest::Digest;

use super::{
    Item, Planned,
    archive::{Archive, plan_archive, sniff_archive},
    context_path,
    sources::{SrcEntry, SrcKind, entries_below, entry_at, follow_source},
};
use crate::{
    context::ignore::has_wildcard,
    exec::{BuildError, fsutil},
    image::layer::EntryMeta,
};

/// `dir/name`, either of them empty: the other.
pub(super) fn join(dir: &[u8], name: &[u8]) -> BString {
    match (dir.is_empty(), name.is_empty()) {
        (true, _) => name.into(),
        (_, true) => dir.into(),
        _ => [dir, b"/", name].concat().into(),
    }
}

/// How the entries of one COPY are written: where, as whom, with which mode.
#[derive(Clone, Copy)]
pub(super) struct Planning<'a> {
    pub(super) dest_rel: &'a [u8],
    /// The step's scratch directory (archives are extracted there).
    pub(super) tmpdir: &'a std::path::Path,
    pub(super) chown: Option<(u32, u32)>,
    /// The owner when neither `--chown` nor the source gives one.
    pub(super) owner: (u32, u32),
    pub(super) chmod: Option<&'a str>,
    pub(super) cmd: &'a str,
    pub(super) span: Span,
}

/// The layer entries for the chosen sources: files, directories, links (hard links to a file
/// this copy writes), and for ADD the contents of local archives.
pub(super) fn plan_entries(
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
pub(super) fn targets<'e>(
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
pub(super) struct Targets<'e> {
    pub(super) chosen: BTreeMap<BString, &'e SrcEntry>,
    /// Destination → the index of the source that chose it.
    pub(super) order: BTreeMap<BString, usize>,
    /// Destination → the destination of the first name of the same file.
    pub(super) hard_links: BTreeMap<BString, BString>,
    pub(super) created_dirs: BTreeSet<BString>,
}

/// Selects what `sources` name among `paths` (sorted): (path in the source, the part kept under the
/// destination with `--parents`). A pattern matching nothing
/// selects nothing; a plain path that is missing is an error naming `where_`.
pub(super) fn select<'t>(
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
pub(super) fn through_links<'t>(
    path: &[u8],
    paths: &[&[u8]],
    link_of: &dyn Fn(&[u8]) -> Option<&'t [u8]>,
) -> Option<BString> {
    let real = fsutil::resolve_with(link_of, path, false);
    (real != path && paths.binary_search(&real.as_slice()).is_ok()).then_some(real)
}

/// What [`select`] chose: each path, and where it goes under the destination with `--parents`.
pub(super) type SelectedSources = Vec<(BString, Option<BString>)>;
