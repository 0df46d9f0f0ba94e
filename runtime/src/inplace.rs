//! Small files rewritten in place.
//!
//! A file cut to nothing before it is written again frees its block, and a filesystem mounted
//! with online discard (`-o discard`, common on SSDs and cloud disks) discards a freed block
//! synchronously: 0.1-0.4 ms each, measured on such an ext4, where the write itself takes
//! microseconds. A container directory taken from the spares (`container::spare`) holds its
//! `/etc/hosts`, `/etc/resolv.conf` and layer list already, so they are rewritten here instead.

use std::{io::Write, path::Path};

/// Writes `bytes` as the whole of file `path`: from its start, then cut to their length (a
/// block is freed only when the file shrinks past it). Creates the file when it is missing.
pub fn overwrite(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    f.write_all(bytes)?;
    f.set_len(bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shorter_text_leaves_nothing_of_the_longer_one() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("hosts");
        overwrite(&p, b"127.0.0.1 localhost a-long-hostname\n").unwrap();
        overwrite(&p, b"::1 localhost\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"::1 localhost\n");
        overwrite(&p, b"").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"");
    }
}
