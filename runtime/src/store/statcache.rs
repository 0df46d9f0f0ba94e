//! File digests remembered by file identity, so an unchanged file is never read twice across
//! builds: a file's digest is reused while its path, device, inode, size, mtime and ctime are
//! the same; any change to the file changes ctime, so a hit means the same bytes. Its extended
//! attributes are remembered alongside (a change of them changes ctime too), so an unchanged
//! file costs one stat per build.
//!
//! One context's files are kept together, sorted by path, in one blob (its `context_files` row,
//! a [`StatIndex`]): a build reads them with one row and compares them with the walk's sorted
//! entries in one pass, with no allocation per file (a 30,000-file context is about 3.5 MB).
//! A blob this module cannot read is no index: every file is read again.

use crate::digest::Digest;

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// A file's extended attributes, as the stat cache keeps them.
pub type Xattrs = Vec<(String, Vec<u8>)>;

/// `name NUL length(u32 LE) value`, one after the other.
pub fn encode_xattrs(x: &Xattrs) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in x {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(v);
    }
    out
}

/// The inverse of [`encode_xattrs`]; `None` for bytes it did not write.
pub fn decode_xattrs(mut b: &[u8]) -> Option<Xattrs> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let nul = b.iter().position(|c| *c == 0)?;
        let name = String::from_utf8(b[..nul].to_vec()).ok()?;
        b = &b[nul + 1..];
        let len = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let value = b.get(4..4 + len)?.to_vec();
        b = &b[4 + len..];
        out.push((name, value));
    }
    Some(out)
}

/// The blob's first bytes; another value is an index of another layout, read as none.
const MAGIC: &[u8; 4] = b"KSI1";

/// What the stat cache remembers of one file (borrowed from its [`StatIndex`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remembered<'a> {
    /// Relative to the context's root, as the directory names it (bytes).
    pub path: &'a [u8],
    pub stamp: FileStamp,
    pub digest: Digest,
    /// Its extended attributes as [`encode_xattrs`] wrote them ([`decode_xattrs`] reads them).
    pub xattrs: &'a [u8],
}

/// A context's remembered files, sorted by path: per file, `u32` path length, the path, the
/// stamp's five 64-bit integers, the digest's 32 bytes, `u32` length of the encoded extended
/// attributes and those (integers little-endian).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatIndex {
    data: Vec<u8>,
}

impl StatIndex {
    /// The index of `files`, which must come sorted by path (a reader merges it with a sorted
    /// walk; an unsorted index only costs misses, never a wrong digest).
    pub fn encode<'a>(
        files: impl Iterator<Item = (&'a [u8], FileStamp, Digest, &'a Xattrs)>,
    ) -> StatIndex {
        let mut data = MAGIC.to_vec();
        for (path, s, d, x) in files {
            data.extend_from_slice(&u32::try_from(path.len()).unwrap_or(u32::MAX).to_le_bytes());
            data.extend_from_slice(path);
            for v in [s.dev, s.ino, s.size, s.mtime_ns as u64, s.ctime_ns as u64] {
                data.extend_from_slice(&v.to_le_bytes());
            }
            data.extend_from_slice(&d.to_bytes());
            let x = encode_xattrs(x);
            data.extend_from_slice(&u32::try_from(x.len()).unwrap_or(u32::MAX).to_le_bytes());
            data.extend_from_slice(&x);
        }
        StatIndex { data }
    }

    /// An index as stored; bytes of another layout give an empty one.
    pub fn from_bytes(data: Vec<u8>) -> StatIndex {
        if data.starts_with(MAGIC) {
            StatIndex { data }
        } else {
            StatIndex::default()
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The files in stored order; a damaged record ends the walk (what follows is not trusted).
    pub fn iter(&self) -> impl Iterator<Item = Remembered<'_>> {
        let mut rest = self.data.get(MAGIC.len()..).unwrap_or_default();
        std::iter::from_fn(move || {
            let mut take = |n: usize| -> Option<&[u8]> {
                let (head, tail) = rest.split_at_checked(n)?;
                rest = tail;
                Some(head)
            };
            let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or_default()) as usize;
            let u64_at = |b: &[u8], i: usize| {
                u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default())
            };
            let len = u32_at(take(4)?);
            let path = take(len)?;
            let fixed = take(40 + 32)?;
            let stamp = FileStamp {
                dev: u64_at(fixed, 0),
                ino: u64_at(fixed, 1),
                size: u64_at(fixed, 2),
                mtime_ns: u64_at(fixed, 3) as i64,
                ctime_ns: u64_at(fixed, 4) as i64,
            };
            let digest = Digest::from_bytes(fixed[40..].try_into().ok()?);
            let xlen = u32_at(take(4)?);
            let xattrs = take(xlen)?;
            Some(Remembered {
                path,
                stamp,
                digest,
                xattrs,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattrs_round_trip() {
        let x: Xattrs = vec![
            ("user.a".into(), b"1".to_vec()),
            ("user.empty".into(), Vec::new()),
            ("trusted.bin".into(), vec![0, 255, 0]),
        ];
        assert_eq!(decode_xattrs(&encode_xattrs(&x)), Some(x));
        assert_eq!(decode_xattrs(&[]), Some(Vec::new()));
        assert_eq!(decode_xattrs(b"name-without-end"), None);
    }

    #[test]
    fn index_round_trips_and_stops_at_damage() {
        let stamp = |n: u64| FileStamp {
            dev: n,
            ino: n + 1,
            size: n + 2,
            mtime_ns: -3,
            ctime_ns: i64::MAX,
        };
        let x: Xattrs = vec![("user.k".into(), b"v".to_vec())];
        let none: Xattrs = Vec::new();
        let files = [
            (&b"a"[..], stamp(1), Digest::of(b"a"), &x),
            (b"dir/b", stamp(2), Digest::of(b"b"), &none),
            // A name that is not UTF-8 is kept as its bytes.
            (b"dir/caf\xe9", stamp(3), Digest::of(b"c"), &none),
        ];
        let index = StatIndex::encode(files.iter().map(|(p, s, d, x)| (*p, *s, *d, *x)));
        let read: Vec<_> = index.iter().collect();
        assert_eq!(read.len(), 3);
        assert_eq!(
            (read[0].path, read[0].stamp, read[0].digest),
            (&b"a"[..], stamp(1), Digest::of(b"a"))
        );
        assert_eq!(decode_xattrs(read[0].xattrs), Some(x.clone()));
        assert_eq!((read[1].path, read[1].xattrs), (&b"dir/b"[..], &[][..]));
        assert_eq!(read[2].path, b"dir/caf\xe9");
        // Stored and read back; a truncated blob yields only its whole records.
        let again = StatIndex::from_bytes(index.as_bytes().to_vec());
        assert_eq!(again, index);
        let cut = StatIndex::from_bytes(index.as_bytes()[..index.as_bytes().len() - 1].to_vec());
        assert_eq!(
            cut.iter().map(|r| r.path).collect::<Vec<_>>(),
            [&b"a"[..], b"dir/b"]
        );
        // Bytes of another layout are no index.
        assert_eq!(
            StatIndex::from_bytes(b"[{\"json\": 1}]".to_vec())
                .iter()
                .count(),
            0
        );
    }
}
