//! Content-addressed blobs: write to `tmp/`, fsync, rename to `blobs/sha256/<hex>`.

use std::{
    fs::File,
    io::{Read, Write},
    path::PathBuf,
};

use sha2::{Digest as _, Sha256};

use super::{Store, StoreError, io_err};
use crate::digest::Digest;

/// A unique name in `tmp/` for this process and write.
pub(super) fn tmp_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("blob-{}-{n}", std::process::id())
}

/// A blob being written in place: the caller streams into `file` while hashing, then
/// [`Store::commit_blob`] makes it visible under its digest. Dropped without a commit (the
/// write failed: a full disk, an error in the step), its file in `tmp/` is removed at once.
#[derive(Debug)]
pub struct BlobFile {
    pub file: File,
    /// Empty once committed.
    path: PathBuf,
}

impl BlobFile {
    /// The bytes written so far, read again from the start (a second pass over a blob whose
    /// digest was checked first).
    pub fn reopen(&self) -> std::io::Result<File> {
        File::open(&self.path)
    }
}

impl Drop for BlobFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Store {
    /// Starts a blob written by the caller (e.g. a layer written as it is hashed).
    pub fn new_blob_file(&self) -> Result<BlobFile, StoreError> {
        let path = self.root.join("tmp").join(tmp_name());
        let file = File::create(&path).map_err(io_err(&path))?;
        Ok(BlobFile { file, path })
    }

    /// Makes a finished blob visible as `digest`, which the caller computed while writing.
    pub fn commit_blob(&self, mut blob: BlobFile, digest: &Digest) -> Result<(), StoreError> {
        let path = blob.path.clone();
        blob.file.sync_all().map_err(io_err(&path))?;
        let dest = self.blob_path(digest);
        std::fs::rename(&path, &dest).map_err(io_err(&dest))?;
        // Renamed: nothing is left in tmp/ for the drop to remove.
        blob.path = PathBuf::new();
        if let Some(dir) = dest.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir))?;
        }
        Ok(())
    }

    /// Where the blob `d` lives (whether or not it is present).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Stores `data`, returning its digest. Storing a blob that is already there is a no-op.
    pub fn put_blob(&self, data: &[u8]) -> Result<Digest, StoreError> {
        self.put_blob_from(data).map(|(d, _)| d)
    }

    /// Stores what `reader` yields, hashing while writing; returns the digest and size.
    pub fn put_blob_from(&self, mut reader: impl Read) -> Result<(Digest, u64), StoreError> {
        let tmp = self.root.join("tmp").join(tmp_name());
        let result = (|| {
            let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut size = 0u64;
            loop {
                let n = reader.read(&mut buf).map_err(io_err(&tmp))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n]).map_err(io_err(&tmp))?;
                size += n as u64;
            }
            // Durable before it becomes visible: a crash after the rename must not leave a
            // blob whose name promises content the disk does not have.
            file.sync_all().map_err(io_err(&tmp))?;
            let digest = Digest::from_sha256(hasher);
            let dest = self.blob_path(&digest);
            // rename(2) is atomic; two processes storing the same content both succeed and
            // the file is complete either way.
            std::fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
            if let Some(dir) = dest.parent() {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io_err(dir))?;
            }
            Ok((digest, size))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Reads a whole blob, checking its digest.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(d);
        let data = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::MissingBlob(*d),
            _ => StoreError::Io { path, source: e },
        })?;
        let actual = Digest::of(&data);
        if &actual != d {
            return Err(StoreError::DigestMismatch {
                expected: Box::new(*d),
                actual: Box::new(actual),
            });
        }
        Ok(data)
    }
}
