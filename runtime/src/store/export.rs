//! `kiln save`: images out of the store as an OCI image layout (a directory or a tar of one) with
//! Docker's `manifest.json` beside it, as `docker save` writes since Docker 25.
//!
//! The store keeps layers uncompressed (builds never pay for compression); an image leaving the
//! store gets gzip layers (or zstd, when asked), each compressed once and remembered
//! (`compressed` and `compressed_zstd` tables), so saving again or pushing later costs nothing
//! more. Layers that came in compressed (pulled, loaded) leave as they are, as BuildKit's
//! exporters do without `force-compression`.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    path::Path,
};

use sha2::{Digest as _, Sha256};

use super::{Store, StoreError, io_err};
use crate::{
    digest::Digest,
    oci::{self, Descriptor, Index, Manifest},
};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS compressed (
    diff_id TEXT PRIMARY KEY,
    digest  TEXT NOT NULL,
    size    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS compressed_zstd (
    diff_id TEXT PRIMARY KEY,
    digest  TEXT NOT NULL,
    size    INTEGER NOT NULL
);
";

/// How the layers kiln keeps uncompressed are compressed on the way out (`--compression`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LayerCompression {
    /// The default, for compatibility: every tool reads it.
    #[default]
    Gzip,
    /// Smaller and faster to decompress; docker 23+, containerd 1.5+, podman read it.
    Zstd,
}

impl LayerCompression {
    /// `gzip` or `zstd`.
    pub fn parse(s: &str) -> Option<LayerCompression> {
        match s {
            "gzip" => Some(LayerCompression::Gzip),
            "zstd" => Some(LayerCompression::Zstd),
            _ => None,
        }
    }

    fn table(self) -> &'static str {
        match self {
            LayerCompression::Gzip => "compressed",
            LayerCompression::Zstd => "compressed_zstd",
        }
    }

    fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Gzip => oci::MEDIA_LAYER_GZIP,
            LayerCompression::Zstd => oci::MEDIA_LAYER_ZSTD,
        }
    }
}

/// Counts and hashes what passes through.
struct Hashing<W: Write> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where `kiln save` writes.
enum Dest<'a> {
    /// A tar file, or a directory (`true`).
    Path(&'a Path, bool),
    /// A tar on a stream.
    Stream(&'a mut dyn Write),
}

impl Store {
    /// The layout as one tar on `w`: the blob directories, every blob, then `files`.
    fn write_archive(
        &self,
        blobs: &BTreeSet<Digest>,
        files: &[(String, Vec<u8>)],
        w: &mut dyn Write,
    ) -> std::io::Result<()> {
        let mut tar = tar::Builder::new(w);
        let header = |path: &str, size: u64, dir: bool| {
            let mut h = tar::Header::new_ustar();
            let _ = h.set_path(path);
            h.set_size(size);
            h.set_mode(if dir { 0o755 } else { 0o644 });
            h.set_mtime(0);
            h.set_entry_type(if dir {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h.set_cksum();
            h
        };
        for d in ["blobs/", "blobs/sha256/"] {
            tar.append(&header(d, 0, true), std::io::empty())?;
        }
        for d in blobs {
            let f = std::fs::File::open(self.blob_path(d))?;
            let size = f.metadata()?.len();
            tar.append(
                &header(&format!("blobs/sha256/{}", d.hex()), size, false),
                f.take(size),
            )?;
        }
        for (name, bytes) in files {
            tar.append(&header(name, bytes.len() as u64, false), bytes.as_slice())?;
        }
        tar.into_inner()?.flush()
    }

    /// Every remembered compressed form: diff_id to its forms (blob digest, size), gzip first
    /// (for `kiln store verify` and the cache's accounting).
    pub fn compressed_forms(&self) -> Result<BTreeMap<String, Vec<(String, u64)>>, StoreError> {
        let conn = self.conn();
        let mut out: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        for c in [LayerCompression::Gzip, LayerCompression::Zstd] {
            let mut stmt = conn
                .prepare_cached(&format!("SELECT diff_id, digest, size FROM {}", c.table()))
                .map_err(self.db_err())?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    ))
                })
                .map_err(self.db_err())?;
            for row in rows {
                let (diff_id, digest, size) = row.map_err(self.db_err())?;
                out.entry(diff_id).or_default().push((digest, size));
            }
        }
        Ok(out)
    }

    /// Forgets the compressed forms of `blob` (a diff_id) or whose digest is `blob`, once that
    /// blob is removed.
    pub(super) fn forget_compressed(&self, blob: &str) -> Result<(), StoreError> {
        for c in [LayerCompression::Gzip, LayerCompression::Zstd] {
            self.conn()
                .execute(
                    &format!(
                        "DELETE FROM {} WHERE diff_id = ?1 OR digest = ?1",
                        c.table()
                    ),
                    [blob],
                )
                .map_err(self.db_err())?;
        }
        Ok(())
    }

    /// Keeps the uncompressed form of a layer that came in compressed (blob `compressed`,
    /// already in the store and checked against `diff_id`: an imported build cache), and
    /// remembers the compressed blob as its form, so the layer leaves the store again as the
    /// same bytes. A blob that is not compressed is its own uncompressed form.
    pub fn expand_layer(&self, diff_id: &Digest, compressed: &Digest) -> Result<(), StoreError> {
        if diff_id == compressed {
            return Ok(());
        }
        self.ensure_blob(compressed)?;
        let src = self.blob_path(compressed);
        let mut magic = [0u8; 4];
        {
            use std::io::Read;
            let mut f = std::fs::File::open(&src).map_err(io_err(&src))?;
            let _ = f.read(&mut magic).map_err(io_err(&src))?;
        }
        let c = if magic[..2] == [0x1f, 0x8b] {
            LayerCompression::Gzip
        } else if magic == crate::layer::view::ZSTD_MAGIC {
            LayerCompression::Zstd
        } else {
            return Err(StoreError::BadLayout {
                path: src,
                reason: format!("layer {compressed} is neither gzip nor zstd nor {diff_id}"),
            });
        };
        if !self.has_blob(diff_id) {
            let input = crate::layer::view::open_layer(&src).map_err(io_err(&src))?;
            let (got, _) = self.put_blob_from(input)?;
            if got != *diff_id {
                return Err(StoreError::BadLayout {
                    path: src,
                    reason: format!("layer {compressed} holds {got}, not {diff_id}"),
                });
            }
        }
        let size = std::fs::metadata(&src).map_err(io_err(&src))?.len();
        self.conn()
            .execute(
                &format!(
                    "INSERT OR REPLACE INTO {} (diff_id, digest, size) VALUES (?1, ?2, ?3)",
                    c.table()
                ),
                rusqlite::params![diff_id.to_string(), compressed.to_string(), size as i64],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// The compressed form of an uncompressed layer blob, made once.
    pub(crate) fn compressed_layer(
        &self,
        diff_id: &Digest,
        c: LayerCompression,
    ) -> Result<(Digest, u64), StoreError> {
        {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT digest, size FROM {} WHERE diff_id = ?1",
                    c.table()
                ))
                .map_err(self.db_err())?;
            let mut rows = stmt.query([diff_id.to_string()]).map_err(self.db_err())?;
            if let Some(r) = rows.next().map_err(self.db_err())? {
                let d: String = r.get(0).map_err(self.db_err())?;
                let size: i64 = r.get(1).map_err(self.db_err())?;
                if let Ok(d) = Digest::parse(&d) {
                    if self.has_blob(&d) {
                        return Ok((d, size as u64));
                    }
                }
            }
        }
        self.ensure_blob(diff_id)?;
        let src = self.blob_path(diff_id);
        let mut input = std::fs::File::open(&src).map_err(io_err(&src))?;
        let blob = self.new_blob_file()?;
        let file = blob.file.try_clone().map_err(io_err(&src))?;
        let hashing = Hashing {
            inner: std::io::BufWriter::new(file),
            hasher: Sha256::new(),
            size: 0,
        };
        let mut hashing = match c {
            // gzip level 6 without a name or mtime in the header: the same layer always
            // compresses to the same bytes with this build of flate2.
            LayerCompression::Gzip => {
                let mut gz = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(hashing, flate2::Compression::new(6));
                std::io::copy(&mut input, &mut gz).map_err(io_err(&src))?;
                gz.finish().map_err(io_err(&src))?
            }
            // zstd level 3 (its default), one frame, no checksum: deterministic likewise.
            LayerCompression::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(hashing, 3).map_err(io_err(&src))?;
                std::io::copy(&mut input, &mut z).map_err(io_err(&src))?;
                z.finish().map_err(io_err(&src))?
            }
        };
        hashing.flush().map_err(io_err(&src))?;
        let digest = Digest::from_sha256(hashing.hasher.clone());
        let size = hashing.size;
        drop(hashing);
        self.commit_blob(blob, &digest)?;
        self.conn()
            .execute(
                &format!(
                    "INSERT OR REPLACE INTO {} (diff_id, digest, size) VALUES (?1, ?2, ?3)",
                    c.table()
                ),
                rusqlite::params![diff_id.to_string(), digest.to_string(), size as i64],
            )
            .map_err(self.db_err())?;
        Ok((digest, size))
    }

    /// The image `manifest` as it leaves the store (`kiln push`, `-o type=oci`, `kiln save`):
    /// every layer kiln keeps uncompressed compressed with `c` (all at once, bounded by the
    /// machine; remembered), and the manifest that names them. Its digest is the one a
    /// registry serves after a push, the one a build reports.
    pub fn distributable(
        &self,
        manifest: &Digest,
        c: LayerCompression,
    ) -> Result<(Manifest, Vec<u8>, Digest), StoreError> {
        let (m, _, _) = self.image(manifest)?;
        let tars: Vec<Digest> = m
            .layers
            .iter()
            .filter(|l| l.media_type == oci::MEDIA_LAYER_TAR)
            .filter_map(|l| Digest::parse(&l.digest).ok())
            .collect();
        crate::parallel::for_each(&tars, 0, |d| self.compressed_layer(d, c).map(|_| ()))?;
        self.export_manifest(manifest, c)
    }

    /// The manifest of `manifest` with every uncompressed layer replaced by its compressed form.
    pub(crate) fn export_manifest(
        &self,
        manifest: &Digest,
        c: LayerCompression,
    ) -> Result<(Manifest, Vec<u8>, Digest), StoreError> {
        let (mut m, _, _) = self.image(manifest)?;
        if m.layers
            .iter()
            .all(|l| l.media_type != oci::MEDIA_LAYER_TAR)
        {
            // Nothing to compress: the image leaves with its own manifest, digest unchanged.
            return Ok((m, self.read_blob(manifest)?, *manifest));
        }
        for l in &mut m.layers {
            if l.media_type == oci::MEDIA_LAYER_TAR {
                let diff_id = Digest::parse(&l.digest).map_err(|e| StoreError::BadLayout {
                    path: self.blob_path(manifest),
                    reason: e.to_string(),
                })?;
                let (d, size) = self.compressed_layer(&diff_id, c)?;
                l.media_type = c.media_type().into();
                l.digest = d.to_string();
                l.size = size;
            }
        }
        let w = oci::write_json(&m, oci::MEDIA_MANIFEST);
        let d = self.put_blob(&w.bytes)?;
        Ok((m, w.bytes, d))
    }

    /// Writes `images` (name, manifest) as an OCI layout into `dest`: a directory when `as_dir`,
    /// else a tar file. Returns the exported manifest digests.
    pub fn save(
        &self,
        images: &[(String, Digest)],
        dest: &Path,
        as_dir: bool,
        c: LayerCompression,
    ) -> Result<Vec<Digest>, StoreError> {
        self.save_as(images, Dest::Path(dest, as_dir), c)
    }

    /// [`Store::save`] as a tar written to `w` (`kiln save IMAGE > x.tar`, as docker does).
    pub fn save_to(
        &self,
        images: &[(String, Digest)],
        w: &mut dyn Write,
        c: LayerCompression,
    ) -> Result<Vec<Digest>, StoreError> {
        self.save_as(images, Dest::Stream(w), c)
    }

    /// Adds a multi-platform image to an export: the index (named `name` in `index.json`),
    /// every image of it, and their blobs. Returns its digest as exported, and the
    /// `manifest.json` entry of the image for this machine (what docker's classic store loads).
    fn save_index(
        &self,
        manifest: &Digest,
        name: &str,
        c: LayerCompression,
        blobs: &mut BTreeSet<Digest>,
        index: &mut Index,
    ) -> Result<(Digest, serde_json::Value), StoreError> {
        let (bytes, d, children) = self.distributable_index(manifest, c)?;
        blobs.insert(d);
        let host = self.platform_manifest(manifest, None)?;
        let mut host_entry = serde_json::Value::Null;
        for (stored, leaving) in &children {
            let Some((m_bytes, m_digest)) = leaving else {
                return Err(StoreError::BadLayout {
                    path: self.blob_path(manifest),
                    reason: format!(
                        "its image {stored} is not in kiln's store (pull it with \
                         --all-platforms before saving)"
                    ),
                });
            };
            blobs.insert(*m_digest);
            let m: Manifest =
                serde_json::from_slice(m_bytes).map_err(|e| StoreError::BadLayout {
                    path: self.blob_path(stored),
                    reason: e.to_string(),
                })?;
            for desc in std::iter::once(&m.config).chain(&m.layers) {
                blobs.insert(
                    Digest::parse(&desc.digest).map_err(|e| StoreError::BadLayout {
                        path: self.blob_path(stored),
                        reason: e.to_string(),
                    })?,
                );
            }
            if *stored == host {
                let path_of =
                    |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
                host_entry = serde_json::json!({
                    "Config": path_of(&m.config.digest),
                    "RepoTags": [name],
                    "Layers": m.layers.iter().map(|l| path_of(&l.digest)).collect::<Vec<_>>(),
                });
            }
        }
        index.manifests.push(Descriptor {
            media_type: oci::MEDIA_INDEX.into(),
            digest: d.to_string(),
            size: bytes.len() as u64,
            annotations: BTreeMap::from([
                ("io.containerd.image.name".to_string(), name.to_string()),
                (
                    "org.opencontainers.image.ref.name".to_string(),
                    name.to_string(),
                ),
            ]),
            platform: None,
        });
        Ok((d, host_entry))
    }

    fn save_as(
        &self,
        images: &[(String, Digest)],
        dest: Dest<'_>,
        c: LayerCompression,
    ) -> Result<Vec<Digest>, StoreError> {
        // The gzip forms are cache: prune must not remove one between making and copying it.
        let _guard = self.build_guard()?;
        let mut blobs: BTreeSet<Digest> = BTreeSet::new();
        let mut index = Index {
            schema_version: 2,
            media_type: Some(oci::MEDIA_INDEX.into()),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
        };
        let mut docker: Vec<serde_json::Value> = Vec::new();
        let mut out = Vec::new();
        for (name, manifest) in images {
            if self.read_index(manifest)?.is_some() {
                let (d, host_image) = self.save_index(manifest, name, c, &mut blobs, &mut index)?;
                docker.push(host_image);
                out.push(d);
                continue;
            }
            let (m, bytes, d) = self.export_manifest(manifest, c)?;
            blobs.insert(d);
            for desc in std::iter::once(&m.config).chain(&m.layers) {
                blobs.insert(
                    Digest::parse(&desc.digest).map_err(|e| StoreError::BadLayout {
                        path: self.blob_path(manifest),
                        reason: e.to_string(),
                    })?,
                );
            }
            let (_, config, _) = self.image(manifest)?;
            index.manifests.push(Descriptor {
                media_type: oci::MEDIA_MANIFEST.into(),
                digest: d.to_string(),
                size: bytes.len() as u64,
                annotations: BTreeMap::from([
                    ("io.containerd.image.name".to_string(), name.clone()),
                    (
                        "org.opencontainers.image.ref.name".to_string(),
                        name.clone(),
                    ),
                ]),
                platform: Some(config.platform()),
            });
            let path_of =
                |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
            docker.push(serde_json::json!({
                "Config": path_of(&m.config.digest),
                "RepoTags": [name],
                "Layers": m.layers.iter().map(|l| path_of(&l.digest)).collect::<Vec<_>>(),
            }));
            out.push(d);
        }
        // Layers only a registry had (a remote cache hit) come in now, when they are needed.
        for d in &blobs {
            self.ensure_blob(d)?;
        }
        let files: Vec<(String, Vec<u8>)> = vec![
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            (
                "index.json".into(),
                oci::write_json(&index, oci::MEDIA_INDEX).bytes,
            ),
            (
                "manifest.json".into(),
                serde_json::to_vec(&docker).unwrap_or_default(),
            ),
        ];
        let (dest, as_dir) = match dest {
            Dest::Path(p, d) => (p, d),
            Dest::Stream(w) => {
                let shown = Path::new("<stdout>");
                self.write_archive(&blobs, &files, w)
                    .map_err(io_err(shown))?;
                return Ok(out);
            }
        };
        if as_dir {
            let dir = dest.join("blobs/sha256");
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            for d in &blobs {
                let to = dir.join(d.hex());
                std::fs::copy(self.blob_path(d), &to).map_err(io_err(&to))?;
            }
            for (name, bytes) in &files {
                let p = dest.join(name);
                std::fs::write(&p, bytes).map_err(io_err(&p))?;
            }
            return Ok(out);
        }
        // A tar written to a temporary name and renamed: no half-written archive is left.
        let tmp = dest.with_extension("tar.partial");
        let result = (|| {
            let f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
            let mut w = std::io::BufWriter::new(f);
            self.write_archive(&blobs, &files, &mut w)
                .map_err(io_err(&tmp))?;
            w.flush().map_err(io_err(&tmp))?;
            w.get_ref().sync_all().map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, dest).map_err(io_err(dest))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map(|()| out)
    }
}
