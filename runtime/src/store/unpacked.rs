//! Unpacked layers, keyed by ChainID and shared by every build and container:
//! `ROOT/layers/<chain-id hex>/` holds one layer in overlayfs lower-layer form. A layer is
//! unpacked into `tmp/` and renamed into place, so no process ever sees a half-unpacked layer;
//! when two processes or threads unpack the same one, the first rename wins and the other copy
//! is dropped.
//!
//! Each directory has a row (`unpacked` table: its layer, size, last use) for `kiln cache ls`
//! and prune. A directory is only ever removed whole: renamed into `tmp/` first, so no build
//! sees a half-removed layer, and under `build.lock` held exclusively, so no build or
//! container start is choosing its layers meanwhile.

use std::path::{Path, PathBuf};

use super::{Store, StoreError, db::now, io_err};
use crate::{
    digest::Digest,
    layer::{unpack::unpack_for_overlay, view::open_layer},
    oci::chain_id,
};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS unpacked (
    chain     TEXT PRIMARY KEY,
    diff_id   TEXT NOT NULL,
    size      INTEGER NOT NULL,
    created   INTEGER NOT NULL,
    last_used INTEGER NOT NULL,
    uses      INTEGER NOT NULL DEFAULT 0
);
";

/// One unpacked layer directory (`ROOT/layers/<chain>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unpacked {
    /// The ChainID's hex: the directory's name.
    pub chain: String,
    /// The top layer's diff_id (`sha256:...`), when recorded.
    pub diff_id: Option<String>,
    pub size: u64,
    pub created: i64,
    pub last_used: i64,
    pub uses: u64,
}

impl Store {
    /// The unpacked directories of a layer stack (`blobs` bottom first, `diff_ids` alike), as
    /// overlayfs `lowerdir` wants them: top first. The layers missing are unpacked side by
    /// side (each into a directory of its own, so none waits for another: a freshly pulled
    /// image of several large layers is ready in the time of its largest).
    pub fn unpacked_layers(
        &self,
        blobs: &[Digest],
        diff_ids: &[Digest],
    ) -> Result<Vec<PathBuf>, StoreError> {
        // (chain, diff_id, index of the layer)
        let mut stack = Vec::new();
        for i in 0..blobs.len() {
            if let Some(chain) = chain_id(&diff_ids[..=i]) {
                stack.push((chain, i));
            }
        }
        let missing: Vec<usize> = (0..stack.len())
            .filter(|&k| !self.is_unpacked(&stack[k].0))
            .collect();
        let made: std::sync::Mutex<std::collections::BTreeMap<usize, u64>> = Default::default();
        crate::parallel::for_each(&missing, 0, |&k| {
            let (chain, i) = &stack[k];
            if let Some(size) = self.unpack_one(chain, &blobs[*i])? {
                made.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(k, size);
            }
            Ok::<(), StoreError>(())
        })?;
        let made = made.into_inner().unwrap_or_else(|p| p.into_inner());
        let chains: Vec<(Digest, Digest)> =
            stack.iter().map(|(chain, i)| (*chain, blobs[*i])).collect();
        self.fill_made_up_parents(&chains, made.keys().copied())?;
        let used: Vec<(String, String, Option<u64>)> = stack
            .iter()
            .enumerate()
            .map(|(k, (chain, i))| {
                (
                    chain.hex().to_string(),
                    diff_ids[*i].to_string(),
                    made.get(&k).copied(),
                )
            })
            .collect();
        self.note_unpacked(&used)?;
        Ok(stack
            .iter()
            .rev()
            .map(|(chain, _)| self.root.join("layers").join(chain.hex()))
            .collect())
    }

    /// Gives every directory a freshly unpacked layer holds without its tar naming it (made up
    /// by the unpacker as a parent of an entry, 0755 root) the metadata the layers below give
    /// it, as containerd's applier does: overlayfs shows the topmost layer's directory, so a made
    /// up `/tmp` would hide the image's 1777 one. `stack` is (ChainID, blob) bottom first;
    /// `fresh` the positions this process just unpacked (no one else uses them yet). Layers from
    /// docker and BuildKit name every parent; some tools' do not.
    pub(crate) fn fill_made_up_parents(
        &self,
        stack: &[(Digest, Digest)],
        fresh: impl IntoIterator<Item = usize>,
    ) -> Result<(), StoreError> {
        let mut fresh: Vec<usize> = fresh.into_iter().filter(|&k| k > 0).collect();
        fresh.sort_unstable();
        if fresh.is_empty() {
            return Ok(());
        }
        let mut below = crate::layer::view::View::default();
        let mut applied = 0;
        for k in fresh {
            while applied < k {
                below.apply_entries(applied, &self.layer_entries(&stack[applied].1)?);
                applied += 1;
            }
            let entries = self.layer_entries(&stack[k].1)?;
            let named: std::collections::BTreeSet<&[u8]> =
                entries.iter().map(|e| e.path.as_slice()).collect();
            let mut made_up = std::collections::BTreeSet::new();
            for e in &entries {
                let mut p = e.path.as_slice();
                while let Some(slash) = p.iter().rposition(|&b| b == b'/') {
                    let parent = &p[..slash];
                    if !named.contains(parent) {
                        made_up.insert(parent);
                    }
                    p = parent;
                }
            }
            let dir = self.root.join("layers").join(stack[k].0.hex());
            for p in made_up {
                if let Some(n) = below
                    .get(p)
                    .filter(|n| n.kind == crate::layer::view::NodeKind::Dir)
                {
                    // Best effort: a path this layer made something else than a plain
                    // directory chain (a link on the way) keeps what the unpacker made.
                    let _ = set_dir_meta(&dir, p, (n.mode, n.uid, n.gid, n.mtime));
                }
            }
        }
        Ok(())
    }

    /// Unpacks `blob` as the layer whose ChainID is `chain`; its size when this call made the
    /// directory (`None`: another process or thread placed it first).
    fn unpack_one(&self, chain: &Digest, blob: &Digest) -> Result<Option<u64>, StoreError> {
        self.ensure_blob(blob)?;
        let tmp = self.unpack_dir(chain)?;
        let src = self.blob_path(blob);
        let result = open_layer(&src).map_err(io_err(&src)).and_then(|r| {
            unpack_for_overlay(r, &tmp).map_err(|e| StoreError::BadLayer {
                path: src.clone(),
                reason: e.to_string(),
            })
        });
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        self.place_unpacked(&tmp, chain, None)
    }

    /// A new directory in `tmp/` to unpack the layer `chain` into. Unique per call: two stages
    /// of one build (threads of one process) may unpack the same layer at once, and must not
    /// share or remove each other's directory.
    pub fn unpack_dir(&self, chain: &Digest) -> Result<PathBuf, StoreError> {
        let tmp = self.root.join("tmp").join(format!(
            "unpack-{}-{}",
            chain.hex(),
            super::blobs::tmp_name()
        ));
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        Ok(tmp)
    }

    /// Makes `tmp` (from [`Store::unpack_dir`], whole and checked) the unpacked layer `chain`:
    /// renamed into place, or dropped when another process or thread placed it first (theirs
    /// is identical). Its size when this call placed it (`size`, else measured).
    pub fn place_unpacked(
        &self,
        tmp: &std::path::Path,
        chain: &Digest,
        size: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let dest = self.root.join("layers").join(chain.hex());
        let size = size.unwrap_or_else(|| super::usage::dir_size(tmp));
        let parent = self.root.join("layers");
        std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        if std::fs::rename(tmp, &dest).is_ok() {
            return Ok(Some(size));
        }
        let _ = std::fs::remove_dir_all(tmp);
        if dest.is_dir() {
            Ok(None)
        } else {
            Err(StoreError::Io {
                path: dest,
                source: std::io::Error::other("could not place the unpacked layer"),
            })
        }
    }

    /// An unpacked directory whose top layer is `diff_id` (under any stack), if one exists: a
    /// donor of identical files for a layer written next to it
    /// ([`crate::layer::unpack::unpack_with_donor`]).
    pub fn unpacked_dir_of(&self, diff_id: &Digest) -> Result<Option<PathBuf>, StoreError> {
        let chains: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached("SELECT chain FROM unpacked WHERE diff_id = ?1")
                .map_err(self.db_err())?;
            let rows = stmt
                .query_map([diff_id.to_string()], |r| r.get(0))
                .map_err(self.db_err())?;
            rows.collect::<Result<_, _>>().map_err(self.db_err())?
        };
        Ok(chains
            .iter()
            .filter_map(|c| Digest::parse(&format!("sha256:{c}")).ok())
            .map(|c| self.root.join("layers").join(c.hex()))
            .find(|d| d.is_dir()))
    }

    /// Puts on top of `lower` (unpacked layers, top first) the layer of mount points a sandbox's
    /// overlay needs ([`crate::sandbox::etc::build_stub_layer`]): /etc/hosts and
    /// /etc/resolv.conf where the image lacks them, so they are never written into a container's
    /// or a RUN step's own changes. Nothing when the image needs none.
    pub fn add_etc_stubs(&self, lower: &mut Vec<PathBuf>) {
        if let Some(stubs) = self.etc_stubs(lower) {
            lower.insert(0, stubs);
        }
    }

    /// The layer [`Store::add_etc_stubs`] adds, or `None` when the image needs none. Made once
    /// per top layer, in `ROOT/stubs/<chain-id hex>/` (an empty directory records that none is
    /// needed), and removed with that layer. Best effort: where it cannot be made, the sandbox
    /// creates its mount points as it did without it.
    fn etc_stubs(&self, lower: &[PathBuf]) -> Option<PathBuf> {
        let dir = self.root.join("stubs").join(lower.first()?.file_name()?);
        let found = |dir: PathBuf| match std::fs::symlink_metadata(dir.join("etc")) {
            Ok(m) if m.is_dir() => Some(Some(dir)),
            _ => std::fs::symlink_metadata(&dir)
                .is_ok_and(|m| m.is_dir())
                .then_some(None),
        };
        if let Some(known) = found(dir.clone()) {
            return known;
        }
        let tmp = self
            .root
            .join("tmp")
            .join(format!("stubs-{}", super::blobs::tmp_name()));
        let made = std::fs::create_dir(&tmp)
            .and_then(|()| crate::sandbox::etc::build_stub_layer(lower, &tmp));
        // Renamed into place whole; another process that made it first wins (a rename over its
        // empty directory changes nothing either).
        let placed = made.is_ok()
            && dir
                .parent()
                .is_some_and(|p| std::fs::create_dir_all(p).is_ok())
            && std::fs::rename(&tmp, &dir).is_ok();
        if !placed {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        found(dir).flatten()
    }

    /// Whether the layer `chain` is unpacked.
    pub fn is_unpacked(&self, chain: &Digest) -> bool {
        self.root.join("layers").join(chain.hex()).is_dir()
    }

    /// Records a use of each directory (and the size of those just made), in one transaction.
    pub fn note_unpacked(&self, used: &[(String, String, Option<u64>)]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        let t = now();
        let mut conn = self.conn();
        // Immediate: it reads before it writes, and a deferred transaction that another
        // process wrote past in between cannot take the write lock (SQLITE_BUSY at once,
        // without the busy timeout; seen with four concurrent builds).
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.db_err())?;
        for (chain, diff_id, made) in used {
            // A directory unpacked before kiln kept rows has none: its size is measured once.
            let size = match made {
                Some(s) => *s,
                None => {
                    let known = tx
                        .prepare_cached("SELECT 1 FROM unpacked WHERE chain = ?1")
                        .and_then(|mut st| st.exists([chain]))
                        .map_err(self.db_err())?;
                    if known {
                        0
                    } else {
                        super::usage::dir_size(&self.root.join("layers").join(chain))
                    }
                }
            };
            tx.execute(
                "INSERT INTO unpacked (chain, diff_id, size, created, last_used, uses)
                 VALUES (?1, ?2, ?3, ?4, ?4, 1)
                 ON CONFLICT(chain) DO UPDATE SET last_used = excluded.last_used,
                   uses = uses + 1",
                rusqlite::params![chain, diff_id, size as i64, t],
            )
            .map_err(self.db_err())?;
        }
        tx.commit().map_err(self.db_err())
    }

    /// Every directory under `layers/`, with its row (a directory without one is measured).
    pub(super) fn unpacked_dirs(&self) -> Result<Vec<Unpacked>, StoreError> {
        let mut rows: std::collections::BTreeMap<String, Unpacked> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT chain, diff_id, size, created, last_used, uses FROM unpacked",
                )
                .map_err(self.db_err())?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Unpacked {
                        chain: r.get(0)?,
                        diff_id: Some(r.get(1)?),
                        size: r.get::<_, i64>(2)?.try_into().unwrap_or(0),
                        created: r.get(3)?,
                        last_used: r.get(4)?,
                        uses: r.get::<_, i64>(5)?.try_into().unwrap_or(0),
                    })
                })
                .map_err(self.db_err())?;
            rows.map(|r| r.map(|u| (u.chain.clone(), u)))
                .collect::<Result<_, _>>()
                .map_err(self.db_err())?
        };
        let mut out = Vec::new();
        let dir = self.root.join("layers");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(out);
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !e.path().is_dir() {
                continue;
            }
            out.push(rows.remove(&name).unwrap_or_else(|| {
                let t = super::usage::mtime(&e.path());
                Unpacked {
                    chain: name,
                    diff_id: None,
                    size: super::usage::dir_size(&e.path()),
                    created: t,
                    last_used: t,
                    uses: 0,
                }
            }));
        }
        Ok(out)
    }

    /// Removes one unpacked directory and its row.
    pub(super) fn remove_unpacked(&self, chain: &str) -> Result<(), StoreError> {
        self.discard_dir(&self.root.join("layers").join(chain))?;
        // Its mount points, when it was an image's top layer (see `add_etc_stubs`).
        self.discard_dir(&self.root.join("stubs").join(chain))?;
        self.conn()
            .execute("DELETE FROM unpacked WHERE chain = ?1", [chain])
            .map_err(self.db_err())?;
        Ok(())
    }
}

/// Owner, mode and time of directory `rel` in the unpacked layer `root`, resolved inside it and
/// never through a link (the layer is an image's: a hostile one may hold links anywhere).
fn set_dir_meta(
    root: &Path,
    rel: &[u8],
    (mode, uid, gid, mtime): (u32, u32, u32, i64),
) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let base = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let fd = rustix::fs::openat2(
        &base,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS,
    )?;
    rustix::fs::fchown(
        &fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )?;
    // After chown, which clears setuid/setgid bits.
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o7777))?;
    let t = rustix::fs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    rustix::fs::futimens(
        &fd,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
    )?;
    Ok(())
}
