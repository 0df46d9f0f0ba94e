//! Hostile builds against the sandbox, end to end: nothing they do reaches the host.
//! - `WORKDIR /proc/self/fd/N` (CVE-2024-21626): kiln's inherited descriptors give no way out;
//! - writing through `/proc/self/exe` and `/proc/1/exe` (CVE-2019-5736) leaves kiln's binary
//!   and the shared base layer unchanged;
//! - `kiln run -w /proc/self/fd/N` likewise.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::{can_sandbox, kiln, store_with_base};

use sha2::Digest as _;

fn sha(path: &std::path::Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn workdir_through_proc_self_fd_does_not_escape() {
    if !can_sandbox("workdir_through_proc_self_fd_does_not_escape") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    let mut refused = 0;
    for n in 3..12 {
        let marker = format!("kiln-escape-{}-{n}", std::process::id());
        std::fs::write(
            c.join("Dockerfile"),
            format!(
                "FROM kiln.local/busybox\nWORKDIR /proc/self/fd/{n}\n\
                 RUN touch ../../../../../../../../{marker} ../{marker} {marker}; true\n"
            ),
        )
        .unwrap();
        let (code, _, err) = kiln(r, &["build", "--no-cache", c.to_str().unwrap()]);
        assert!(!err.contains("panicked"), "{err}");
        if code != 0 {
            assert!(
                err.contains("working directory"),
                "refused, naming why: {err}"
            );
            refused += 1;
        }
        for dir in ["/", "/tmp", r.to_str().unwrap(), "/proc/self/fd"] {
            assert!(
                !std::path::Path::new(dir).join(&marker).exists(),
                "fd {n}: a file appeared in {dir} on the host"
            );
        }
        // The same through `kiln run -w`.
        let (code, _, err) = kiln(
            r,
            &[
                "run",
                "--rm",
                "-w",
                &format!("/proc/self/fd/{n}"),
                "kiln.local/busybox",
                "sh",
                "-c",
                &format!("touch ../../../../../../{marker} {marker}"),
            ],
        );
        if code != 0 {
            assert!(err.contains("working directory"), "{err}");
        }
        assert!(!std::path::Path::new("/").join(&marker).exists());
    }
    assert_eq!(refused, 9, "every magic-link workdir is refused");
}

#[test]
fn proc_self_exe_cannot_overwrite_kiln_or_the_base_layer() {
    if !can_sandbox("proc_self_exe_cannot_overwrite_kiln_or_the_base_layer") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let kiln_bin = std::path::Path::new(env!("CARGO_BIN_EXE_kiln"));
    let before = sha(kiln_bin);
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\n\
         RUN for p in /proc/self/exe /proc/1/exe /proc/*/exe; do echo pwned > $p; done 2>/dev/null; \
             cp /bin/sh /tmp/sh2 && /tmp/sh2 -c 'echo pwned > /proc/self/exe; echo pwned > /proc/1/exe'; true\n",
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["build", "-t", "hostile", c.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha(kiln_bin), before, "kiln's binary is unchanged");
    // The shared unpacked base layer still holds the real busybox.
    let layers = r.join("layers");
    for l in std::fs::read_dir(&layers).unwrap() {
        let busybox = l.unwrap().path().join("bin/busybox");
        if busybox.exists() {
            let data = std::fs::read(&busybox).unwrap();
            assert!(
                data.len() > 100_000,
                "busybox was overwritten: {} bytes",
                data.len()
            );
        }
    }
    // And a container from the base still runs.
    let (code, out, err) = kiln(r, &["run", "--rm", "kiln.local/busybox", "echo", "fine"]);
    assert_eq!((code, out.as_str()), (0, "fine\n"), "{err}");
}

#[test]
fn mount_targets_resolve_inside_the_root() {
    if !can_sandbox("mount_targets_resolve_inside_the_root") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    let host = tempfile::tempdir().unwrap();
    let h = host.path().display().to_string();
    // An absolute symlink to a host directory: the mount lands inside the root.
    std::fs::write(
        c.join("Dockerfile"),
        format!(
            "FROM kiln.local/busybox\n\
             RUN mkdir -p {h} && ln -s {h} /out\n\
             RUN --mount=type=tmpfs,target=/out/x touch /out/x/y && test -e {h}/x/y\n"
        ),
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["build", "--progress", "plain", c.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        std::fs::read_dir(host.path()).unwrap().next().is_none(),
        "nothing created on the host"
    );
    // A target that resolves into /proc is refused (it could hide a masked path).
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\n\
         RUN ln -s /proc/sys/kernel /k\n\
         RUN --mount=type=tmpfs,target=/k true\n",
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["build", "--progress", "plain", c.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("Dockerfile:3:1"), "{err}");
    assert!(err.contains("mount /k: Operation not permitted"), "{err}");
    // `kiln run -v` through /proc/self/fd/N (CVE-2024-21626 shape) is refused too: named
    // before anything runs (nothing is mounted over /proc, runc's rule).
    for n in 3..8 {
        let v = format!("{}:/proc/self/fd/{n}/x", host.path().display());
        let (code, _, err) = kiln(r, &["run", "--rm", "-v", &v, "kiln.local/busybox", "true"]);
        assert_eq!(code, 125, "fd {n}");
        assert!(
            err.contains("cannot be mounted because it is not of type proc"),
            "{err}"
        );
    }
    assert!(std::fs::read_dir(host.path()).unwrap().next().is_none());
}

#[test]
fn host_processes_are_out_of_reach() {
    if !can_sandbox("host_processes_are_out_of_reach") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    // This test's own process (and kiln's) live on the host: no signal, no /proc entry, and
    // no way to ptrace them (busybox has no ptrace tool; /proc/PID is what ptrace would need).
    let me = std::process::id();
    std::fs::write(
        c.join("Dockerfile"),
        format!(
            "FROM kiln.local/busybox\n\
             RUN kill -0 {me} 2>/dev/null && exit 7; test -e /proc/{me} && exit 8; \
                 kill -0 $PPID 2>/dev/null && test $PPID -ne 0 && exit 9; \
                 ls /proc | grep -c '^[0-9]' > /procs; ls /proc/1/ns > /dev/null\n"
        ),
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["build", "-t", "p", c.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn refused_system_calls_fail_with_eperm() {
    if !can_sandbox("refused_system_calls_fail_with_eperm") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    // Without the filter a RUN could create a user namespace and hold CAP_SYS_ADMIN there.
    let (code, out, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "kiln.local/busybox",
            "sh",
            "-c",
            "grep '^Seccomp:' /proc/self/status; \
             for ns in -U -m -n -p; do unshare $ns true 2>&1; done; \
             mkdir /m && mount -t tmpfs t /m 2>&1; \
             sleep 0 & wait $! && echo fork ok",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["Seccomp:", "2"]
    );
    assert_eq!(
        lines[1..5]
            .iter()
            .filter(|l| l.contains("Operation not permitted"))
            .count(),
        4,
        "{out}"
    );
    assert!(
        lines[5].contains("Operation not permitted") || lines[5].contains("denied"),
        "{out}"
    );
    assert_eq!(lines.last(), Some(&"fork ok"), "ordinary clone still works");
}

/// docker's masked paths: a directory (`/proc/acpi`, `/sys/firmware`) under an empty read-only
/// tmpfs, a file (`/proc/keys`, `/proc/timer_list`) behind /dev/null; `--privileged` masks
/// nothing. (kiln looks at each path's type first instead of trying /dev/null everywhere.)
#[test]
fn masked_paths_hide_what_docker_hides() {
    if !can_sandbox("masked_paths_hide_what_docker_hides") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let script = "for d in /proc/acpi /sys/firmware; do [ -d $d ] && echo $d dir $(ls -A $d | wc -l); \
                  touch $d/x 2>/dev/null && echo $d writable; done; \
                  for f in /proc/keys /proc/timer_list; do echo $f $(wc -c < $f); done; \
                  grep -E ' /proc/acpi | /sys/firmware ' /proc/self/mountinfo | cut -d' ' -f5,6,9";
    let (code, out, err) = kiln(
        r,
        &["run", "--rm", "kiln.local/busybox", "sh", "-c", script],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("/proc/acpi dir 0\n"), "{out}");
    assert!(out.contains("/sys/firmware dir 0\n"), "{out}");
    assert!(!out.contains("writable"), "{out}");
    assert!(out.contains("/proc/keys 0\n"), "{out}");
    assert!(out.contains("/proc/timer_list 0\n"), "{out}");
    assert!(out.contains("/proc/acpi ro"), "{out}");
    assert!(out.contains("tmpfs"), "{out}");
    let (code, out, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "--privileged",
            "kiln.local/busybox",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("/proc/timer_list 0\n"),
        "privileged: not masked: {out}"
    );
}
