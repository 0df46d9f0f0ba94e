//! Never a silent wrong-platform layer: before a RUN executes, the program it starts (`/bin/sh`
//! for the shell form, found in PATH as the kernel's exec would) is read from the stage's layers,
//! and an ELF program for another architecture than the stage's platform is refused. Without
//! this, a base image whose config says arm64 but whose files are amd64 would run natively and
//! make an "arm64" image of amd64 programs (binfmt_misc only steps in for foreign programs).

use std::path::{Path, PathBuf};

use bstr::BString;
use kiln_runtime::{
    binfmt,
    layer::view::{NodeKind, View},
};

use super::StageState;

/// How many symlinks a lookup follows, as the kernel's limit.
const MAX_LINKS: usize = 40;

/// Checks the program `argv0` would start (looked up in `path`, relative names from `workdir`)
/// against the stage's platform. `lower` are the stage's layers unpacked, top first. A program
/// that is not in the layers, or is not ELF (a script), passes: exec itself reports those.
pub(super) fn check(
    st: &StageState,
    argv0: &str,
    path: &str,
    workdir: &str,
    lower: &[PathBuf],
) -> Result<(), String> {
    let platform = st.platform();
    let wanted = binfmt::machines_of(&platform.architecture);
    if wanted.is_empty() || lower.len() != st.layers.len() {
        return Ok(());
    }
    let view = st.view().map_err(|e| e.to_string())?;
    let candidates: Vec<String> = if argv0.contains('/') {
        vec![if argv0.starts_with('/') {
            argv0.to_string()
        } else {
            format!("{workdir}/{argv0}")
        }]
    } else {
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{d}/{argv0}"))
            .collect()
    };
    for c in candidates {
        let Some((file, layer)) = resolve(view, c.as_bytes()) else {
            continue;
        };
        let dir = &lower[lower.len() - 1 - layer];
        let on_disk = dir.join(kiln_runtime::layer::view::as_path(&file));
        let Some(machine) = header(&on_disk).as_deref().and_then(binfmt::elf_machine) else {
            return Ok(());
        };
        if wanted.contains(&machine) {
            return Ok(());
        }
        let is = binfmt::architecture_of(machine)
            .map_or_else(|| format!("ELF machine {machine}"), |a| a.to_string());
        return Err(format!(
            "{c} is a program for {is}, but the stage is for {platform}: its base image's \
             config names another platform than its files are for; use a base image built for \
             {platform}"
        ));
    }
    Ok(())
}

/// The first bytes of a file, enough for an ELF header.
fn header(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(20);
    std::fs::File::open(path)
        .ok()?
        .take(20)
        .read_to_end(&mut buf)
        .ok()?;
    Some(buf)
}

/// `path` resolved in the view as the kernel would resolve it in the root (symlinks in every
/// component, absolute ones from the root, `..` never above it): the regular file it names and
/// the index of the layer holding it.
fn resolve(view: &View, path: &[u8]) -> Option<(BString, usize)> {
    let mut todo: Vec<BString> = components(path);
    todo.reverse();
    let mut done: Vec<BString> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c.as_slice() == b".." {
            done.pop();
            continue;
        }
        done.push(c);
        let here = BString::from(done.join(&b'/'));
        let node = view.get(&here)?;
        match &node.kind {
            NodeKind::Symlink { target } => {
                links += 1;
                if links > MAX_LINKS {
                    return None;
                }
                done.pop();
                if target.starts_with(b"/") {
                    done.clear();
                }
                let mut more = components(target);
                more.reverse();
                todo.extend(more);
            }
            NodeKind::Hardlink { target } if todo.is_empty() => {
                let node = view.get(target)?;
                return matches!(node.kind, NodeKind::File { .. })
                    .then(|| (target.clone(), node.layer));
            }
            NodeKind::File { .. } if todo.is_empty() => return Some((here, node.layer)),
            _ if todo.is_empty() => return None,
            _ => {}
        }
    }
    None
}

/// A path's components, `.` and empty ones left out.
fn components(path: &[u8]) -> Vec<BString> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(BString::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_runtime::layer::view::Node;

    fn node(kind: NodeKind, layer: usize) -> Node {
        Node {
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            layer,
        }
    }

    #[test]
    fn programs_resolve_through_symlinked_directories_and_links() {
        let mut v = View::default();
        v.insert("usr", node(NodeKind::Dir, 0));
        v.insert("usr/bin", node(NodeKind::Dir, 0));
        v.insert(
            "bin",
            node(
                NodeKind::Symlink {
                    target: "usr/bin".into(),
                },
                0,
            ),
        );
        v.insert("usr/bin/busybox", node(NodeKind::File { size: 10 }, 1));
        v.insert(
            "usr/bin/sh",
            node(
                NodeKind::Symlink {
                    target: "/bin/busybox".into(),
                },
                0,
            ),
        );
        v.insert(
            "usr/bin/ash",
            node(
                NodeKind::Symlink {
                    target: "../bin/./sh".into(),
                },
                0,
            ),
        );
        v.insert(
            "loop",
            node(
                NodeKind::Symlink {
                    target: "loop".into(),
                },
                0,
            ),
        );
        assert_eq!(
            resolve(&v, b"/bin/sh"),
            Some((BString::from("usr/bin/busybox"), 1))
        );
        assert_eq!(
            resolve(&v, b"/usr/bin/ash"),
            Some((BString::from("usr/bin/busybox"), 1))
        );
        assert_eq!(resolve(&v, b"/../../bin/sh").map(|r| r.1), Some(1));
        assert_eq!(resolve(&v, b"/loop"), None);
        assert_eq!(resolve(&v, b"/usr/bin"), None);
        assert_eq!(resolve(&v, b"/nothing/sh"), None);
    }
}
