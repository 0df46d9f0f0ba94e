//! The namespace sandbox, for real, on the busybox base image: pid 1 in its own pid namespace,
//! its own hostname, no host files, no network but loopback, Docker's masks and capabilities,
//! writes landing in the upper directory, exit codes passed through, and setup failures named.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::Root;

use std::path::Path;

use kiln_runtime::sandbox::{
    cgroup::{Cgroup, DeviceControl, Limits},
    process::{Network, SandboxError, Spec, Stdio, run},
};

#[test]
fn isolated_process_tree_host_and_network() {
    let Some(root) = Root::new("isolated_process_tree_host_and_network") else {
        return;
    };
    let host_dir = root.dir.path().display().to_string();
    let (code, out) = root.sh(
        &format!(
            "echo pid=$$; hostname; ls /sys/class/net; test -e {host_dir} && echo host-visible; \
             echo x > /dev/null && echo devnull-ok; cat /proc/timer_list | wc -c; \
             echo hi > /created; exit 3"
        ),
        |_| {},
    );
    assert_eq!(code, 3, "exit code passed through; output:\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["pid=1", "kiln", "lo", "devnull-ok", "0"],
        "pid 1, hostname, loopback only, no host path, /dev/null, timer_list masked"
    );
    assert!(
        !std::fs::read("/proc/timer_list").unwrap().is_empty(),
        "the masked file has content on the host"
    );
    assert_eq!(
        std::fs::read_to_string(root.dir.path().join("upper/created")).unwrap(),
        "hi\n",
        "writes land in the upper directory"
    );
    assert!(
        !Path::new("/created").exists(),
        "the host root is untouched"
    );
}

#[test]
fn privileges_are_dropped() {
    let Some(root) = Root::new("privileges_are_dropped") else {
        return;
    };
    // No CAP_SYS_ADMIN: mount fails. /proc/sys is read-only. Pid 1 is this shell.
    let (code, out) = root.sh(
        "mkdir -p /m; { mount -t tmpfs t /m && echo mounted; } 2>/dev/null; \
         { echo x > /proc/sys/kernel/domainname && echo proc-sys-written; } 2>/dev/null; \
         tr '\\0' ' ' < /proc/1/cmdline; echo; \
         grep CapBnd /proc/self/status",
        |_| {},
    );
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "no mount, no write to /proc/sys: {out}");
    assert!(
        lines[0].starts_with("sh -c mkdir"),
        "pid 1 is the shell: {out}"
    );
    assert_eq!(
        lines[1].split_whitespace().last(),
        Some("00000000a80425fb"),
        "Docker's default bounding set"
    );
    // Another user.
    let (code, out) = root.sh("id -u; id -g", |s| {
        s.uid = 1000;
        s.gid = 1001;
    });
    assert_eq!((code, out.as_str()), (0, "1000\n1001\n"));
}

#[test]
fn setup_failures_name_the_cause() {
    let Some(root) = Root::new("setup_failures_name_the_cause") else {
        return;
    };
    let spec = Spec::new(&root.mnt(), vec!["/bin/nope".into()]);
    let e = run(&spec, Stdio::null(), Stdio::null(), Stdio::null()).unwrap_err();
    assert!(
        matches!(&e, SandboxError::Setup { step, .. } if step == "exec /bin/nope"),
        "{e}"
    );
    assert!(e.to_string().contains("no such file or directory"), "{e}");
    let mut spec = Spec::new(&root.mnt(), vec!["true".into()]);
    spec.cwd = "/bin/busybox".into();
    let e = run(&spec, Stdio::null(), Stdio::null(), Stdio::null()).unwrap_err();
    assert!(e.to_string().starts_with("working directory: "), "{e}");
    assert!(e.to_string().contains("Not a directory"), "{e}");
    // A missing working directory is created, as docker and runc do.
    let (code, out) = root.sh("pwd", |s| s.cwd = "/no/such/dir".into());
    assert_eq!((code, out.as_str()), (0, "/no/such/dir\n"));
    // `..` is cleaned as docker cleans `-w`, never above `/`.
    let (code, out) = root.sh("pwd", |s| s.cwd = "/../tmp/x/..".into());
    assert_eq!((code, out.as_str()), (0, "/tmp\n"));
    // Host network when asked: the host's interfaces are visible.
    let (code, out) = root.sh("ls /sys/class/net | wc -l", |s| s.network = Network::Host);
    assert_eq!(code, 0);
    let host = std::fs::read_dir("/sys/class/net").unwrap().count();
    assert_eq!(out.trim(), host.to_string());
}

#[test]
fn a_leaked_directory_descriptor_is_no_way_out() {
    // CVE-2024-21626: a host directory descriptor open in kiln when the sandbox forks (here
    // deliberately without close-on-exec) and a working directory of /proc/self/fd/N.
    let Some(root) = Root::new("a_leaked_directory_descriptor_is_no_way_out") else {
        return;
    };
    let host = tempfile::tempdir().unwrap();
    let fd = rustix::fs::open(
        host.path(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let n = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let mut spec = Spec::new(
        &root.mnt(),
        vec!["sh".into(), "-c".into(), "touch escaped".into()],
    );
    spec.cwd = format!("/proc/self/fd/{n}");
    let result = run(&spec, Stdio::null(), Stdio::null(), Stdio::null());
    assert!(
        !host.path().join("escaped").exists(),
        "the process wrote into the host directory"
    );
    let e = result.unwrap_err();
    assert!(e.to_string().starts_with("working directory: "), "{e}");
    // And the descriptor itself did not reach the process.
    let (_, out) = root.sh(
        &format!("test -e /proc/self/fd/{n} && echo leaked; true"),
        |_| {},
    );
    assert_eq!(out, "");
    drop(fd);
}

/// Makes device nodes a host would not want a sandbox to use and tries each: `/dev/kmsg`
/// (c 1 11), `/dev/kvm` (c 10 232), `/dev/loop0` (b 7 0), `/dev/hwrng` (c 10 183). Prints
/// which could be made and which opened; null (c 1 3) must stay usable.
const DEVICE_PROBE: &str = "cd /tmp; for d in 'k c 1 11' 'kvm c 10 232' 'loop b 7 0' 'rng c 10 183' 'nul c 1 3'; do \
     set -- $d; rm -f $1; if mknod $1 $2 $3 $4 2>/dev/null; then echo made-$1; fi; \
     if [ -e $1 ] && (: < $1) 2>/dev/null; then echo opened-$1; fi; done; \
     : < /dev/null && echo devnull-ok";

#[test]
fn devices_outside_dockers_list_cannot_be_used() {
    let Some(root) = Root::new("devices_outside_dockers_list_cannot_be_used") else {
        return;
    };
    let has_v1 = Path::new("/sys/fs/cgroup/devices/devices.allow").exists();
    let has_v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        || Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists();
    let mut checked = 0;
    for (control, available) in [
        (DeviceControl::Every, has_v1 || has_v2),
        (DeviceControl::V1, has_v1),
        (DeviceControl::Bpf, has_v2),
    ] {
        if !available {
            eprintln!("skipped: {control:?} device control: not on this machine");
            continue;
        }
        let (join, unapplied) =
            Cgroup::create_with(&format!("dev-{control:?}"), &Limits::default(), control);
        assert!(unapplied.is_empty(), "{control:?}: {unapplied:?}");
        assert!(join.devices_controlled());
        let (code, out) = root.sh(DEVICE_PROBE, |s| s.cgroup = join);
        assert_eq!(code, 0, "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "made-k",
                "made-kvm",
                "made-loop",
                "made-rng",
                "made-nul",
                "opened-nul",
                "devnull-ok"
            ],
            "{control:?}: mknod works as in docker, but only null opens"
        );
        checked += 1;
    }
    // Neither mechanism: no mknod, and a node the image carries is unusable (nodev root).
    let (join, unapplied) =
        Cgroup::create_with("dev-none", &Limits::default(), DeviceControl::None);
    assert!(!join.devices_controlled());
    assert!(unapplied[0].contains("mknod is refused"), "{unapplied:?}");
    std::fs::create_dir_all(root.dir.path().join("upper/tmp")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.dir.path().join("upper/tmp/shipped"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 11),
    )
    .unwrap();
    let (code, out) = root.sh(
        &format!("{DEVICE_PROBE}; (: < /tmp/shipped) 2>/dev/null && echo opened-shipped; true"),
        |s| s.cgroup = join,
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["devnull-ok"], "{out}");
    assert!(checked > 0, "no device mechanism was tested");
}
