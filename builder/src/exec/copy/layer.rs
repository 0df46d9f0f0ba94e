//! Writing (or reusing from the cache) the layer a COPY, ADD or WORKDIR plans, and adopting
//! it into the stage.

use super::*;

/// Writes (or reuses from the cache) the layer holding `planned` plus any missing parents,
/// adds it to the stage, and records history. `files`: the inputs file by file (what the
/// record keeps); `by_source`: the key's inputs where the copy is keyed by source instead.
#[allow(clippy::too_many_arguments)]
pub(super) fn commit_layer(
    ctx: &Ctx<'_>,
    st: &mut StageState,
    step: Step,
    (files, by_source): (BTreeMap<String, Digest>, Option<BTreeMap<String, Digest>>),
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
    st.sync_view(ctx.store)?;
    let view = st.view()?;
    let mut parents: BTreeSet<String> = BTreeSet::new();
    // Each parent is looked at once: a directory of 30,000 files has a few hundred parents.
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for path in planned.keys() {
        let mut p = path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if !seen.insert(parent) {
                break;
            }
            if (link || !view.is_dir(parent)) && !planned.contains_key(parent) {
                parents.insert(parent.to_string());
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
            (rel != p.as_str()).then(|| (p.clone(), rel.to_string()))
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
    adopt_layer(st, &entry, key, created_by)?;
    Ok(hit)
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
    st.view_later(st.layers.len(), entry.layer);
    st.add_layer(
        LayerRef {
            descriptor: oci::Descriptor {
                media_type: oci::MEDIA_LAYER_TAR.into(),
                digest: entry.layer.to_string(),
                size: entry.size,
                annotations: BTreeMap::new(),
                platform: None,
            },
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
