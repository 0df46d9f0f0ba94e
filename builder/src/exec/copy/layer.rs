//! Writing (or reusing from the cache) the layer a COPY, ADD or WORKDIR plans, and adopting
//! it into the stage. A new layer is written once: its tar goes to the blob (on a thread of its
//! own) and, at the same time, to an unpacking thread that makes its overlay lower directory,
//! linking the files the same step wrote in the last build where they are unchanged.

use super::*;

/// Writes (or reuses from the cache) the layer holding `planned` plus its parents,
/// adds it to the stage, and records history. `files`: the inputs file by file (what the
/// record keeps); `by_source`: the key's inputs where the copy is keyed by source instead.
#[allow(clippy::too_many_arguments)]
pub(in crate::exec) fn commit_layer(
    ctx: &Ctx<'_>,
    st: &mut StageState,
    step: Step,
    (files, by_source): (BTreeMap<String, Digest>, Option<BTreeMap<String, Digest>>),
    planned: BTreeMap<BString, Planned>,
    owner: (u32, u32),
    name: &str,
    created_by: &str,
    link: bool,
) -> Result<bool, BuildError> {
    st.sync_view(ctx.store)?;
    let view = st.view()?;
    // The parents of what is written: missing ones are made (0755, the copy's owner); existing
    // ones are carried with their metadata as the stage has it, as BuildKit's differ writes
    // them. Without them the unpacked layer would hold a directory made up on the spot, and
    // overlayfs would show its 0755 root:root over the real one (`COPY f /tmp/` turned /tmp
    // from 1777 into 0755, /root from 0700 into 0755).
    let mut parents: BTreeMap<BString, Option<EntryMeta>> = BTreeMap::new();
    // Each parent is looked at once: a directory of 30,000 files has a few hundred parents.
    let mut seen: BTreeSet<&[u8]> = BTreeSet::new();
    for path in planned.keys() {
        let mut p = path.as_slice();
        while let Some(slash) = p.rfind_byte(b'/') {
            let parent = &p[..slash];
            if !seen.insert(parent) {
                break;
            }
            if !planned.contains_key(parent.as_bstr()) {
                let existing = match view.get(parent) {
                    Some(n) if !link && n.kind == kiln_runtime::layer::view::NodeKind::Dir => {
                        // Its time is the write's, as a directory written into has it
                        // (BuildKit's layer shows the build's time there too).
                        Some(EntryMeta {
                            mode: n.mode,
                            uid: n.uid,
                            gid: n.gid,
                            mtime: ctx.now,
                            ..Default::default()
                        })
                    }
                    _ => None,
                };
                parents.insert(parent.into(), existing);
            }
            p = parent;
        }
    }
    // Context files under another name in the image (`COPY a.txt /a`), for the explanation.
    // The root's text and a `/`: a file's context path is what follows in its host path.
    let context_root = ctx
        .snapshot
        .get()
        .and_then(|s| s.as_ref().ok())
        .and_then(|s| s.root.to_str())
        .map(|r| format!("{}/", r.trim_end_matches('/')));
    let sources: BTreeMap<String, String> = planned
        .iter()
        .filter_map(|(p, e)| {
            let Item::File { host, .. } = &e.item else {
                return None;
            };
            let rel = host.to_str()?.strip_prefix(context_root.as_deref()?)?;
            (rel.as_bytes() != p.as_slice())
                .then(|| (fsutil::key_text(p).into_owned(), rel.to_string()))
        })
        .collect();
    // A --link layer does not depend on the state below it: its key has no parent.
    let (key, cached) = ctx.lookup(
        name,
        if link { None } else { Some(&st.key) },
        &step,
        by_source.as_ref().unwrap_or(&files),
        Recorded::Files(&files, sources),
    )?;
    let description = ctx.description(name, st);
    let (entry, hit) = match cached {
        Some(e) => (e, true),
        None => {
            let created = ctx.now;
            let blob = ctx.store.new_blob_file()?;
            // Unpacked as it is written, next to the files of the layer this step made in the
            // last build: the RUN after it finds its lower layer ready, unchanged files linked.
            let mut unpack = start_unpack(ctx, name, &key);
            let io =
                |e: std::io::Error| BuildError::Other(format!("writing the layer of {name}: {e}"));
            let mut w = LayerWriter::new(
                std::io::BufWriter::with_capacity(
                    1 << 20,
                    Tee {
                        blob: BackgroundFile::start(blob.file.try_clone().map_err(io)?)
                            .map_err(io)?,
                        unpack: unpack.as_mut().and_then(|u| u.background.as_mut()),
                    },
                ),
                ctx.opts.source_date_epoch,
            );
            let mut all: BTreeMap<BString, Planned> = planned.clone();
            for (p, existing) in &parents {
                all.insert(
                    p.clone(),
                    Planned {
                        item: Item::Dir,
                        meta: existing.clone().unwrap_or(EntryMeta {
                            mode: 0o755,
                            uid: owner.0,
                            gid: owner.1,
                            mtime: created,
                            ..Default::default()
                        }),
                        fingerprint: String::new(),
                    },
                );
            }
            // Hard links: the name that comes first in the layer holds the content, the others
            // link to it (a tar link entry must follow the file it names).
            let mut groups: BTreeMap<BString, Vec<BString>> = BTreeMap::new();
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
            let mut sources = SourceFiles::default();
            for (path, p) in &all {
                match &p.item {
                    Item::Dir => w.dir(path, &p.meta).map_err(io)?,
                    Item::File { host, size } => {
                        let f = sources
                            .open(host)
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
            let (info, out) = w.finish().map_err(io)?;
            let tee = out.into_inner().map_err(|e| io(e.into_error()))?;
            tee.blob.finish().map_err(io)?;
            ctx.store.commit_blob(blob, &info.diff_id)?;
            ctx.store
                .record_layer_entries(&info.diff_id, &info.entries)?;
            if let Some(u) = unpack {
                u.place(ctx, st, &info.diff_id)?;
            }
            let e = CacheEntry {
                key: key.to_string(),
                layer: info.diff_id,
                size: info.size,
                description,
                created,
                origin: None,
                remote: None,
            };
            ctx.store.cache_put(&e)?;
            (e, false)
        }
    };
    adopt_layer(st, &entry, key, created_by)?;
    Ok(hit)
}

/// Opens the files a layer copies, each relative to its directory (kept open while the files
/// come from it, as they do in path order): one name looked up per file, not a whole path.
#[derive(Default)]
struct SourceFiles {
    dir: Option<(std::path::PathBuf, rustix::fd::OwnedFd)>,
}

impl SourceFiles {
    /// Opens `host` for reading; a symlink that took the place of the file since the context
    /// was read is refused (O_NOFOLLOW), never followed out of the context.
    fn open(&mut self, host: &std::path::Path) -> std::io::Result<std::fs::File> {
        let (Some(parent), Some(name)) = (host.parent(), host.file_name()) else {
            return std::fs::File::open(host);
        };
        let dir = match self.dir.take() {
            Some((p, fd)) if p == parent => (p, fd),
            _ => {
                let fd = rustix::fs::open(
                    parent,
                    rustix::fs::OFlags::PATH
                        | rustix::fs::OFlags::DIRECTORY
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )?;
                (parent.to_path_buf(), fd)
            }
        };
        let fd = rustix::fs::openat(
            &self.dir.insert(dir).1,
            name,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        Ok(std::fs::File::from(fd))
    }
}

/// The layer's bytes to its blob file and to the unpacking thread. An unpacking that fails only
/// stops the second: the layer is then unpacked from its blob when a step needs it.
struct Tee<'a> {
    blob: BackgroundFile,
    unpack: Option<&'a mut kiln_runtime::layer::unpack::Background>,
}

impl std::io::Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.blob.send(buf)?;
        if let Some(u) = &mut self.unpack {
            if u.write_all(buf).is_err() {
                self.unpack = None;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A file written on a thread of its own from the chunks handed to it (a layer's blob: the
/// kernel's copy of 200 MB into the page cache runs beside the reading and hashing of the next
/// files instead of after them). At most a few chunks wait, so memory stays bounded.
struct BackgroundFile {
    chunks: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl BackgroundFile {
    fn start(mut file: std::fs::File) -> std::io::Result<BackgroundFile> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let thread = std::thread::Builder::new()
            .name("blob".into())
            .spawn(move || {
                for chunk in rx {
                    std::io::Write::write_all(&mut file, &chunk)?;
                }
                Ok(())
            })?;
        Ok(BackgroundFile {
            chunks: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hands `buf` over; a failed write (a full disk) is reported here once the thread stopped.
    fn send(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match &self.chunks {
            Some(tx) if tx.send(buf.to_vec()).is_ok() => Ok(()),
            _ => {
                self.chunks = None;
                self.wait()?;
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
        }
    }

    fn wait(&mut self) -> std::io::Result<()> {
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(std::io::Error::other("the blob writing thread failed")),
            None => Ok(()),
        }
    }

    /// Ends the input and waits until everything is written.
    fn finish(mut self) -> std::io::Result<()> {
        self.chunks = None;
        self.wait()
    }
}

impl Drop for BackgroundFile {
    fn drop(&mut self) {
        self.chunks = None;
        let _ = self.wait();
    }
}

/// A layer being unpacked as it is written, into `dir` in `tmp/`. Dropped before it is placed
/// (the write failed), the unpacking is waited for and its directory removed.
struct Unpacking {
    dir: std::path::PathBuf,
    background: Option<kiln_runtime::layer::unpack::Background>,
}

impl Drop for Unpacking {
    fn drop(&mut self) {
        if let Some(b) = self.background.take() {
            let _ = b.finish();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Starts unpacking the layer step `name` writes (the files of the layer the last build made at
/// this step as donor). `None` when it cannot start: the layer is then unpacked from its blob
/// when needed.
fn start_unpack(ctx: &Ctx<'_>, name: &str, key: &CacheKey) -> Option<Unpacking> {
    // The donor: a directory of that layer and the digests of its files (without them, none).
    let donor = ctx.previous_layer(name).and_then(|l| {
        let dir = ctx.store.unpacked_dir_of(&l).ok().flatten()?;
        let files = ctx.store.layer_files(&l).ok().filter(|f| !f.is_empty())?;
        Some((dir, files))
    });
    let dir = ctx.store.unpack_dir(&key.0).ok()?;
    match kiln_runtime::layer::unpack::Background::start(dir.clone(), donor) {
        Ok(b) => Some(Unpacking {
            dir,
            background: Some(b),
        }),
        Err(_) => {
            let _ = std::fs::remove_dir_all(&dir);
            None
        }
    }
}

impl Unpacking {
    /// Waits for the unpacking of the layer `diff_id` and places it as the unpacked layer of the
    /// stage's stack with it on top; an unpacking that failed is dropped.
    fn place(mut self, ctx: &Ctx<'_>, st: &StageState, diff_id: &Digest) -> Result<(), BuildError> {
        let Some(background) = self.background.take() else {
            return Ok(());
        };
        let diff_ids: Vec<Digest> = st
            .layers
            .iter()
            .map(|l| l.diff_id)
            .chain([*diff_id])
            .collect();
        match (background.finish(), oci::chain_id(&diff_ids)) {
            (Ok(u), Some(chain)) => {
                ctx.store.record_layer_files(diff_id, &u.files)?;
                let made = ctx.store.place_unpacked(&self.dir, &chain, Some(u.size))?;
                ctx.store
                    .note_unpacked(&[(chain.hex().to_string(), diff_id.to_string(), made)])?;
            }
            _ => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
        Ok(())
    }
}

/// Adds a layer (new or from the cache) to the stage: descriptor, diff_id, cache key, history,
/// time, and its entries to the view when next read (from the layer's index: its tar is not
/// read again).
pub(crate) fn adopt_layer(
    st: &mut StageState,
    entry: &CacheEntry,
    key: CacheKey,
    created_by: &str,
) -> Result<(), BuildError> {
    // A remote hit's layer is the registry's blob, as a pulled base image's layers are: its
    // files are fetched when a later step needs them, and a push to that registry mounts it.
    let descriptor = entry.remote.clone().unwrap_or_else(|| oci::Descriptor {
        media_type: oci::MEDIA_LAYER_TAR.into(),
        digest: entry.layer.to_string(),
        size: entry.size,
        annotations: BTreeMap::new(),
        platform: None,
    });
    let blob = Digest::parse(&descriptor.digest).map_err(|e| BuildError::Other(e.to_string()))?;
    st.view_later(st.layers.len(), blob);
    st.add_layer(
        LayerRef {
            descriptor,
            diff_id: entry.layer,
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
