//! Hardening against hostile Dockerfiles, images and input, end to end. Each test here failed
//! before the fix it guards:
//! - device nodes a RUN step or a container makes cannot be used beyond Docker's allow-list
//!   (the devices cgroup; the kernel log, `/dev/kvm`, loop devices);
//! - the cgroups of a kiln killed with SIGKILL are removed by the next kiln process;
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::{can_sandbox, cgroups_of, kiln, store_with_base};

#[test]
fn device_nodes_outside_the_allow_list_cannot_be_used() {
    if !can_sandbox("device_nodes_outside_the_allow_list_cannot_be_used") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    // The host's kernel log (c 1 11): made, but a write is refused.
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\n\
         RUN mknod /tmp/k c 1 11 && echo kiln-device-test > /tmp/k && echo WR\"\"OTE\n",
    )
    .unwrap();
    let (code, out, err) = kiln(
        r,
        &[
            "build",
            "--no-cache",
            "--progress",
            "plain",
            c.to_str().unwrap(),
        ],
    );
    assert_ne!(
        code, 0,
        "the write to the kernel log went through: {out}{err}"
    );
    assert!(!err.contains("WROTE"), "{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    // The same from `kiln run`, for a loop device and /dev/kvm; null still works.
    let (code, out, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "kiln.local/busybox",
            "sh",
            "-c",
            "mknod /tmp/l b 7 0 && mknod /tmp/v c 10 232 && mknod /tmp/n c 1 3 && \
             (: < /tmp/l) 2>/dev/null && echo LOOP; (: < /tmp/v) 2>/dev/null && echo KVM; \
             echo ok > /tmp/n && echo NULL",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "NULL\n", "only the allowed device opened: {err}");
}

#[test]
fn cgroups_of_a_killed_kiln_are_removed_by_the_next_one() {
    if !can_sandbox("cgroups_of_a_killed_kiln_are_removed_by_the_next_one") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(r)
        .args([
            "run",
            "-m",
            "64m",
            "--pids-limit",
            "50",
            "kiln.local/busybox",
            "sleep",
            "60",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut made = Vec::new();
    for _ in 0..500 {
        made = cgroups_of(pid);
        if made.len() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        made.len() >= 2,
        "the container's cgroups appeared: {made:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // Without recovery they stay forever (any kiln process alone on its store may remove them
    // first: the sweep is machine-wide, and other tests run beside this one).
    // The next kiln alone on the store removes them; the sandbox may take a moment to die
    // (and hold the store until then), so a few tries, bounded.
    for _ in 0..50 {
        let (code, _, err) = kiln(r, &["ps", "-a"]);
        assert_eq!(code, 0, "{err}");
        if cgroups_of(pid).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        cgroups_of(pid),
        Vec::<std::path::PathBuf>::new(),
        "removed on the next open"
    );
}
