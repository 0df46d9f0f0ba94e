//! Layer indexes: each layer's entry list (no contents), kept so that building on a cached or
//! loaded layer never reads its tar again. Made once per layer blob: recorded by the writer of a
//! new layer, or read from the tar the first time a loaded layer is used. Kept in a compact
//! binary form ([`encode`]): a 30,000-file layer's index reads in about 6 ms. JSON, which older
//! stores hold, is still read. Beside it, for the layers a build wrote, the content digest of
//! each regular file ([`FileDigests`]): what a later layer's unpacker compares its files with
//! before linking them to this layer's unpacked ones.

use bstr::{BString, ByteSlice};

use super::{Store, StoreError};
use crate::{
    digest::Digest,
    layer::view::{RawEntry, open_layer, read_entries},
};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS layer_index (
    blob    TEXT PRIMARY KEY,
    entries BLOB NOT NULL
);
-- The content digest of each regular file of a layer, as the unpacker that made one of its
-- directories saw the bytes: what lets a later layer link an unchanged file to it.
CREATE TABLE IF NOT EXISTS layer_files (
    blob    TEXT PRIMARY KEY,
    digests BLOB NOT NULL
);
";

/// A layer's regular files and the sha256 of each one's content, sorted by path.
pub type FileDigests = Vec<(BString, [u8; 32])>;

const FILES_MAGIC: &[u8] = b"KLD1";

impl Store {
    /// Records the entries of layer blob `blob` (as its writer knows them).
    pub fn record_layer_entries(
        &self,
        blob: &Digest,
        entries: &[RawEntry],
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO layer_index (blob, entries) VALUES (?1, ?2)",
                rusqlite::params![blob.to_string(), encode(entries)],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// Records the content digests of layer `blob`'s regular files.
    pub fn record_layer_files(&self, blob: &Digest, files: &FileDigests) -> Result<(), StoreError> {
        let mut b = FILES_MAGIC.to_vec();
        for (path, d) in files {
            b.extend_from_slice(&u32::try_from(path.len()).unwrap_or(u32::MAX).to_le_bytes());
            b.extend_from_slice(path);
            b.extend_from_slice(d);
        }
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO layer_files (blob, digests) VALUES (?1, ?2)",
                rusqlite::params![blob.to_string(), b],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// The content digests [`Store::record_layer_files`] kept for layer `blob` (empty when none
    /// were, or they cannot be read: a layer linked to them then only writes its files).
    pub fn layer_files(&self, blob: &Digest) -> Result<FileDigests, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT digests FROM layer_files WHERE blob = ?1")
            .map_err(self.db_err())?;
        let mut rows = stmt.query([blob.to_string()]).map_err(self.db_err())?;
        let Some(row) = rows.next().map_err(self.db_err())? else {
            return Ok(Vec::new());
        };
        let b: Vec<u8> = row.get(0).map_err(self.db_err())?;
        let mut rest = b.strip_prefix(FILES_MAGIC).unwrap_or_default();
        let mut out = Vec::new();
        while !rest.is_empty() {
            let Some(record) = (|| {
                let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
                let path = BString::from(rest.get(4..4 + len)?);
                let d: [u8; 32] = rest.get(4 + len..36 + len)?.try_into().ok()?;
                rest = &rest[36 + len..];
                Some((path, d))
            })() else {
                return Ok(Vec::new());
            };
            out.push(record);
        }
        Ok(out)
    }

    /// Layer blob `blob`'s index in its binary form ([`encode_layer_index`]), when the store
    /// has one; the blob itself is not read.
    pub fn recorded_layer_index(&self, blob: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT entries FROM layer_index WHERE blob = ?1")
            .map_err(self.db_err())?;
        let mut rows = stmt.query([blob.to_string()]).map_err(self.db_err())?;
        Ok(match rows.next().map_err(self.db_err())? {
            Some(r) => Some(r.get::<_, Vec<u8>>(0).map_err(self.db_err())?)
                .filter(|b| b.starts_with(MAGIC)),
            None => None,
        })
    }

    /// The entries of layer blob `blob`: from its index, or read from the tar once and indexed.
    pub fn layer_entries(&self, blob: &Digest) -> Result<Vec<RawEntry>, StoreError> {
        let stored: Option<Vec<u8>> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare_cached("SELECT entries FROM layer_index WHERE blob = ?1")
                .map_err(self.db_err())?;
            let mut rows = stmt.query([blob.to_string()]).map_err(self.db_err())?;
            match rows.next().map_err(self.db_err())? {
                Some(r) => Some(r.get(0).map_err(self.db_err())?),
                None => None,
            }
        };
        if let Some(entries) = stored.and_then(|b| {
            if let Some(rest) = b.strip_prefix(MAGIC) {
                return decode(rest);
            }
            // Older kilns read names as UTF-8, replacing what was not: such an index is read
            // again from the tar, so a name that is not UTF-8 comes back as its bytes.
            let old = match b.strip_prefix(MAGIC_V1) {
                Some(rest) => decode(rest)?,
                None => serde_json::from_slice::<Vec<RawEntry>>(&b).ok()?,
            };
            let lossy = |p: &[u8]| p.contains_str("\u{FFFD}");
            (!old
                .iter()
                .any(|e| lossy(&e.path) || e.link.as_deref().is_some_and(|l| lossy(l))))
            .then_some(old)
        }) {
            return Ok(entries);
        }
        self.ensure_blob(blob)?;
        let path = self.blob_path(blob);
        let reader = open_layer(&path).map_err(super::io_err(&path))?;
        let entries = read_entries(reader).map_err(super::io_err(&path))?;
        self.record_layer_entries(blob, &entries)?;
        Ok(entries)
    }
}

/// What begins the binary form (JSON never does). Names are bytes.
const MAGIC: &[u8] = b"KLI2";
/// The same form as older kilns wrote it, their names made UTF-8.
const MAGIC_V1: &[u8] = b"KLI1";

/// The binary form: [`MAGIC`], then per entry the path (u32 length, bytes), typeflag (u8),
/// mode, uid, gid (u32), mtime (i64), size (u64), and the link target (u8 0/1, then u32 length
/// and bytes), little-endian.
fn encode(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + entries.len() * 64);
    out.extend_from_slice(MAGIC);
    let text = |out: &mut Vec<u8>, s: &[u8]| {
        out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(s);
    };
    for e in entries {
        text(&mut out, &e.path);
        out.push(e.typeflag);
        for n in [e.mode, e.uid, e.gid] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&e.mtime.to_le_bytes());
        out.extend_from_slice(&e.size.to_le_bytes());
        match &e.link {
            Some(l) => {
                out.push(1);
                text(&mut out, l);
            }
            None => out.push(0),
        }
    }
    out
}

/// A layer's entries in the store's binary form: what a cache artifact carries for a layer, so
/// a runner can plan steps against it without its blob.
pub fn encode_layer_index(entries: &[RawEntry]) -> Vec<u8> {
    encode(entries)
}

/// The inverse of [`encode_layer_index`]; `None` for bytes it did not write.
pub fn decode_layer_index(bytes: &[u8]) -> Option<Vec<RawEntry>> {
    decode(bytes.strip_prefix(MAGIC)?)
}

/// The inverse of [`encode`] (after the magic); `None` for bytes it did not write.
fn decode(mut b: &[u8]) -> Option<Vec<RawEntry>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (b.get(..n)?, b.get(n..)?);
        *b = rest;
        Some(head)
    }
    fn text(b: &mut &[u8]) -> Option<BString> {
        let n = u32::from_le_bytes(take(b, 4)?.try_into().ok()?) as usize;
        Some(BString::from(take(b, n)?))
    }
    let u32_of = |b: &mut &[u8]| Some(u32::from_le_bytes(take(b, 4)?.try_into().ok()?));
    let mut out = Vec::new();
    while !b.is_empty() {
        let path = text(&mut b)?;
        let typeflag = *take(&mut b, 1)?.first()?;
        let (mode, uid, gid) = (u32_of(&mut b)?, u32_of(&mut b)?, u32_of(&mut b)?);
        let mtime = i64::from_le_bytes(take(&mut b, 8)?.try_into().ok()?);
        let size = u64::from_le_bytes(take(&mut b, 8)?.try_into().ok()?);
        let link = match *take(&mut b, 1)?.first()? {
            0 => None,
            _ => Some(text(&mut b)?),
        };
        out.push(RawEntry {
            path,
            typeflag,
            mode,
            uid,
            gid,
            mtime,
            size,
            link,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_index_round_trips_and_json_is_still_read() {
        let entries = vec![
            RawEntry {
                path: "app/a.js".into(),
                typeflag: b'0',
                mode: 0o644,
                uid: 1000,
                gid: 1000,
                mtime: -5,
                size: 42,
                link: None,
            },
            RawEntry {
                path: "app/l".into(),
                typeflag: b'2',
                mode: 0o777,
                uid: 0,
                gid: 0,
                mtime: 1_700_000_000,
                size: 0,
                link: Some("a.js".into()),
            },
        ];
        let bin = encode(&entries);
        assert_eq!(decode(&bin[MAGIC.len()..]), Some(entries.clone()));
        assert_eq!(decode(&bin[MAGIC.len()..bin.len() - 1]), None, "cut short");
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest::of(b"layer");
        store.record_layer_entries(&d, &entries).unwrap();
        assert_eq!(store.layer_entries(&d).unwrap(), entries);
        // A row an older kiln wrote, as JSON.
        store
            .conn()
            .execute(
                "UPDATE layer_index SET entries = ?2 WHERE blob = ?1",
                rusqlite::params![d.to_string(), serde_json::to_vec(&entries).unwrap()],
            )
            .unwrap();
        assert_eq!(store.layer_entries(&d).unwrap(), entries);
    }

    /// Older kilns read names as UTF-8, a byte that was not becoming U+FFFD: such an index is
    /// read again from the layer, so the name comes back as its bytes; one without is kept.
    #[test]
    fn an_index_with_names_made_utf8_is_read_again_from_the_layer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..4].copy_from_slice(b"caf\xe9");
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(1);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let layer = b.into_inner().unwrap();
        let d = Digest::of(&layer);
        let path = store.blob_path(&d);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &layer).unwrap();
        let mut old = read_entries(layer.as_slice()).unwrap();
        assert_eq!(old[0].path.as_slice(), b"caf\xe9");
        old[0].path = "caf\u{FFFD}".into();
        let mut row = MAGIC_V1.to_vec();
        row.extend_from_slice(&encode(&old)[MAGIC.len()..]);
        store
            .conn()
            .execute(
                "INSERT OR REPLACE INTO layer_index (blob, entries) VALUES (?1, ?2)",
                rusqlite::params![d.to_string(), row],
            )
            .unwrap();
        let read = store.layer_entries(&d).unwrap();
        assert_eq!(read[0].path.as_slice(), b"caf\xe9");
        // Rewritten in the current form: read from the row from now on.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(store.layer_entries(&d).unwrap(), read);
    }
}
