//! COPY/ADD from the build context, and WORKDIR's directory: steps that write a layer.
//!
//! Semantics (REFERENCE §1.6 COPY): sources are relative to the context root and cannot leave it;
//! wildcards use Go `filepath.Match`; a directory source copies its contents; a single file goes
//! to `dest` exactly unless `dest` ends in `/` or is an existing directory; several sources need a
//! directory destination; missing parents are created (0755, owned by `--chown`); ownership is
//! 0:0 unless `--chown` (names resolved in the image's own `/etc/passwd` and `/etc/group`);
//! modes are kept unless `--chmod`. Destination paths are resolved inside the rootfs, so a
//! symlink in the image can never send a file outside it.

use std::collections::{BTreeMap, BTreeSet};

use kiln_parser::{instruction::Copy, instruction::Instruction, span::Span};
use kiln_runtime::{
    digest::Digest,
    layer::view::{open_layer, read_file},
    oci,
    store::CacheEntry,
};

use super::{BuildError, Ctx, LayerRef, StageState, fsutil};
use crate::{
    cache::key::{CacheKey, Step},
    context::{
        ignore::{clean, filepath_match, has_wildcard},
        snapshot::{EntryKind, load_ignore, scan},
    },
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
    Symlink(String),
}

#[derive(Debug, Clone)]
struct Planned {
    item: Item,
    meta: EntryMeta,
    /// What the cache key sees of this entry (kind, mode, owner, content digest).
    fingerprint: String,
}

/// `uid[:gid]` or names, resolved in the destination image.
fn resolve_chown(
    ctx: &Ctx<'_>,
    st: &StageState,
    spec: &str,
    span: Span,
) -> Result<(u32, u32), BuildError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let read = |path: &str| -> Result<Option<String>, BuildError> {
        let Some(node) = st.view.get(path) else {
            return Ok(None);
        };
        let Some(layer) = st.layers.get(node.layer) else {
            return Ok(None);
        };
        let blob = Digest::parse(&layer.descriptor.digest)
            .map_err(|e| BuildError::Other(e.to_string()))?;
        let r = open_layer(&ctx.store.blob_path(&blob))
            .map_err(|e| BuildError::Other(e.to_string()))?;
        Ok(read_file(r, path)
            .map_err(|e| BuildError::Other(e.to_string()))?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(n) => (n, Some(n)),
        Err(_) => {
            let passwd = read("/etc/passwd")?.ok_or_else(|| {
                BuildError::at(
                    span,
                    format!("unable to find user {user}: the image has no /etc/passwd"),
                )
            })?;
            let (id, gid) = fsutil::lookup_id(&passwd, user).ok_or_else(|| {
                BuildError::at(
                    span,
                    format!("unable to find user {user}: not in /etc/passwd"),
                )
            })?;
            (id, gid)
        }
    };
    let gid = match group {
        None => primary.unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let groups = read("/etc/group")?.ok_or_else(|| {
                    BuildError::at(
                        span,
                        format!("unable to find group {g}: the image has no /etc/group"),
                    )
                })?;
                fsutil::lookup_id(&groups, g)
                    .map(|(id, _)| id)
                    .ok_or_else(|| {
                        BuildError::at(span, format!("unable to find group {g}: not in /etc/group"))
                    })?
            }
        },
    };
    Ok((uid, gid))
}

/// A context source path: relative, cleaned, unable to climb out (`/a`, `../a` → `a`).
fn context_path(src: &str) -> String {
    let c = clean(src.trim_start_matches('/'));
    let mut p = c.as_str();
    while let Some(rest) = p.strip_prefix("../") {
        p = rest;
    }
    match p {
        "." | ".." => String::new(),
        p => p.to_string(),
    }
}

fn join(dir: &str, name: &str) -> String {
    match (dir.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (_, true) => dir.to_string(),
        _ => format!("{dir}/{name}"),
    }
}

/// Runs one COPY/ADD. Returns whether the layer came from the cache.
pub(crate) fn copy(
    ctx: &mut Ctx<'_>,
    st: &mut StageState,
    _stage: usize,
    ins: &Instruction,
    c: &Copy,
    name: &str,
    _done: &BTreeMap<usize, StageState>,
) -> Result<bool, BuildError> {
    let span = ins.span;
    let cmd = if c.is_add { "ADD" } else { "COPY" };
    if c.from.is_some() {
        return Err(BuildError::at(
            span,
            format!("{cmd} --from is not supported yet (issue 3 in progress)"),
        ));
    }
    if c.link || c.parents || !c.exclude.is_empty() {
        return Err(BuildError::at(
            span,
            format!(
                "{cmd} --link, --parents and --exclude are not supported yet (issue 3 in progress)"
            ),
        ));
    }
    if c.is_add
        && c.sources
            .iter()
            .any(|s| s.contains("://") || s.starts_with("git@"))
    {
        return Err(BuildError::at(
            span,
            "ADD of a URL or git repository is not supported yet (issue 3 in progress)",
        ));
    }
    let dest_raw = ctx.expand(st, &c.dest, span)?;
    let chown = match &c.chown {
        Some(s) => Some(resolve_chown(ctx, st, &ctx.expand(st, s, span)?, span)?),
        None => None,
    };
    let chmod = match &c.chmod {
        Some(s) => Some(ctx.expand(st, s, span)?),
        None => None,
    };
    let (uid, gid) = chown.unwrap_or((0, 0));
    let abs_dest = fsutil::absolute(&st.workdir(), &dest_raw);
    let dest_rel = fsutil::resolve_in_root(&st.view, &abs_dest);
    let dest_slash = dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/.");
    let mode_of = |mode: u32, is_dir: bool| -> Result<u32, BuildError> {
        match &chmod {
            None => Ok(mode),
            Some(spec) => fsutil::apply_chmod(spec, mode, is_dir)
                .ok_or_else(|| BuildError::at(span, format!("invalid chmod parameter {spec:?}"))),
        }
    };
    let now = ctx.now;

    // Collect (source path in context, is-root) picks.
    let mut planned: BTreeMap<String, Planned> = BTreeMap::new();
    let mut picks: Vec<String> = Vec::new();
    let mut wildcard = false;
    let sources: Vec<String> = c
        .sources
        .iter()
        .map(|s| ctx.expand(st, s, span))
        .collect::<Result<_, _>>()?;
    if !sources.is_empty() {
        if ctx.snapshot.is_none() {
            let m = load_ignore(&ctx.opts.context, ctx.opts.dockerfile_path.as_deref())?;
            ctx.snapshot = Some(scan(&ctx.opts.context, &m, Some(ctx.store))?);
        }
        let snap = ctx
            .snapshot
            .as_ref()
            .ok_or_else(|| BuildError::Other("no context".into()))?;
        for s in &sources {
            let p = context_path(s);
            if has_wildcard(&p) {
                wildcard = true;
                let mut any = false;
                for e in &snap.entries {
                    if filepath_match(&p, &e.path)
                        .map_err(|e| BuildError::at(span, e.to_string()))?
                    {
                        picks.push(e.path.clone());
                        any = true;
                    }
                }
                if !any {
                    return Err(BuildError::at(
                        span,
                        format!("{cmd} {s}: no files in the build context match the pattern"),
                    ));
                }
            } else if p.is_empty() || snap.entries.iter().any(|e| e.path == p) {
                picks.push(p);
            } else {
                return Err(BuildError::at(
                    span,
                    format!(
                        "{cmd} {s}: not found in the build context (or excluded by .dockerignore)"
                    ),
                ));
            }
        }
    }
    let multiple = picks.len() + c.heredoc_sources.len() > 1 || wildcard;
    let dest_is_dir = dest_slash || multiple || st.view.is_dir(&dest_rel);
    if multiple && !dest_slash && !st.view.is_dir(&dest_rel) {
        return Err(BuildError::at(
            span,
            format!(
                "when using {cmd} with more than one source file, the destination must be a directory and end with a /"
            ),
        ));
    }

    if let Some(snap) = &ctx.snapshot {
        let by_path: BTreeMap<&str, &crate::context::snapshot::Entry> =
            snap.entries.iter().map(|e| (e.path.as_str(), e)).collect();
        for pick in &picks {
            let entry = by_path.get(pick.as_str()).copied();
            let is_dir = pick.is_empty() || matches!(entry.map(|e| &e.kind), Some(EntryKind::Dir));
            if is_dir {
                // A directory copies its contents into the destination.
                let prefix = if pick.is_empty() {
                    String::new()
                } else {
                    format!("{pick}/")
                };
                if let Some(e) = entry {
                    if !st.view.is_dir(&dest_rel) && !dest_rel.is_empty() {
                        planned.insert(
                            dest_rel.clone(),
                            Planned {
                                item: Item::Dir,
                                meta: EntryMeta {
                                    mode: mode_of(e.mode, true)?,
                                    uid,
                                    gid,
                                    mtime: e.mtime,
                                    ..Default::default()
                                },
                                fingerprint: format!("dir {:o}", e.mode),
                            },
                        );
                    }
                }
                for e in snap
                    .entries
                    .iter()
                    .filter(|e| e.path.starts_with(&prefix) && e.path != *pick)
                {
                    let rel = &e.path[prefix.len()..];
                    add_entry(
                        &mut planned,
                        snap,
                        &join(&dest_rel, rel),
                        e,
                        uid,
                        gid,
                        &mode_of,
                    )?;
                }
            } else if let Some(e) = entry {
                let base = e.path.rsplit('/').next().unwrap_or(&e.path);
                let target = if dest_is_dir {
                    join(&dest_rel, base)
                } else {
                    dest_rel.clone()
                };
                add_entry(&mut planned, snap, &target, e, uid, gid, &mode_of)?;
            }
        }
    }
    for h in &c.heredoc_sources {
        let body = h.body();
        let content = if h.expand {
            ctx.expand(st, &body, span)?
        } else {
            body
        };
        let target = if dest_is_dir {
            join(&dest_rel, &h.name)
        } else {
            dest_rel.clone()
        };
        let digest = Digest::of(content.as_bytes());
        planned.insert(
            target,
            Planned {
                item: Item::Inline(content.into_bytes()),
                meta: EntryMeta {
                    mode: mode_of(0o644, false)?,
                    uid,
                    gid,
                    mtime: now,
                    ..Default::default()
                },
                fingerprint: format!("inline {digest}"),
            },
        );
    }
    if planned.is_empty() && dest_rel.is_empty() {
        return Err(BuildError::at(span, format!("{cmd}: nothing to copy")));
    }

    let step = Step::new(cmd)
        .field("dest", format!("/{dest_rel}"))
        .field("owner", format!("{uid}:{gid}"))
        .field("chmod", chmod.clone().unwrap_or_default());
    let inputs: BTreeMap<String, Digest> = planned
        .iter()
        .map(|(p, e)| (p.clone(), Digest::of(e.fingerprint.as_bytes())))
        .collect();
    commit_layer(
        ctx,
        st,
        step,
        inputs,
        planned,
        (uid, gid),
        name,
        &format!("{} # buildkit", ins.text),
    )
}

#[allow(clippy::too_many_arguments)]
fn add_entry(
    planned: &mut BTreeMap<String, Planned>,
    snap: &crate::context::snapshot::Snapshot,
    target: &str,
    e: &crate::context::snapshot::Entry,
    uid: u32,
    gid: u32,
    mode_of: &dyn Fn(u32, bool) -> Result<u32, BuildError>,
) -> Result<(), BuildError> {
    let (item, fingerprint, mode) = match &e.kind {
        EntryKind::Dir => (
            Item::Dir,
            format!("dir {:o}", e.mode),
            mode_of(e.mode, true)?,
        ),
        EntryKind::File { size, digest } => (
            Item::File {
                host: snap.root.join(&e.path),
                size: *size,
            },
            format!("file {:o} {digest}", e.mode),
            mode_of(e.mode, false)?,
        ),
        EntryKind::Symlink { target } => (
            Item::Symlink(target.clone()),
            format!("link {target}"),
            0o777,
        ),
        // Sockets, fifos and devices are not copied (BuildKit skips sockets too).
        EntryKind::Other => return Ok(()),
    };
    planned.insert(
        target.to_string(),
        Planned {
            item,
            meta: EntryMeta {
                mode,
                uid,
                gid,
                mtime: e.mtime,
                ..Default::default()
            },
            fingerprint,
        },
    );
    Ok(())
}

/// Creates WORKDIR's directory when it is missing. Returns whether the layer was cached.
pub(crate) fn mkdir_workdir(
    ctx: &mut Ctx<'_>,
    st: &mut StageState,
    abs: &str,
    name: &str,
    span: Span,
) -> Result<bool, BuildError> {
    let rel = fsutil::resolve_in_root(&st.view, abs);
    if rel.is_empty() || st.view.is_dir(&rel) {
        ctx.history(st, format!("WORKDIR {abs}"), true);
        return Ok(false);
    }
    // BuildKit creates WORKDIR as the current USER (REFERENCE §1.6 WORKDIR).
    let user = st.config.config.user.clone();
    let owner = if user.is_empty() {
        (0, 0)
    } else {
        resolve_chown(ctx, st, &user, span)?
    };
    let step = Step::new("MKDIR")
        .field("path", format!("/{rel}"))
        .field("owner", format!("{}:{}", owner.0, owner.1));
    commit_layer(
        ctx,
        st,
        step,
        BTreeMap::new(),
        BTreeMap::new(),
        owner,
        name,
        &format!("WORKDIR {abs} # buildkit"),
    )
}

/// Writes (or reuses from the cache) the layer holding `planned` plus any missing parents,
/// adds it to the stage, and records history.
#[allow(clippy::too_many_arguments)]
fn commit_layer(
    ctx: &mut Ctx<'_>,
    st: &mut StageState,
    step: Step,
    inputs: BTreeMap<String, Digest>,
    mut planned: BTreeMap<String, Planned>,
    owner: (u32, u32),
    name: &str,
    created_by: &str,
) -> Result<bool, BuildError> {
    // The directory itself for MKDIR, and missing parents for everything.
    if step.kind == "MKDIR" {
        if let Some(path) = step.fields.get("path") {
            let rel = path.trim_start_matches('/').to_string();
            planned.insert(
                rel,
                Planned {
                    item: Item::Dir,
                    meta: EntryMeta {
                        mode: 0o755,
                        uid: owner.0,
                        gid: owner.1,
                        mtime: ctx.now,
                        ..Default::default()
                    },
                    fingerprint: "dir 755".into(),
                },
            );
        }
    }
    let mut parents: BTreeSet<String> = BTreeSet::new();
    for path in planned.keys() {
        let mut p = path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if !st.view.is_dir(parent) && !planned.contains_key(parent) {
                parents.insert(parent.to_string());
            }
            p = parent;
        }
    }
    let key = CacheKey::for_step(Some(&st.key), &step, &inputs);
    let description = name.to_string();
    let cached = if ctx.opts.no_cache {
        None
    } else {
        ctx.store.cache_get(&key.to_string())?
    };
    let (entry, hit) = match cached {
        Some(e) => (e, true),
        None => {
            let created = ctx.now;
            let blob = ctx.store.new_blob_file()?;
            let mut w = LayerWriter::new(
                std::io::BufWriter::new(
                    blob.file
                        .try_clone()
                        .map_err(|e| BuildError::Other(e.to_string()))?,
                ),
                ctx.opts.source_date_epoch,
            );
            let mut all: BTreeMap<String, Planned> = planned.clone();
            for p in &parents {
                all.insert(
                    p.clone(),
                    Planned {
                        item: Item::Dir,
                        meta: EntryMeta {
                            mode: 0o755,
                            uid: owner.0,
                            gid: owner.1,
                            mtime: created,
                            ..Default::default()
                        },
                        fingerprint: String::new(),
                    },
                );
            }
            let io =
                |e: std::io::Error| BuildError::Other(format!("writing the layer of {name}: {e}"));
            for (path, p) in &all {
                match &p.item {
                    Item::Dir => w.dir(path, &p.meta).map_err(io)?,
                    Item::File { host, size } => {
                        let f = std::fs::File::open(host)
                            .map_err(|e| BuildError::Other(format!("{}: {e}", host.display())))?;
                        w.file(path, &p.meta, *size, f).map_err(io)?
                    }
                    Item::Inline(data) => w
                        .file(path, &p.meta, data.len() as u64, data.as_slice())
                        .map_err(io)?,
                    Item::Symlink(t) => w.symlink(path, t, &p.meta).map_err(io)?,
                }
            }
            let (info, mut out) = w.finish().map_err(io)?;
            std::io::Write::flush(&mut out).map_err(io)?;
            drop(out);
            ctx.store.commit_blob(blob, &info.diff_id)?;
            let e = CacheEntry {
                key: key.to_string(),
                layer: info.diff_id,
                size: info.size,
                description,
                created,
            };
            ctx.store.cache_put(&e)?;
            (e, false)
        }
    };
    // Update the view from the layer actually used (cached or new).
    let reader = open_layer(&ctx.store.blob_path(&entry.layer))
        .map_err(|e| BuildError::Other(e.to_string()))?;
    let index = st.layers.len();
    st.view
        .apply(index, reader, &entry.layer.to_string())
        .map_err(|e| BuildError::Other(e.to_string()))?;
    st.add_layer(
        LayerRef {
            descriptor: oci::Descriptor {
                media_type: oci::MEDIA_LAYER_TAR.into(),
                digest: entry.layer.to_string(),
                size: entry.size,
                annotations: BTreeMap::new(),
                platform: None,
            },
            diff_id: entry.layer.clone(),
        },
        key,
    );
    st.config.history.push(oci::History {
        created: Some(fsutil::rfc3339(entry.created)),
        created_by: Some(created_by.to_string()),
        comment: Some("buildkit.dockerfile.v0".into()),
        empty_layer: false,
    });
    st.time = Some(entry.created);
    Ok(hit)
}
