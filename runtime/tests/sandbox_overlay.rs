//! The overlay root filesystem: many layers with long paths (over the one-page limit of the
//! legacy mount options), top-first precedence, awkward characters in paths, writes landing in
//! the upper directory, and errors that name the layer at fault.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::path::{Path, PathBuf};

mod common;
use common::can_mount;

use kiln_runtime::sandbox::overlay::{self, Overlay};

fn dirs(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let [u, w, m] = ["upper", "work", "mnt"].map(|n| {
        let p = root.join(n);
        std::fs::create_dir(&p).unwrap();
        p
    });
    (u, w, m)
}

#[test]
fn many_long_layers_top_first_and_writes_go_up() {
    if !can_mount("many_long_layers_top_first_and_writes_go_up") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let long = "l".repeat(90);
    let lower: Vec<PathBuf> = (0..150)
        .map(|i| {
            let p = t.path().join(format!("{long}{i:03}"));
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join(format!("f{i}")), i.to_string()).unwrap();
            std::fs::write(p.join("who"), i.to_string()).unwrap();
            p
        })
        .collect();
    let total: usize = lower.iter().map(|p| p.as_os_str().len() + 1).sum();
    assert!(total > 4096, "the layer list is over one page ({total})");
    let (upper, work, mnt) = dirs(t.path());
    let ov = Overlay {
        lower: &lower,
        upper: &upper,
        work: &work,
    };
    overlay::mount(ov, &mnt).unwrap();
    let seen = (
        std::fs::read_to_string(mnt.join("who")).ok(),
        (0..150).all(|i| mnt.join(format!("f{i}")).exists()),
        std::fs::write(mnt.join("f7"), "changed").is_ok(),
    );
    overlay::unmount(&mnt).unwrap();
    assert_eq!(
        seen,
        (Some("0".to_string()), true, true),
        "(top layer wins, every layer visible, write ok)"
    );
    assert_eq!(
        std::fs::read_to_string(upper.join("f7")).unwrap(),
        "changed"
    );
    assert_eq!(
        std::fs::read_to_string(lower[7].join("f7")).unwrap(),
        "7",
        "lower layers are never written"
    );
}

#[test]
fn awkward_characters_in_layer_paths() {
    if !can_mount("awkward_characters_in_layer_paths") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let l = t.path().join("a:b,c");
    std::fs::create_dir(&l).unwrap();
    std::fs::write(l.join("x"), "x").unwrap();
    let (upper, work, mnt) = dirs(t.path());
    let lower = [l];
    overlay::mount(
        Overlay {
            lower: &lower,
            upper: &upper,
            work: &work,
        },
        &mnt,
    )
    .unwrap();
    let x = std::fs::read_to_string(mnt.join("x")).ok();
    overlay::unmount(&mnt).unwrap();
    assert_eq!(x.as_deref(), Some("x"));
}

#[test]
fn a_missing_layer_is_named() {
    if !can_mount("a_missing_layer_is_named") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (upper, work, mnt) = dirs(t.path());
    let lower = [t.path().join("no-such-layer")];
    let e = overlay::mount(
        Overlay {
            lower: &lower,
            upper: &upper,
            work: &work,
        },
        &mnt,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("no-such-layer"), "{msg}");
    assert!(msg.contains(&mnt.display().to_string()), "{msg}");
    // Nothing was mounted.
    assert!(std::fs::read_dir(&mnt).unwrap().next().is_none());
}

/// A scratch mount is overlayfs' `volatile` (where the kernel has it), a plain mount is not;
/// a scratch upper mounted again (a `--rm` container started after its monitor died) mounts,
/// with its writes, instead of falling back to a copy.
#[test]
fn scratch_mounts_are_volatile_and_mount_again() {
    if !can_mount("scratch_mounts_are_volatile_and_mount_again") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let lower = vec![t.path().join("lower")];
    std::fs::create_dir(&lower[0]).unwrap();
    std::fs::write(lower[0].join("f"), "lower").unwrap();
    let (upper, work, mnt) = dirs(t.path());
    let ov = Overlay {
        lower: &lower,
        upper: &upper,
        work: &work,
    };
    let options = |mnt: &Path| {
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let me = mnt.display().to_string();
        table
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(me.as_str()))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .unwrap_or_default()
    };
    overlay::mount(ov, &mnt).unwrap();
    let plain = options(&mnt);
    overlay::unmount(&mnt).unwrap();
    overlay::mount_scratch(ov, &mnt).unwrap();
    let scratch = options(&mnt);
    std::fs::write(mnt.join("f"), "first").unwrap();
    overlay::unmount(&mnt).unwrap();
    assert!(plain.contains("upperdir="), "an overlay: {plain}");
    assert!(!plain.contains("volatile"), "{plain}");
    let kernel_has_it = work.join("work/incompat/volatile").exists();
    if !kernel_has_it {
        eprintln!("skipped: this kernel has no overlayfs volatile (before 5.10): {scratch}");
        return;
    }
    assert!(scratch.contains("volatile"), "{scratch}");
    // Again on the same directories: the kernel refuses `volatile` while its marker is there.
    overlay::mount_scratch(ov, &mnt).unwrap();
    let again = options(&mnt);
    let seen = std::fs::read_to_string(mnt.join("f")).unwrap();
    overlay::unmount(&mnt).unwrap();
    assert!(
        again.contains("volatile"),
        "an overlay again, not a copy: {again}"
    );
    assert_eq!(seen, "first", "the upper's writes are there");
}
