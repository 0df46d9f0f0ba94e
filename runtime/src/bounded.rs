//! Reading a file a user names (`-f`, `--env-file`, `--secret src=`), with a bound: `/dev/zero`
//! or a runaway pipe must give a clear error, not gigabytes of memory. Any kind of file may be
//! named (`-f /dev/stdin` and `<(...)` are pipes); only the amount read is bounded.

use std::{io::Read, path::Path};

/// The most kiln reads of a Dockerfile or an env file.
pub const TEXT_LIMIT: u64 = 16_000_000;
/// The most kiln reads of a build secret (BuildKit allows 500 KiB).
pub const SECRET_LIMIT: u64 = 512_000;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BoundedError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: larger than {limit}, the most kiln reads for {what}")]
    TooLarge {
        path: String,
        what: &'static str,
        limit: String,
    },
}

/// Reads all of `path`, failing once more than `limit` bytes come; `what` names the use in the
/// error ("a Dockerfile").
pub fn read(path: &Path, limit: u64, what: &'static str) -> Result<Vec<u8>, BoundedError> {
    let shown = || path.display().to_string();
    let io = |source| BoundedError::Io {
        path: shown(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    read_from(f, limit, what, &shown())
}

/// [`read`] from an open reader (standard input), named `name` in the error.
pub fn read_from(
    r: impl Read,
    limit: u64,
    what: &'static str,
    name: &str,
) -> Result<Vec<u8>, BoundedError> {
    let mut data = Vec::new();
    r.take(limit.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|source| BoundedError::Io {
            path: name.to_string(),
            source,
        })?;
    if data.len() as u64 > limit {
        return Err(BoundedError::TooLarge {
            path: name.to_string(),
            what,
            limit: kiln_parser::instruction::values::format_size(limit),
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_file_is_refused_at_the_limit() {
        let e = read(Path::new("/dev/zero"), 1000, "a test").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/zero: larger than 1kB, the most kiln reads for a test"
        );
        assert_eq!(read_from(&b"abc"[..], 3, "x", "-").unwrap(), b"abc");
        assert!(read_from(&b"abcd"[..], 3, "x", "-").is_err());
        assert!(
            read(Path::new("/no/such"), 3, "x")
                .unwrap_err()
                .to_string()
                .starts_with("/no/such: ")
        );
    }
}
