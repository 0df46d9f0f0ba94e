//! ADD of a local archive: detected by content (tar, gzip, bzip2, xz), unpacked into the
//! destination as BuildKit does (hard links, fifos and devices kept; entries that would leave
//! the destination skipped, entries below a symlink the archive made refused).

use super::*;

/// What a local ADD source is, by content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Archive {
    None,
    Tar,
    GzipTar,
    Bzip2Tar,
    /// xz-compressed; whether it holds a tar is known only after decompressing.
    Xz,
}

/// Reads until `buf` is full or the input ends (decoders may return short reads).
pub(super) fn read_full(mut r: impl std::io::Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

pub(super) fn sniff_archive(path: &std::path::Path) -> Archive {
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
pub(super) fn plan_archive(
    host: &std::path::Path,
    kind: Archive,
    dest: &[u8],
    dir: &std::path::Path,
    owner: Option<(u32, u32)>,
    planned: &mut BTreeMap<BString, Planned>,
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
    let mut links: BTreeSet<BString> = BTreeSet::new();
    for e in ar.entries().map_err(io)? {
        let mut e = e.map_err(io)?;
        let raw = e.path_bytes().into_owned();
        let raw = raw.as_bstr();
        let Some(rel) = kiln_runtime::layer::view::normalize(raw) else {
            continue;
        };
        if rel.is_empty() {
            continue;
        }
        let layer_path = join(dest, &rel);
        if let Some(l) = links.iter().find(|l| {
            layer_path.len() > l.len()
                && layer_path.starts_with(l.as_slice())
                && layer_path[l.len()] == b'/'
        }) {
            return Err(BuildError::Other(format!(
                "{}: entry {raw} goes through the symlink /{l} the archive itself made; \
                 kiln refuses such archives",
                host.display()
            )));
        }
        let h = e.header().clone();
        let (uid, gid) =
            owner.unwrap_or((h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32));
        let mut meta = EntryMeta {
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            uid,
            gid,
            mtime: h.mtime().unwrap_or(0) as i64,
            ..Default::default()
        };
        let item = match h.entry_type() {
            tar::EntryType::Directory => Item::Dir,
            tar::EntryType::Symlink => {
                Item::Symlink(e.link_name_bytes().unwrap_or_default().into_owned().into())
            }
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
                    .link_name_bytes()
                    .and_then(kiln_runtime::layer::view::normalize)
                    .filter(|t| !t.is_empty())
                    .map(|t| join(dest, &t));
                match target {
                    Some(t)
                        if matches!(planned.get(&t).map(|p| &p.item), Some(Item::File { .. })) =>
                    {
                        // Unpacking a link entry sets the owner and mode of the one inode
                        // (moby's archive: lchown and chmod of the new name), so the file
                        // takes the link entry's.
                        if let Some(p) = planned.get_mut(&t) {
                            p.meta.uid = meta.uid;
                            p.meta.gid = meta.gid;
                            p.meta.mode = meta.mode;
                        }
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
            // A symlink has no mode of its own on Linux: 0777 whatever the header says.
            meta.mode = 0o777;
            links.insert(layer_path.clone());
        } else {
            links.remove(&layer_path);
        }
        planned.insert(
            layer_path,
            Planned {
                item,
                meta,
                fingerprint: format!(
                    "archive {archive_fp} {} {:o}",
                    fsutil::key_text(&rel),
                    h.mode().unwrap_or(0)
                ),
            },
        );
    }
    Ok(true)
}
