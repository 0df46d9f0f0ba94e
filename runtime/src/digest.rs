//! `sha256:<hex>` digests, validated so that a digest can safely name a file.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// A content digest. Only sha256 is produced; the hex part is always 64 lowercase hex digits,
/// so it can never contain `/` or `..` when used as a file name. Held inline (no allocation): a
/// build of a large context handles tens of thousands of them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    /// Lowercase ASCII hex, checked when made (so [`Digest::hex`] cannot fail).
    hex: [u8; 64],
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.hex())
    }
}

/// A string that is not a valid `sha256:<64 hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
pub struct BadDigest(pub String);

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::new_with_prefix(data))
    }

    /// The digest a sha256 hasher has accumulated.
    pub fn from_sha256(h: Sha256) -> Digest {
        Digest::from_bytes(h.finalize().into())
    }

    /// The digest whose 32 raw bytes are `raw`.
    pub fn from_bytes(raw: [u8; 32]) -> Digest {
        // By table, byte by byte (a build keys tens of thousands of file digests).
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 64];
        for (i, b) in raw.iter().enumerate() {
            hex[2 * i] = HEX[usize::from(b >> 4)];
            hex[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        Digest { hex }
    }

    /// The 32 raw bytes (the inverse of [`Digest::from_bytes`]).
    pub fn to_bytes(&self) -> [u8; 32] {
        let nibble = |c: u8| {
            if c.is_ascii_digit() {
                c - b'0'
            } else {
                c - b'a' + 10
            }
        };
        let mut raw = [0u8; 32];
        for (i, r) in raw.iter_mut().enumerate() {
            *r = (nibble(self.hex[2 * i]) << 4) | nibble(self.hex[2 * i + 1]);
        }
        raw
    }

    /// Parses `sha256:<hex>`.
    pub fn parse(s: &str) -> Result<Digest, BadDigest> {
        let bad = || BadDigest(s.to_string());
        let hex = s.strip_prefix("sha256:").ok_or_else(bad)?;
        let hex: [u8; 64] = hex.as_bytes().try_into().map_err(|_| bad())?;
        if !hex
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        {
            return Err(bad());
        }
        Ok(Digest { hex })
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        // Only ASCII hex digits are ever stored (checked by every constructor).
        std::str::from_utf8(&self.hex).unwrap_or_default()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        f.write_str(self.hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_and_parsing() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()), Ok(d));
        assert_eq!(Digest::from_bytes(d.to_bytes()), d);
        for bad in [
            "sha256:../../etc/passwd",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }
}
