//! Path and mode helpers for steps that change the filesystem: resolving paths inside the
//! rootfs without ever leaving it, `--chmod` (octal and symbolic), `--chown` resolution against
//! the image's own `/etc/passwd` and `/etc/group`, and RFC 3339 times.

use bstr::{BString, ByteSlice};
use kiln_runtime::layer::view::{NodeKind, View, normalize};

/// Joins `path` (absolute, or relative to `workdir`) into a clean absolute path.
pub fn absolute(workdir: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", workdir.trim_end_matches('/'))
    };
    let clean = crate::context::ignore::clean(&joined);
    if clean.starts_with('/') {
        clean
    } else {
        format!("/{clean}")
    }
}

/// Text for a cache key or a fingerprint that keeps every byte of `b`: UTF-8 as it is, anything
/// else escaped after a NUL, which no path or link target holds (so no UTF-8 name reads the same).
pub fn key_text(b: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(format!("\0{}", b.escape_ascii())),
    }
}

/// The first directory of `rel` (a path [`resolve_all_in_root`] gave), or `rel` itself when
/// `whole`, that exists in `view` as something else than a directory: a step that would write
/// into it fails with "not a directory", as in BuildKit, instead of replacing a file with a
/// directory and losing it.
pub fn not_a_directory(view: &View, rel: &[u8], whole: bool) -> Option<BString> {
    let rel = rel.trim_start_with(|c| c == '/');
    let parts: Vec<&[u8]> = rel
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let upto = if whole {
        parts.len()
    } else {
        parts.len().saturating_sub(1)
    };
    let mut prefix: Vec<u8> = Vec::with_capacity(rel.len());
    for part in &parts[..upto] {
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(part);
        match view.get(&prefix).map(|n| &n.kind) {
            None => return None,
            Some(NodeKind::Dir) => {}
            Some(_) => return Some(prefix.into()),
        }
    }
    None
}

/// Resolves symlinks in the directories of `path` inside the rootfs `view`: an absolute link
/// target restarts at the rootfs root, `..` never climbs above it (the rootfs is a chroot for
/// this purpose), and loops give up after 40 links. Returns the relative, resolved path. The
/// last component is not followed (COPY onto a link to a file replaces the link).
pub fn resolve_in_root(view: &View, path: impl AsRef<[u8]>) -> BString {
    resolve(view, path.as_ref(), false)
}

/// [`resolve_in_root`], following the last component too: where a directory is meant (a
/// WORKDIR, a COPY destination that is a directory), a link to one leads into it, as
/// BuildKit resolves paths in the root (`/bin -> usr/bin` on merged-/usr images).
pub fn resolve_all_in_root(view: &View, path: impl AsRef<[u8]>) -> BString {
    resolve(view, path.as_ref(), true)
}

fn resolve(view: &View, path: &[u8], follow_last: bool) -> BString {
    resolve_with(
        |p| match view.get(p).map(|n| &n.kind) {
            Some(NodeKind::Symlink { target }) => Some(target.as_slice()),
            _ => None,
        },
        path,
        follow_last,
    )
}

/// [`resolve_in_root`] over any tree whose symlinks `link_of` names (a path's target, `None`
/// for anything else): a build context, another stage's files. Paths are bytes.
pub fn resolve_with<'t>(
    link_of: impl Fn(&[u8]) -> Option<&'t [u8]>,
    path: &[u8],
    follow_last: bool,
) -> BString {
    let parts = |p: &[u8]| -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = p
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        v.reverse();
        v
    };
    let mut todo = parts(path);
    let mut done: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_slice() {
            b"." => continue,
            b".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let mut candidate = bstr::join("/", &done);
        if !candidate.is_empty() {
            candidate.push(b'/');
        }
        candidate.extend_from_slice(&c);
        // The last component is the entry itself: it is not followed (COPY replaces a link).
        let is_last = todo.is_empty() && !follow_last;
        match link_of(&candidate) {
            Some(target) if !is_last && hops < 40 => {
                hops += 1;
                if target.starts_with(b"/") {
                    done.clear();
                }
                todo.extend(parts(target));
            }
            _ => done.push(c),
        }
    }
    normalize(bstr::join("/", &done)).unwrap_or_default()
}

/// Applies a `--chmod` value to `mode` (`is_dir` matters for `X`). `None` if it is invalid.
pub fn apply_chmod(spec: &str, mode: u32, is_dir: bool) -> Option<u32> {
    if !spec.is_empty() && spec.len() <= 4 && spec.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return u32::from_str_radix(spec, 8).ok();
    }
    let mut mode = mode & 0o7777;
    for clause in spec.split(',') {
        let who_len = clause.find(|c| !"ugoa".contains(c)).unwrap_or(clause.len());
        let (who, mut rest) = clause.split_at(who_len);
        let mask = if who.is_empty() || who.contains('a') {
            0o7777
        } else {
            let mut m = 0;
            if who.contains('u') {
                m |= 0o4700;
            }
            if who.contains('g') {
                m |= 0o2070;
            }
            if who.contains('o') {
                m |= 0o1007;
            }
            m
        };
        if rest.is_empty() {
            return None;
        }
        while let Some(op) = rest.chars().next() {
            if !"+-=".contains(op) {
                return None;
            }
            rest = &rest[1..];
            let perm_len = rest.find(['+', '-', '=']).unwrap_or(rest.len());
            let (perms, tail) = rest.split_at(perm_len);
            rest = tail;
            let mut bits = 0u32;
            if matches!(perms, "u" | "g" | "o") {
                // Copy another class's bits (`g=u`).
                let src = match perms {
                    "u" => (mode >> 6) & 7,
                    "g" => (mode >> 3) & 7,
                    _ => mode & 7,
                };
                bits = src | (src << 3) | (src << 6);
            } else {
                for p in perms.chars() {
                    bits |= match p {
                        'r' => 0o444,
                        'w' => 0o222,
                        'x' => 0o111,
                        'X' if is_dir || mode & 0o111 != 0 => 0o111,
                        'X' => 0,
                        's' => 0o6000,
                        't' => 0o1000,
                        _ => return None,
                    };
                }
            }
            let bits = bits & mask;
            mode = match op {
                '+' => mode | bits,
                '-' => mode & !bits,
                _ => (mode & !(mask & 0o7777)) | bits,
            };
        }
    }
    Some(mode)
}

/// Looks `name` up in passwd/group text (`name:x:id:...`); returns (id, primary gid).
pub fn lookup_id(table: &str, name: &str) -> Option<(u32, Option<u32>)> {
    table.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name) && f.len() >= 3)
            .then(|| (f[2].parse().ok(), f.get(3).and_then(|g| g.parse().ok())))
            .and_then(|(id, gid)| id.map(|id| (id, gid)))
    })
}

pub use kiln_runtime::timefmt::{days_from_civil, parse_rfc3339, rfc3339};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_forms() {
        assert_eq!(apply_chmod("755", 0o644, false), Some(0o755));
        assert_eq!(apply_chmod("+x", 0o644, false), Some(0o755));
        assert_eq!(apply_chmod("u=rwX,go=rX", 0o600, true), Some(0o755));
        assert_eq!(apply_chmod("u=rwX,go=rX", 0o600, false), Some(0o644));
        assert_eq!(apply_chmod("g=u", 0o740, false), Some(0o770));
        assert_eq!(apply_chmod("a-w", 0o666, false), Some(0o444));
        assert_eq!(apply_chmod("u+s", 0o755, false), Some(0o4755));
        assert_eq!(apply_chmod("q", 0o644, false), None);
    }

    #[test]
    fn times_and_ids() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        let passwd = "root:x:0:0::/root:/bin/sh\nbuilder:x:1000:1001::/home:/bin/sh\n";
        assert_eq!(lookup_id(passwd, "builder"), Some((1000, Some(1001))));
        assert_eq!(lookup_id(passwd, "nobody"), None);
        assert_eq!(absolute("/app", "sub/../x"), "/app/x");
        assert_eq!(absolute("/app", "/etc/"), "/etc");
        assert_eq!(absolute("/", "../../x"), "/x");
    }
}
