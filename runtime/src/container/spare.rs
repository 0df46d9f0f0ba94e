//! Spare container directories. A removed container's directory, its root unmounted, is
//! emptied down to what no container can see and waits in `ROOT/spare/` for the next new
//! container, which takes it with one rename instead of making the directories again.
//!
//! On an ext4 store a mkdir or an rmdir costs 60-70 us (a rename 23 us), and a container's
//! directory, its `work` and `rootfs`, and the `work/work/incompat` overlayfs makes are eight
//! of them each `kiln run --rm`: about 0.45 ms of 11, measured. Where the store's filesystem
//! is mounted with online discard, every block freed (a removed directory, a file cut to
//! nothing) is also discarded synchronously, 0.1-0.4 ms each: eight per `kiln run --rm` were
//! measured. So what a spare keeps is kept whole, and what must go without waiting for it goes
//! to `ROOT/trash/`, emptied while a later container runs ([`empty_trash`]).
//!
//! Kept: the directory itself; `rootfs` (the mount point, emptied); `work`, overlayfs'
//! scratch, whose `work/work` (with the `volatile` marker the kernel would refuse the next
//! mount for, and which the kernel would otherwise remove and make again at that mount) goes
//! to the trash; and the small files the next container rewrites in place (`/etc/hosts`,
//! `/etc/resolv.conf`, its layer list: [`crate::inplace`]). `upper` is always new: the
//! container's `/` is that directory, so its mode, owner, times and extended attributes are
//! the container's to change, and must not reach the next one. An empty one goes to the
//! trash; one the container wrote to is removed at once, so its space is free when `kiln run
//! --rm` returns, as docker's.

use std::path::Path;

use rustix::fs::{CWD, RenameFlags, renameat_with};

/// How many spare directories a store keeps: enough for a few `kiln run --rm` at once.
const KEEP: usize = 4;

/// The files a spare keeps, rewritten in place by the next container.
const KEPT_FILES: [&str; 3] = ["hosts", "resolv.conf", "layers"];

fn spare_dir(root: &Path) -> std::path::PathBuf {
    root.join("spare")
}

fn trash_dir(root: &Path) -> std::path::PathBuf {
    root.join("trash")
}

/// Removes what spares left in `ROOT/trash/` (overlayfs' old scratch directories). Called
/// while a container runs, so the time its removal takes is not the container's; what a
/// process ending first leaves, the next one removes.
pub(crate) fn empty_trash(root: &Path) {
    let Ok(entries) = std::fs::read_dir(trash_dir(root)) else {
        return;
    };
    for e in entries.flatten() {
        // Another kiln process may be removing the same entry: whatever it removed first is
        // simply not found here.
        let _ = std::fs::remove_dir_all(e.path());
    }
}

/// Makes `dir` (which must not exist) from a spare directory; false when there is none to
/// take (the caller makes it as usual).
pub(crate) fn take(root: &Path, dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(spare_dir(root)) else {
        return false;
    };
    for e in entries.flatten() {
        // NOREPLACE: a rename of a directory onto an empty one would replace it; `dir` is a
        // new container's and only this process makes it, but an existing one stays as it is.
        match renameat_with(CWD, e.path(), CWD, dir, RenameFlags::NOREPLACE) {
            Ok(()) => return true,
            // Another kiln process took this one first.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(_) => return false,
        }
    }
    false
}

/// Keeps `dir`, a removed container's directory with nothing mounted in it any more, as a
/// spare; false when it is not kept (enough spares, or something in it would not go), and
/// the caller removes it as before.
pub(crate) fn give(root: &Path, dir: &Path) -> bool {
    let spare = spare_dir(root);
    if std::fs::read_dir(&spare).is_ok_and(|d| d.count() >= KEEP) {
        return false;
    }
    let Some(name) = dir.file_name() else {
        return false;
    };
    if empty_to_skeleton(root, dir).is_err() {
        return false;
    }
    std::fs::create_dir_all(&spare).is_ok() && std::fs::rename(dir, spare.join(name)).is_ok()
}

/// Removes from `dir` everything but an empty `rootfs`, `work` (its `work/work` moved to the
/// trash) and the [`KEPT_FILES`]; an error when `rootfs` or `work` is missing or is not a
/// directory.
fn empty_to_skeleton(root: &Path, dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        let kind = e.file_type()?;
        let name = e.file_name();
        match name.to_str() {
            Some("rootfs") if kind.is_dir() => empty(&path)?,
            Some("work") if kind.is_dir() => {
                let scratch = path.join("work");
                if scratch.exists() {
                    to_trash(root, dir, &scratch, "work")?;
                }
            }
            // An upper directory the container wrote nothing to goes without waiting for its
            // removal; one it wrote to is removed now (its space is the user's at once).
            Some("upper") if kind.is_dir() && std::fs::read_dir(&path)?.next().is_none() => {
                to_trash(root, dir, &path, "upper")?;
            }
            Some(n) if kind.is_file() && KEPT_FILES.contains(&n) => {}
            _ if kind.is_dir() => std::fs::remove_dir_all(&path)?,
            _ => std::fs::remove_file(&path)?,
        }
    }
    for sub in ["rootfs", "work"] {
        if !std::fs::symlink_metadata(dir.join(sub))?.is_dir() {
            return Err(std::io::ErrorKind::NotADirectory.into());
        }
    }
    Ok(())
}

/// Moves `path`, of the container directory `dir`, to the trash as `<id>.<what>` (ids are
/// unique, so no other entry has that name).
fn to_trash(root: &Path, dir: &Path, path: &Path, what: &str) -> std::io::Result<()> {
    let trash = trash_dir(root);
    std::fs::create_dir_all(&trash)?;
    let id = dir.file_name().unwrap_or_default().to_string_lossy();
    std::fs::rename(path, trash.join(format!("{id}.{what}")))
}

/// Removes everything in directory `dir`, keeping it.
fn empty(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(e.path())?;
        } else {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container_dir(root: &Path, id: &str) -> std::path::PathBuf {
        let dir = root.join("containers").join(id);
        for d in ["upper/etc", "work/work/incompat/volatile", "rootfs/bin"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("work/work/incompat/volatile/dirty"), "").unwrap();
        std::fs::write(dir.join("upper/etc/secret"), "of the last container").unwrap();
        std::fs::write(dir.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        std::fs::create_dir(dir.join("netns-dir")).unwrap();
        dir
    }

    #[test]
    fn a_spare_keeps_nothing_the_last_container_saw_or_held() {
        let t = tempfile::tempdir().unwrap();
        let dir = container_dir(t.path(), "a");
        assert!(give(t.path(), &dir));
        assert!(!dir.exists());
        let next = t.path().join("containers/b");
        assert!(take(t.path(), &next));
        let mut left: Vec<String> = walk(&next);
        left.sort();
        // The hosts file is rewritten in place by the next container; the old scratch
        // directory, volatile marker and all, waits in the trash.
        assert_eq!(left, ["hosts", "rootfs", "work"]);
        let mut trash = walk(&t.path().join("trash"));
        trash.sort();
        assert_eq!(
            trash,
            [
                "a.work",
                "a.work/incompat",
                "a.work/incompat/volatile",
                "a.work/incompat/volatile/dirty"
            ]
        );
        empty_trash(t.path());
        assert!(walk(&t.path().join("trash")).is_empty());
        // Taken: no spare is left for the one after.
        assert!(!take(t.path(), &t.path().join("containers/c")));
    }

    #[test]
    fn an_upper_written_to_is_removed_and_an_empty_one_goes_to_the_trash() {
        let t = tempfile::tempdir().unwrap();
        let written = container_dir(t.path(), "a");
        assert!(give(t.path(), &written));
        let empty = container_dir(t.path(), "b");
        std::fs::remove_dir_all(empty.join("upper/etc")).unwrap();
        assert!(give(t.path(), &empty));
        let mut trash = std::fs::read_dir(t.path().join("trash"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect::<Vec<_>>();
        trash.sort();
        assert_eq!(trash, ["a.work", "b.upper", "b.work"]);
    }

    #[test]
    fn a_spare_never_replaces_an_existing_directory() {
        let t = tempfile::tempdir().unwrap();
        assert!(give(t.path(), &container_dir(t.path(), "a")));
        let existing = t.path().join("containers/b");
        std::fs::create_dir_all(&existing).unwrap();
        std::fs::write(existing.join("log"), "kept").unwrap();
        assert!(!take(t.path(), &existing));
        assert_eq!(
            std::fs::read_to_string(existing.join("log")).unwrap(),
            "kept"
        );
    }

    #[test]
    fn only_a_few_spares_are_kept() {
        let t = tempfile::tempdir().unwrap();
        let kept = (0..KEEP + 2)
            .filter(|i| give(t.path(), &container_dir(t.path(), &format!("c{i}"))))
            .count();
        assert_eq!(kept, KEEP);
        assert_eq!(
            std::fs::read_dir(t.path().join("spare")).unwrap().count(),
            KEEP
        );
    }

    #[test]
    fn a_directory_without_its_skeleton_is_not_kept() {
        let t = tempfile::tempdir().unwrap();
        let dir = container_dir(t.path(), "a");
        std::fs::remove_dir_all(dir.join("rootfs")).unwrap();
        std::fs::write(dir.join("rootfs"), "not a directory").unwrap();
        assert!(!give(t.path(), &dir));
        assert!(!take(t.path(), &t.path().join("containers/b")));
    }

    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()).into_iter().map(|s| format!("{name}/{s}")));
            }
            out.push(name);
        }
        out
    }
}
