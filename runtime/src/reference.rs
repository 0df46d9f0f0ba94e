//! Image references as docker reads them (distribution's `reference` grammar): an optional
//! registry host (`host[:port]`, recognised by a `.` or `:` or as `localhost`), a path of
//! lowercase components (`[a-z0-9]+` joined by `.`, `_`, `__` or dashes), an optional `:tag`
//! (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`) and an optional `@sha256:<64 hex>`.
//!
//! Every name kiln is given (`-t`, `kiln tag`, a name inside a loaded archive) goes through
//! [`parse`] once, up front, so a bad name is refused before any work and with what is wrong
//! with it, and a name such as `../../../etc/passwd` never reaches the store.

/// Why a reference is not valid; each names the reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference {0:?}: empty")]
    Empty(String),
    #[error("invalid reference {0:?}: repository name must be lowercase")]
    Uppercase(String),
    #[error("invalid reference {0:?}: the name is longer than 255 characters")]
    TooLong(String),
    #[error("invalid reference {reference:?}: bad registry host {host:?}")]
    Host { reference: String, host: String },
    #[error(
        "invalid reference {reference:?}: bad path component {component:?} (lowercase letters \
         and digits, joined by '.', '_', '__' or '-')"
    )]
    Component {
        reference: String,
        component: String,
    },
    #[error(
        "invalid reference {reference:?}: bad tag {tag:?} (letters, digits, '_', '.' and '-', \
         at most 128, not starting with '.' or '-')"
    )]
    Tag { reference: String, tag: String },
    #[error("invalid reference {reference:?}: bad digest {digest:?} (sha256:<64 hex digits>)")]
    Digest { reference: String, digest: String },
}

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry host (`localhost:5000`, `kiln.local`), when named.
    pub host: Option<String>,
    /// The repository path below the host (`team/app`).
    pub path: String,
    pub tag: Option<String>,
    /// `sha256:...`.
    pub digest: Option<String>,
}

impl Reference {
    /// The repository: host and path.
    pub fn repository(&self) -> String {
        match &self.host {
            Some(h) => format!("{h}/{}", self.path),
            None => self.path.clone(),
        }
    }

    /// `repository:tag`, with docker's default tag `latest` when none is named (a local name).
    pub fn tagged(&self) -> String {
        format!(
            "{}:{}",
            self.repository(),
            self.tag.as_deref().unwrap_or("latest")
        )
    }
}

fn component_ok(c: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let dashes = sep.bytes().all(|x| x == b'-');
        if !(sep == "." || sep == "_" || sep == "__" || dashes) {
            return false;
        }
    }
    true
}

fn host_ok(h: &str) -> bool {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) if !n.starts_with('[') || n.ends_with(']') => (n, Some(p)),
        _ => (h, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|x| x.is_ascii_digit())) {
        return false;
    }
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return !v6.is_empty() && v6.bytes().all(|x| x.is_ascii_hexdigit() || x == b':');
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        })
}

fn tag_ok(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || b"_.-".contains(x))
}

/// Parses `s` as docker does.
pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
    let reference = s.to_string();
    if s.is_empty() {
        return Err(ReferenceError::Empty(reference));
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => {
            let ok = d.strip_prefix("sha256:").is_some_and(|h| {
                h.len() == 64 && h.bytes().all(|x| matches!(x, b'0'..=b'9' | b'a'..=b'f'))
            });
            if !ok {
                return Err(ReferenceError::Digest {
                    reference,
                    digest: d.to_string(),
                });
            }
            (r, Some(d.to_string()))
        }
        None => (s, None),
    };
    // A tag is after the last ':' that follows the last '/' (a host's port comes before it).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (
            &rest[..last_slash + i],
            Some(rest[last_slash + i + 1..].to_string()),
        ),
        None => (rest, None),
    };
    if let Some(t) = &tag {
        if !tag_ok(t) {
            return Err(ReferenceError::Tag {
                reference,
                tag: t.clone(),
            });
        }
    }
    if name.len() > 255 {
        return Err(ReferenceError::TooLong(reference));
    }
    let (host, path) = match name.split_once('/') {
        Some((first, p))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            if !host_ok(first) {
                return Err(ReferenceError::Host {
                    reference,
                    host: first.to_string(),
                });
            }
            (Some(first.to_string()), p)
        }
        _ => (None, name),
    };
    for c in path.split('/') {
        if !component_ok(c) {
            if c.bytes().any(|b| b.is_ascii_uppercase()) && component_ok(&c.to_ascii_lowercase()) {
                return Err(ReferenceError::Uppercase(reference));
            }
            return Err(ReferenceError::Component {
                reference,
                component: c.to_string(),
            });
        }
    }
    Ok(Reference {
        host,
        path: path.to_string(),
        tag,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_names() {
        for (s, tagged) in [
            ("app", "app:latest"),
            ("app:1.0", "app:1.0"),
            ("team/app_x__y-z.w", "team/app_x__y-z.w:latest"),
            ("localhost/busybox", "localhost/busybox:latest"),
            ("localhost:5000/team/app:v2", "localhost:5000/team/app:v2"),
            ("kiln.local/busybox", "kiln.local/busybox:latest"),
            ("Registry.Example.com/a", "Registry.Example.com/a:latest"),
            ("[::1]:5000/a:_x", "[::1]:5000/a:_x"),
            ("a---b", "a---b:latest"),
        ] {
            assert_eq!(parse(s).map(|r| r.tagged()), Ok(tagged.to_string()), "{s}");
        }
        let d = format!("app@sha256:{}", "a".repeat(64));
        assert_eq!(parse(&d).unwrap().digest.unwrap().len(), 71);
    }

    #[test]
    fn bad_names_say_why() {
        let why = |s: &str| parse(s).unwrap_err().to_string();
        assert!(why("App").contains("must be lowercase"));
        assert!(why("UPPER:bad").contains("must be lowercase"));
        assert!(why("../../../etc/passwd").contains("bad registry host \"..\""));
        assert!(why("a/../b").contains("bad path component \"..\""));
        assert!(why("a:b:c").contains("bad registry host") || why("a:b:c").contains("bad path"));
        assert!(why("app:-x").contains("bad tag \"-x\""));
        assert!(why("app:").contains("bad tag \"\""));
        assert!(why("a//b").contains("bad path component \"\""));
        assert!(why("a b").contains("bad path component"));
        assert!(why("app@sha256:12").contains("bad digest"));
        assert!(why(&"a".repeat(300)).contains("longer than 255"));
        assert!(why("").contains("empty"));
        assert!(why("-a").contains("bad path component"));
        assert!(why("a_").contains("bad path component"));
        assert!(why("a___b").contains("bad path component"));
    }
}
