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
    layer::view::{Node, NodeKind, open_layer, read_file},
    oci,
    store::CacheEntry,
};

use super::{BuildError, Ctx, LayerRef, StageState, fsutil};
use crate::{
    cache::key::{CacheKey, Step},
    context::{
        ignore::{clean, filepath_match, has_wildcard},
        snapshot::EntryKind,
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
    /// Another name of the file at this layer path (from an archive).
    Hardlink(String),
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

/// `uid[:gid]` or names, resolved in the destination image.
/// A text file of the stage's filesystem (`None` when absent), read from its layer.
pub(crate) fn image_file(
    ctx: &Ctx<'_>,
    st: &StageState,
    path: &str,
) -> Result<Option<String>, BuildError> {
    let Some(node) = st.view.get(path) else {
        return Ok(None);
    };
    let Some(layer) = st.layers.get(node.layer) else {
        return Ok(None);
    };
    let blob =
        Digest::parse(&layer.descriptor.digest).map_err(|e| BuildError::Other(e.to_string()))?;
    let r =
        open_layer(&ctx.store.blob_path(&blob)).map_err(|e| BuildError::Other(e.to_string()))?;
    Ok(read_file(r, path)
        .map_err(|e| BuildError::Other(e.to_string()))?
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// `--chown` as BuildKit's `readUser` resolves it: a number is a uid (and the gid too, unless a
/// group is given); a name comes from the image's /etc/passwd with its primary group; a group
/// name from /etc/group. A user name the image lacks is uid and gid 0; a group name it lacks
/// keeps the user's gid. Either is said in a warning, never an error.
pub(crate) fn resolve_chown(
    ctx: &Ctx<'_>,
    st: &StageState,
    spec: &str,
    span: Span,
) -> Result<(u32, u32), BuildError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let read = |path: &str| image_file(ctx, st, path);
    let mut missing = Vec::new();
    let (uid, mut gid) = match user.parse::<u32>() {
        Ok(n) => (n, n),
        Err(_) => match read("/etc/passwd")?
            .as_deref()
            .and_then(|p| fsutil::lookup_id(p, user))
        {
            Some((id, primary)) => (id, primary.unwrap_or(0)),
            None => {
                missing.push(format!("user {user} is not in /etc/passwd: uid and gid 0"));
                (0, 0)
            }
        },
    };
    if let Some(g) = group {
        match g.parse::<u32>() {
            Ok(n) => gid = n,
            Err(_) => match read("/etc/group")?
                .as_deref()
                .and_then(|t| fsutil::lookup_id(t, g))
            {
                Some((id, _)) => gid = id,
                None => missing.push(format!("group {g} is not in /etc/group: gid {gid}")),
            },
        }
    }
    if !missing.is_empty() {
        (ctx.on_event)(super::Event::Warning {
            message: format!(
                "line {}: --chown={spec}: {} (as BuildKit)",
                span.start.line(),
                missing.join("; ")
            ),
        });
    }
    Ok((uid, gid))
}

/// One path a COPY may select, from the context or from another stage.
#[derive(Debug, Clone)]
pub(crate) struct SrcEntry {
    pub path: String,
    pub kind: SrcKind,
    pub mode: u32,
    pub mtime: i64,
    /// The owner it keeps without `--chown`: a stage's or image's file keeps its own (as in
    /// BuildKit); a context file has none and becomes 0:0.
    pub owner: Option<(u32, u32)>,
    /// Files with the same link identity are one file under several names (a context file's
    /// device and inode, a stage file's first name); a directory copy keeps them linked.
    pub link: Option<String>,
    /// What the cache key sees (kind, mode, owner and content digest or size).
    pub fingerprint: String,
}

#[derive(Debug, Clone)]
pub(crate) enum SrcKind {
    Dir,
    File {
        size: u64,
        host: std::path::PathBuf,
    },
    /// A file inside another stage's layers, fetched before writing.
    StageFile {
        size: u64,
    },
    Symlink(String),
}

pub(crate) fn context_entries(snap: &crate::context::snapshot::Snapshot) -> Vec<SrcEntry> {
    snap.entries
        .iter()
        .filter_map(|e| {
            let (kind, fingerprint) = match &e.kind {
                EntryKind::Dir => (SrcKind::Dir, format!("dir {:o}", e.mode)),
                EntryKind::File { size, digest } => (
                    SrcKind::File {
                        size: *size,
                        host: snap.root.join(&e.path),
                    },
                    format!("file {:o} {digest}", e.mode),
                ),
                EntryKind::Symlink { target } => {
                    (SrcKind::Symlink(target.clone()), format!("link {target}"))
                }
                // Sockets, fifos and devices are not copied (BuildKit skips sockets too).
                EntryKind::Other => return None,
            };
            Some(SrcEntry {
                path: e.path.clone(),
                kind,
                mode: e.mode,
                mtime: e.mtime,
                owner: None,
                link: e.inode.map(|(dev, ino)| format!("{dev}:{ino}")),
                fingerprint,
            })
        })
        .collect()
}

fn stage_entries(src: &StageState) -> Vec<SrcEntry> {
    // Files other names link to.
    let hard_linked: BTreeSet<&str> = src
        .view
        .iter()
        .filter_map(|(_, n)| match &n.kind {
            NodeKind::Hardlink { target } => Some(target.as_str()),
            _ => None,
        })
        .collect();
    src.view
        .iter()
        .filter_map(|(path, n)| {
            let (kind, fp) = match &n.kind {
                NodeKind::Dir => (SrcKind::Dir, format!("dir {:o}", n.mode)),
                NodeKind::File { size } => (
                    SrcKind::StageFile { size: *size },
                    format!("file {:o} {size} {}", n.mode, n.layer),
                ),
                NodeKind::Hardlink { target } => match src.view.get(target).map(|t| &t.kind) {
                    Some(NodeKind::File { size }) => (
                        SrcKind::StageFile { size: *size },
                        format!("file {:o} {size} {}", n.mode, n.layer),
                    ),
                    _ => return None,
                },
                NodeKind::Symlink { target } => {
                    (SrcKind::Symlink(target.clone()), format!("link {target}"))
                }
                NodeKind::Other => return None,
            };
            Some(SrcEntry {
                path: path.clone(),
                kind,
                mode: n.mode,
                mtime: n.mtime,
                owner: Some((n.uid, n.gid)),
                link: match &n.kind {
                    NodeKind::Hardlink { target } => Some(target.clone()),
                    NodeKind::File { .. } => {
                        hard_linked.contains(path.as_str()).then(|| path.clone())
                    }
                    _ => None,
                },
                fingerprint: format!("{fp} {}:{}", n.uid, n.gid),
            })
        })
        .collect()
}

/// The path `path` names once symlinks are followed (each relative to its directory, an
/// absolute one from the root, `..` never above it; at most 40): itself when it is no link.
fn follow_source(by_path: &BTreeMap<&str, &SrcEntry>, path: &str) -> String {
    let mut p = path.to_string();
    for _ in 0..40 {
        let Some(SrcKind::Symlink(t)) = by_path.get(p.as_str()).map(|e| &e.kind) else {
            return p;
        };
        let joined = if t.starts_with('/') {
            t.clone()
        } else {
            match p.rsplit_once('/') {
                Some((dir, _)) => format!("{dir}/{t}"),
                None => t.clone(),
            }
        };
        let mut parts: Vec<&str> = Vec::new();
        for c in joined.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
        p = parts.join("/");
    }
    p
}

/// Extracts `paths` (files of `src`) into `dir`, streaming each layer that holds one once.
fn extract_stage_files(
    ctx: &Ctx<'_>,
    src: &StageState,
    paths: &BTreeSet<String>,
    dir: &std::path::Path,
) -> Result<BTreeMap<String, std::path::PathBuf>, BuildError> {
    // Per layer: the path holding the content → every wanted name of it (a file and its hard
    // links are one content).
    let mut by_layer: BTreeMap<usize, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for p in paths {
        // A hard link's content is its target's.
        let (real, layer) = match src.view.get(p) {
            Some(Node {
                kind: NodeKind::Hardlink { target },
                layer,
                ..
            }) => (target.clone(), *layer),
            Some(n) => (p.clone(), n.layer),
            None => continue,
        };
        by_layer
            .entry(layer)
            .or_default()
            .entry(real)
            .or_default()
            .push(p.clone());
    }
    let mut out = BTreeMap::new();
    let mut n = 0usize;
    for (layer, wanted) in by_layer {
        let l = &src.layers[layer];
        let blob =
            Digest::parse(&l.descriptor.digest).map_err(|e| BuildError::Other(e.to_string()))?;
        let reader = open_layer(&ctx.store.blob_path(&blob))
            .map_err(|e| BuildError::Other(e.to_string()))?;
        let mut ar = tar::Archive::new(reader);
        let io = |e: std::io::Error| {
            BuildError::Other(format!("reading layer {}: {e}", l.descriptor.digest))
        };
        for e in ar.entries().map_err(io)? {
            let mut e = e.map_err(io)?;
            let raw = e.path().map_err(io)?.to_string_lossy().to_string();
            let Some(norm) = kiln_runtime::layer::view::normalize(&raw) else {
                continue;
            };
            if let Some(names) = wanted.get(&norm) {
                if e.header().entry_type().is_file() {
                    n += 1;
                    let host = dir.join(format!("f{n}"));
                    let mut f = std::fs::File::create(&host).map_err(io)?;
                    std::io::copy(&mut e, &mut f).map_err(io)?;
                    for name in names {
                        out.insert(name.clone(), host.clone());
                    }
                }
            }
        }
    }
    Ok(out)
}

/// What a local ADD source is, by content (REFERENCE §1.6 ADD: detected by content, not name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Archive {
    None,
    Tar,
    GzipTar,
    Bzip2Tar,
    /// xz-compressed; whether it holds a tar is known only after decompressing.
    Xz,
}

/// Reads until `buf` is full or the input ends (decoders may return short reads).
fn read_full(mut r: impl std::io::Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

fn sniff_archive(path: &std::path::Path) -> Archive {
    use std::io::Read;
    let mut head = [0u8; 512];
    let Ok(mut f) = std::fs::File::open(path) else {
        return Archive::None;
    };
    let n = f.read(&mut head).unwrap_or(0);
    let is_tar = |h: &[u8]| h.len() >= 262 && &h[257..262] == b"ustar";
    if n >= 2 && head[..2] == [0x1f, 0x8b] {
        let mut inner = [0u8; 512];
        let m = std::fs::File::open(path)
            .map(|f| {
                flate2::read::GzDecoder::new(f)
                    .read(&mut inner)
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        return if is_tar(&inner[..m]) {
            Archive::GzipTar
        } else {
            Archive::None
        };
    }
    if n >= 3 && &head[..3] == b"BZh" {
        let mut inner = [0u8; 512];
        let m = std::fs::File::open(path)
            .map(|f| read_full(bzip2::read::BzDecoder::new(f), &mut inner))
            .unwrap_or(0);
        return if is_tar(&inner[..m]) {
            Archive::Bzip2Tar
        } else {
            Archive::None
        };
    }
    if n >= 6 && head[..6] == [0xfd, b'7', b'z', b'X', b'Z', 0] {
        return Archive::Xz;
    }
    if is_tar(&head[..n]) {
        Archive::Tar
    } else {
        Archive::None
    }
}

/// Extracts a local archive into `dir` and returns its entries as planned layer items under
/// `dest` (tar -x union semantics; entries that would leave `dest` are skipped).
#[allow(clippy::too_many_arguments)]
fn plan_archive(
    host: &std::path::Path,
    kind: Archive,
    dest: &str,
    dir: &std::path::Path,
    owner: Option<(u32, u32)>,
    planned: &mut BTreeMap<String, Planned>,
    archive_fp: &str,
    extracted: &mut usize,
) -> Result<bool, BuildError> {
    let io = |e: std::io::Error| BuildError::Other(format!("{}: {e}", host.display()));
    let f = std::fs::File::open(host).map_err(io)?;
    let reader: Box<dyn std::io::Read> = match kind {
        Archive::GzipTar => Box::new(flate2::read::GzDecoder::new(f)),
        Archive::Bzip2Tar => Box::new(bzip2::read::BzDecoder::new(f)),
        Archive::Xz => {
            // lzma-rs decodes into a writer: the tar goes to a temporary file first.
            let plain = dir.join("xz-plain.tar");
            let mut out = std::fs::File::create(&plain).map_err(io)?;
            lzma_rs::xz_decompress(&mut std::io::BufReader::new(f), &mut out)
                .map_err(|e| BuildError::Other(format!("{}: xz: {e}", host.display())))?;
            let mut head = [0u8; 512];
            let n = read_full(std::fs::File::open(&plain).map_err(io)?, &mut head);
            if !(n >= 262 && &head[257..262] == b"ustar") {
                return Ok(false);
            }
            Box::new(std::fs::File::open(&plain).map_err(io)?)
        }
        _ => Box::new(f),
    };
    let mut ar = tar::Archive::new(reader);
    // The symlinks this archive made (layer paths): an entry below one would have the layer
    // hold both a link and a directory at one path, which no unpack can apply.
    let mut links: BTreeSet<String> = BTreeSet::new();
    for e in ar.entries().map_err(io)? {
        let mut e = e.map_err(io)?;
        let raw = e.path().map_err(io)?.to_string_lossy().to_string();
        let Some(rel) = kiln_runtime::layer::view::normalize(&raw) else {
            continue;
        };
        if rel.is_empty() {
            continue;
        }
        let layer_path = join(dest, &rel);
        if let Some(l) = links
            .iter()
            .find(|l| layer_path.starts_with(&format!("{l}/")))
        {
            return Err(BuildError::Other(format!(
                "{}: entry {raw} goes through the symlink /{l} the archive itself made; \
                 kiln refuses such archives",
                host.display()
            )));
        }
        let h = e.header().clone();
        let (uid, gid) =
            owner.unwrap_or((h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32));
        let meta = EntryMeta {
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            uid,
            gid,
            mtime: h.mtime().unwrap_or(0) as i64,
            ..Default::default()
        };
        let item = match h.entry_type() {
            tar::EntryType::Directory => Item::Dir,
            tar::EntryType::Symlink => Item::Symlink(
                e.link_name()
                    .map_err(io)?
                    .map(|l| l.to_string_lossy().to_string())
                    .unwrap_or_default(),
            ),
            t if t.is_file() => {
                // Unique across every archive of the step (one ADD may unpack several).
                *extracted += 1;
                let path = dir.join(format!("a{extracted}"));
                let mut out = std::fs::File::create(&path).map_err(io)?;
                let size = std::io::copy(&mut e, &mut out).map_err(io)?;
                Item::File { host: path, size }
            }
            // Another name of a file the archive holds: kept as a hard link (one inode), as
            // BuildKit unpacks it.
            tar::EntryType::Link => {
                let target = e
                    .link_name()
                    .map_err(io)?
                    .and_then(|l| kiln_runtime::layer::view::normalize(&l.to_string_lossy()))
                    .filter(|t| !t.is_empty())
                    .map(|t| join(dest, &t));
                match target {
                    Some(t)
                        if matches!(planned.get(&t).map(|p| &p.item), Some(Item::File { .. })) =>
                    {
                        Item::Hardlink(t)
                    }
                    _ => {
                        return Err(BuildError::Other(format!(
                            "{}: hard link {raw} names a file the archive does not hold before it",
                            host.display()
                        )));
                    }
                }
            }
            tar::EntryType::Fifo => Item::Special(kiln_runtime::layer::diff::Special::Fifo),
            t @ (tar::EntryType::Char | tar::EntryType::Block) => {
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                Item::Special(if t == tar::EntryType::Char {
                    kiln_runtime::layer::diff::Special::Char { major, minor }
                } else {
                    kiln_runtime::layer::diff::Special::Block { major, minor }
                })
            }
            // Sockets and extension headers carry nothing to unpack.
            _ => continue,
        };
        if matches!(item, Item::Symlink(_)) {
            links.insert(layer_path.clone());
        } else {
            links.remove(&layer_path);
        }
        planned.insert(
            layer_path,
            Planned {
                item,
                meta,
                fingerprint: format!("archive {archive_fp} {rel} {:o}", h.mode().unwrap_or(0)),
            },
        );
    }
    Ok(true)
}

/// Seconds since the epoch of an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, mon, year, time, ..] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == mon)? as i64
        + 1;
    let (d, y): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let t: Vec<i64> = time.split(':').filter_map(|x| x.parse().ok()).collect();
    let [h, mi, se] = t.as_slice() else {
        return None;
    };
    // Days from civil (Howard Hinnant's algorithm).
    let yy = if month <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

/// Downloads an ADD URL into `dir`, checking `--checksum`; the entry and its file name.
fn download(
    url: &str,
    checksum: Option<&str>,
    dir: &std::path::Path,
    n: usize,
    span: Span,
) -> Result<(SrcEntry, String), BuildError> {
    use sha2::Digest as _;
    let err = |m: String| BuildError::at(span, format!("ADD {url}: {m}"));
    let resp = ureq::get(url).call().map_err(|e| err(e.to_string()))?;
    let mtime = resp
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
        .unwrap_or(0);
    let host = dir.join(format!("url{n}"));
    let mut out = std::fs::File::create(&host).map_err(|e| err(e.to_string()))?;
    let mut reader = resp.into_body().into_reader();
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let k = std::io::Read::read(&mut reader, &mut buf).map_err(|e| err(e.to_string()))?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        std::io::Write::write_all(&mut out, &buf[..k]).map_err(|e| err(e.to_string()))?;
        size += k as u64;
    }
    let digest = Digest::from_sha256(hasher);
    if let Some(want) = checksum {
        if want != digest.to_string() {
            return Err(err(format!(
                "checksum mismatch: expected {want}, got {digest}"
            )));
        }
    }
    let path_part = url.split(['?', '#']).next().unwrap_or(url);
    let name = path_part
        .split_once("://")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split_once('/').map(|(_, p)| p))
        .and_then(|p| p.rsplit('/').next())
        .filter(|n| !n.is_empty())
        .unwrap_or("")
        .to_string();
    // Mode 0600 and the server's Last-Modified, as BuildKit writes downloads.
    let entry = SrcEntry {
        path: name.clone(),
        kind: SrcKind::File { size, host },
        mode: 0o600,
        mtime,
        owner: None,
        link: None,
        fingerprint: format!("url {digest}"),
    };
    Ok((entry, name))
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
            SrcKind::File { size, host } => Item::File {
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
    let inputs: BTreeMap<String, Digest> = planned
        .iter()
        .map(|(p, e)| (p.clone(), Digest::of(e.fingerprint.as_bytes())))
        .collect();
    commit_layer(
        ctx,
        st,
        Step::new("CONTEXT"),
        inputs,
        planned,
        (0, 0),
        &format!("FROM context {name}"),
        &format!("FROM {name} (build context {})", dir.display()),
        false,
    )?;
    Ok(())
}

/// A context source path: relative, cleaned, unable to climb out (`/a`, `../a` → `a`).
pub(crate) fn context_path(src: &str) -> String {
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
    let excludes: Vec<String> = c
        .exclude
        .iter()
        .map(|e| ctx.expand(st, e, span))
        .collect::<Result<_, _>>()?;
    let exclude = crate::context::ignore::Matcher::new(&excludes)
        .map_err(|e| BuildError::at(span, format!("{cmd} --exclude: {e}")))?;
    // --link: the layer does not depend on what is below it, so destinations are resolved in an
    // empty filesystem (no symlink of the image is followed; parents are always written).
    let empty = kiln_runtime::layer::view::View::default();
    let below = if c.link { &empty } else { &st.view };
    let is_url = |s: &str| s.starts_with("http://") || s.starts_with("https://");
    let is_git = |s: &str| s.starts_with("git@") || s.ends_with(".git") || s.contains(".git#");
    if c.is_add && c.sources.iter().any(|s| is_git(s)) {
        return Err(BuildError::at(
            span,
            "ADD of a git repository is not supported yet (issue 3 in progress)",
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
    let dest_slash = dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/.");
    // A destination that is a link leads to what it names, inside the root, as in BuildKit
    // (into a linked directory; over a linked file's target, the link itself kept).
    let dest_rel = fsutil::resolve_all_in_root(below, &abs_dest);
    let mode_of = |mode: u32, is_dir: bool| -> Result<u32, BuildError> {
        match &chmod {
            None => Ok(mode),
            Some(spec) => fsutil::apply_chmod(spec, mode, is_dir)
                .ok_or_else(|| BuildError::at(span, format!("invalid chmod parameter {spec:?}"))),
        }
    };
    let now = ctx.now;
    let all_sources: Vec<String> = c
        .sources
        .iter()
        .map(|s| ctx.expand(st, s, span))
        .collect::<Result<_, _>>()?;
    let (urls, sources): (Vec<String>, Vec<String>) =
        all_sources.into_iter().partition(|s| c.is_add && is_url(s));
    if !c.is_add && c.checksum.is_some() {
        return Err(BuildError::at(span, "--checksum is only for ADD"));
    }
    if c.checksum.is_some() && (urls.is_empty() || !sources.is_empty()) {
        return Err(BuildError::at(
            span,
            "ADD --checksum needs a single http(s) source",
        ));
    }

    // Where the sources come from: the context, another stage or image, or a named context
    // (`--from`), as the graph resolved it.
    let (mut from_state, mut named_dir) = (None, None);
    if let Some(f) = &c.from {
        match from_source(ctx, stage, ins, 0, f, done, &format!("{cmd} --from"))? {
            From::State(s) => from_state = Some(*s),
            From::Dir(d) => named_dir = Some(d),
        }
    }
    let (entries, origin_key) = match (&from_state, &named_dir) {
        (Some(src), _) => (stage_entries(src), src.key.to_string()),
        (None, Some(snap)) => (
            context_entries(snap),
            format!("named context {}", snap.root.display()),
        ),
        (None, None) if sources.is_empty() => (Vec::new(), "context".to_string()),
        (None, None) => (context_entries(ctx.snapshot()?), "context".to_string()),
    };
    let where_ = if c.from.is_some() {
        "the source stage"
    } else {
        "the build context"
    };

    // Select sources: (path in the source, the part kept under the destination with --parents).
    let mut picks: Vec<(String, Option<String>)> = Vec::new();
    let mut wildcard = false;
    for s in &sources {
        // `./` inside a --parents source marks where the kept structure starts.
        let marker = if c.parents {
            s.find("/./").map(|i| context_path(&s[..i]).len())
        } else {
            None
        };
        let p = context_path(s);
        let kept = |path: &str| -> Option<String> {
            if !c.parents {
                return None;
            }
            Some(match marker {
                Some(0) | None => path.to_string(),
                Some(n) => path
                    .get(n..)
                    .unwrap_or("")
                    .trim_start_matches('/')
                    .to_string(),
            })
        };
        if has_wildcard(&p) {
            // A pattern that matches nothing copies nothing, and is no error, as BuildKit's
            // `AllowEmptyWildcard` (a plain path that is missing still is).
            wildcard = true;
            for e in &entries {
                if filepath_match(&p, &e.path).map_err(|e| BuildError::at(span, e.to_string()))? {
                    picks.push((e.path.clone(), kept(&e.path)));
                }
            }
        } else if p.is_empty() || entries.iter().any(|e| e.path == p) {
            let k = kept(&p);
            picks.push((p, k));
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
    let multiple = picks.len() + urls.len() + c.heredoc_sources.len() > 1 || wildcard || c.parents;
    let dest_is_dir = dest_slash || multiple || below.is_dir(&dest_rel);
    if multiple && !dest_slash && !below.is_dir(&dest_rel) {
        return Err(BuildError::at(
            span,
            format!(
                "when using {cmd} with more than one source file, the destination must be a directory and end with a /"
            ),
        ));
    }

    // Plan the layer: target path → source entry.
    let by_path: BTreeMap<&str, &SrcEntry> = entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut chosen: BTreeMap<String, &SrcEntry> = BTreeMap::new();
    // Destination → the destination of the first name of the same file (hard links).
    let mut hard_links: BTreeMap<String, String> = BTreeMap::new();
    let mut created_dirs: BTreeSet<String> = BTreeSet::new();
    for (named, kept) in &picks {
        // A source named (or matched) itself that is a symlink is followed, inside its root, as
        // BuildKit's FollowSymlinks: its target's content is copied under the link's name.
        // Links inside a copied directory stay links.
        let pick = &follow_source(&by_path, named);
        let entry = by_path.get(pick.as_str()).copied();
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
            Some(k) if is_dir => join(&dest_rel, k),
            _ => dest_rel.clone(),
        };
        if is_dir {
            // A directory copies its contents into the destination, which is created (0755,
            // owned by --chown) when missing, as BuildKit's MkdirAll: the source directory's
            // own mode and time are not copied (a read-only source dir gives a 0755 dest).
            if entry.is_some() && !below.is_dir(&base_dest) && !base_dest.is_empty() {
                created_dirs.insert(base_dest.clone());
            }
            let prefix = if pick.is_empty() {
                String::new()
            } else {
                format!("{pick}/")
            };
            // Names of one file within this directory stay one file (BuildKit keeps hard
            // links inside a copied tree; separate sources are copied separately).
            let mut first_name: BTreeMap<&str, String> = BTreeMap::new();
            for e in entries
                .iter()
                .filter(|e| e.path.starts_with(&prefix) && e.path != *pick)
            {
                let rel = &e.path[prefix.len()..];
                if exclude.excludes(rel) {
                    continue;
                }
                let target = join(&base_dest, rel);
                if let Some(id) = e.link.as_deref() {
                    match first_name.get(id) {
                        Some(first) => {
                            hard_links.insert(target.clone(), first.clone());
                        }
                        None => {
                            first_name.insert(id, target.clone());
                        }
                    }
                }
                chosen.insert(target, e);
            }
        } else if let Some(e) = entry {
            let base = named.rsplit('/').next().unwrap_or(named);
            if exclude.excludes(base) || exclude.excludes(named) {
                continue;
            }
            let target = match kept {
                Some(k) => join(&dest_rel, k),
                None if dest_is_dir => join(&dest_rel, base),
                None => dest_rel.clone(),
            };
            chosen.insert(target, e);
        }
    }
    // URLs are downloaded into the step's temporary directory.
    let tmpdir =
        ctx.store
            .root()
            .join("tmp")
            .join(format!("copy-{}-{}", std::process::id(), stage));
    let mut downloaded: Vec<(String, SrcEntry)> = Vec::new();
    for (n, url) in urls.iter().enumerate() {
        std::fs::create_dir_all(&tmpdir)
            .map_err(|e| BuildError::Other(format!("{}: {e}", tmpdir.display())))?;
        let checksum = match &c.checksum {
            Some(cs) => Some(ctx.expand(st, cs, span)?),
            None => None,
        };
        let (entry, name) = download(url, checksum.as_deref(), &tmpdir, n, span)?;
        let target = if dest_is_dir {
            if name.is_empty() {
                let _ = std::fs::remove_dir_all(&tmpdir);
                return Err(BuildError::at(
                    span,
                    format!(
                        "ADD {url}: cannot take a file name from the URL; give a destination file"
                    ),
                ));
            }
            join(&dest_rel, &name)
        } else {
            dest_rel.clone()
        };
        downloaded.push((target, entry));
    }
    for (target, entry) in &downloaded {
        chosen.insert(target.clone(), entry);
    }
    // Files from another stage are fetched from its layers first.
    let tmpdir =
        ctx.store
            .root()
            .join("tmp")
            .join(format!("copy-{}-{}", std::process::id(), stage));
    let fetched = match &from_state {
        Some(src) => {
            let wanted: BTreeSet<String> = chosen
                .values()
                .filter(|e| matches!(e.kind, SrcKind::StageFile { .. }))
                .map(|e| e.path.clone())
                .collect();
            std::fs::create_dir_all(&tmpdir)
                .map_err(|e| BuildError::Other(format!("{}: {e}", tmpdir.display())))?;
            extract_stage_files(ctx, src, &wanted, &tmpdir)?
        }
        None => BTreeMap::new(),
    };
    let mut planned: BTreeMap<String, Planned> = BTreeMap::new();
    let mut extracted = 0usize;
    for (target, e) in &chosen {
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
                    std::fs::create_dir_all(&tmpdir)
                        .map_err(|err| BuildError::Other(format!("{}: {err}", tmpdir.display())))?;
                    // An archive always unpacks into the destination as a directory; an xz file
                    // that turns out not to hold a tar is copied as it is.
                    if plan_archive(
                        host,
                        kind,
                        &dest_rel,
                        &tmpdir,
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
            SrcKind::File { size, host } => (
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
                .get(first.as_str())
                .is_some_and(|f| matches!(f.kind, SrcKind::File { .. } | SrcKind::StageFile { .. }))
        });
        let (item, fingerprint) = match (linked_to, &item) {
            (Some(first), Item::File { .. }) => (
                Item::Hardlink(first.clone()),
                format!("{} link {first}", e.fingerprint),
            ),
            _ => (item, e.fingerprint.clone()),
        };
        planned.insert(
            target.clone(),
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
    }
    for dir in created_dirs {
        planned.entry(dir).or_insert_with(|| Planned {
            item: Item::Dir,
            meta: EntryMeta {
                mode: 0o755,
                uid,
                gid,
                mtime: ctx.now,
                ..Default::default()
            },
            fingerprint: "dir 755".into(),
        });
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
        let _ = std::fs::remove_dir_all(&tmpdir);
        return Err(BuildError::at(span, format!("{cmd}: nothing to copy")));
    }

    let step = Step::new(cmd)
        .field("dest", format!("/{dest_rel}"))
        .field("owner", format!("{uid}:{gid}"))
        .field("chmod", chmod.clone().unwrap_or_default())
        .field("from", origin_key);
    let inputs: BTreeMap<String, Digest> = planned
        .iter()
        .map(|(p, e)| (p.clone(), Digest::of(e.fingerprint.as_bytes())))
        .collect();
    let step = if c.link {
        step.field("link", "true")
    } else {
        step
    };
    let result = commit_layer(
        ctx,
        st,
        step,
        inputs,
        planned,
        (uid, gid),
        name,
        &format!("{} # buildkit", ins.text),
        c.link,
    );
    let _ = std::fs::remove_dir_all(&tmpdir);
    result
}

/// Creates WORKDIR's directory when it is missing. Returns whether the layer was cached.
pub(crate) fn mkdir_workdir(
    ctx: &Ctx<'_>,
    st: &mut StageState,
    abs: &str,
    name: &str,
    span: Span,
) -> Result<bool, BuildError> {
    let rel = fsutil::resolve_all_in_root(&st.view, abs);
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
        false,
    )
}

/// Writes (or reuses from the cache) the layer holding `planned` plus any missing parents,
/// adds it to the stage, and records history.
#[allow(clippy::too_many_arguments)]
fn commit_layer(
    ctx: &Ctx<'_>,
    st: &mut StageState,
    step: Step,
    inputs: BTreeMap<String, Digest>,
    mut planned: BTreeMap<String, Planned>,
    owner: (u32, u32),
    name: &str,
    created_by: &str,
    link: bool,
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
            if (link || !st.view.is_dir(parent)) && !planned.contains_key(parent) {
                parents.insert(parent.to_string());
            }
            p = parent;
        }
    }
    // Context files under another name in the image (`COPY a.txt /a`), for the explanation.
    let context_root = ctx
        .snapshot
        .get()
        .and_then(|s| s.as_ref().ok())
        .map(|s| &s.root);
    let sources: BTreeMap<String, String> = planned
        .iter()
        .filter_map(|(p, e)| {
            let Item::File { host, .. } = &e.item else {
                return None;
            };
            let rel = host.strip_prefix(context_root?).ok()?.to_string_lossy();
            (rel != p.as_str()).then(|| (p.clone(), rel.into_owned()))
        })
        .collect();
    // A --link layer does not depend on the state below it: its key has no parent.
    let (key, cached) = ctx.lookup(
        name,
        if link { None } else { Some(&st.key) },
        &step,
        (&inputs, sources),
    )?;
    let description = ctx.description(name, st);
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
            // Hard links: the name that comes first in the layer holds the content, the others
            // link to it (a tar link entry must follow the file it names).
            let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (path, p) in &all {
                if let Item::Hardlink(t) = &p.item {
                    groups.entry(t.clone()).or_default().push(path.clone());
                }
            }
            for (t, links) in groups {
                let first = links.iter().chain([&t]).min().cloned().unwrap_or_default();
                if first != t {
                    if let Some(content) = all.get(&t).map(|p| p.item.clone()) {
                        for member in links.iter().chain([&t]) {
                            if let Some(p) = all.get_mut(member) {
                                p.item = if *member == first {
                                    content.clone()
                                } else {
                                    Item::Hardlink(first.clone())
                                };
                            }
                        }
                    }
                }
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
                    Item::Hardlink(t) => w.hardlink(path, t, &p.meta).map_err(io)?,
                    Item::Special(kind) => w.special(path, *kind, &p.meta).map_err(io)?,
                }
            }
            let (info, mut out) = w.finish().map_err(io)?;
            std::io::Write::flush(&mut out).map_err(io)?;
            drop(out);
            ctx.store.commit_blob(blob, &info.diff_id)?;
            ctx.store
                .record_layer_entries(&info.diff_id, &info.entries)?;
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
    adopt_layer(ctx, st, &entry, key, created_by)?;
    Ok(hit)
}

/// Adds a layer (new or from the cache) to the stage: view from the layer's index (its tar is
/// not read again), descriptor, diff_id, cache key, history, time.
pub(crate) fn adopt_layer(
    ctx: &Ctx<'_>,
    st: &mut StageState,
    entry: &CacheEntry,
    key: CacheKey,
    created_by: &str,
) -> Result<(), BuildError> {
    let index = st.layers.len();
    st.view
        .apply_entries(index, &ctx.store.layer_entries(&entry.layer)?);
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
    Ok(())
}
