//! Hardening against hostile Dockerfiles, images and input, end to end. Each test here failed
//! before the fix it guards:
//! - device nodes a RUN step or a container makes cannot be used beyond Docker's allow-list
//!   (the devices cgroup; the kernel log, `/dev/kvm`, loop devices);
//! - the cgroups of a kiln killed with SIGKILL are removed by the next kiln process;
//! - the store is private to its owner (another local user runs no setuid program of a layer
//!   and reads no private file), also a store made before, repaired when opened;
//! - `kiln load` refuses hostile images ([`common::hostile`]) before anything is keyed by them:
//!   a layer whose content is not its diff_id (it would poison busybox's shared directory),
//!   lying sizes, truncated gzip, unusable media types, layer bombs;
//! - substitutions nested 3000 deep are a located error in `build`, `check` and `cache
//!   explain`, not a stack overflow;
//! - an image whose /etc/passwd is a FIFO does not hang `kiln run`;
//! - files a user names are read bounded (`-f`, `--env-file`, `--secret src=` of /dev/zero);
//! - `--jobs 20000` starts no more threads than there is work for;
//! - `kiln rm -f` never kills a process that merely got a container's old pid;
//! - a COPY that fills the disk leaves no partial blob behind;
//! - names are checked once, up front, by one grammar: `-t`, `kiln tag`, names in archives,
//!   and secret sources;
//! - messages: a NUL byte in a RUN line or an env file, a
//!   step printing hundreds of megabytes without a newline: each named, each bounded;
//! - file capabilities (`security.capability`) survive an image's unpack and a COPY: they are
//!   set after the owner, whose chown(2) would clear them;
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
    let mut child = common::kiln_cmd(
        r,
        &[
            "run",
            "-m",
            "64m",
            "--pids-limit",
            "50",
            "kiln.local/busybox",
            "sleep",
            "60",
        ],
    )
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
    // The killed run's container is kept (as docker keeps a dead one) with its root and its
    // network namespace: removed, so nothing of it outlives the test's store.
    let (_, ids, _) = kiln(r, &["ps", "-aq"]);
    for id in ids.lines() {
        let (code, _, err) = kiln(r, &["rm", "-f", id]);
        assert_eq!(code, 0, "{err}");
    }
}

/// Runs `cmd` as the user nobody (uid and gid 65534, no groups, no capabilities): (success,
/// output).
fn as_nobody(cmd: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        // Through a shell: setpriv itself keeps root's capabilities up to its own execve, so
        // only a program it starts looks paths up as nobody really would.
        .args(["/bin/sh", "-c", "exec \"$@\"", "sh"])
        .args(cmd)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_store_is_private_to_its_owner() {
    if !can_sandbox("the_store_is_private_to_its_owner")
        || !common::have("setpriv", "the_store_is_private_to_its_owner")
    {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = common::context(
        "FROM kiln.local/busybox\n\
         RUN cp /bin/busybox /id && chmod 4755 /id && echo kiln-private > /p && chmod 600 /p \
             && mknod /k c 1 11 && chmod 666 /k\n\
         RUN true\n",
    );
    let c = ctx.path();
    let (code, _, err) = kiln(r, &["build", "-t", "priv", c.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // The first RUN's layer is unpacked (the second ran on it); the whole store is 0700 down.
    let mut setuid = Vec::new();
    let mut private = Vec::new();
    let mut devices = Vec::new();
    let mut walk = vec![r.to_path_buf()];
    while let Some(d) = walk.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.path().symlink_metadata().unwrap();
            use std::os::unix::fs::{FileTypeExt, PermissionsExt};
            if m.is_dir() {
                walk.push(e.path());
            } else if m.file_type().is_char_device() {
                devices.push(e.path());
            } else if m.is_file() && m.permissions().mode() & 0o4000 != 0 {
                setuid.push(e.path());
            } else if m.is_file() && std::fs::read(e.path()).unwrap() == b"kiln-private\n" {
                private.push(e.path());
            }
        }
    }
    assert!(!setuid.is_empty() && !private.is_empty() && !devices.is_empty());
    let check = |what: &str| {
        for s in &setuid {
            let (ran, out) = as_nobody(&[s.to_str().unwrap(), "-u"]);
            assert!(!ran, "{what}: nobody ran {}: {out}", s.display());
        }
        for p in &private {
            let (read, out) = as_nobody(&["cat", p.to_str().unwrap()]);
            assert!(!read, "{what}: nobody read {}: {out}", p.display());
        }
        for d in &devices {
            let (wrote, out) = as_nobody(&["sh", "-c", &format!(": > {}", d.display())]);
            assert!(!wrote, "{what}: nobody opened {}: {out}", d.display());
        }
    };
    check("a new store");
    // A store made before this rule (everything 0755) is repaired when next opened.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for d in ["", "blobs", "layers", "containers", "tmp"] {
        std::fs::set_permissions(r.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (ran, out) = as_nobody(&[setuid[0].to_str().unwrap(), "-u"]);
    assert!(
        ran,
        "opened up by hand, the store is open to others (else this proves nothing): {out} {setuid:?}"
    );
    let (code, _, err) = kiln(r, &["images"]);
    assert_eq!(code, 0, "{err}");
    for d in ["", "blobs", "layers", "containers", "tmp"] {
        assert_eq!(mode(&r.join(d)), 0o700, "{d}");
    }
    check("a repaired store");
}

#[test]
fn hostile_images_are_refused_at_load() {
    use common::hostile::{Hostile, write_layout};
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let cases = [
        (Hostile::PoisonedDiffId, "its content has diff_id"),
        (Hostile::LyingSize, "1099511627776 bytes"),
        (Hostile::TruncatedGzip, "the gzip stream is damaged"),
        (
            // gzip content labelled zstd.
            Hostile::MediaType("application/vnd.oci.image.layer.v1.tar+zstd".into()),
            "the media type says zstd, the content is not zstd",
        ),
        (
            Hostile::MediaType("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip".into()),
            "foreign (non-distributable) layer",
        ),
        (
            Hostile::MediaType("application/octet-stream".into()),
            "unsupported layer media type",
        ),
        (Hostile::GzipCalledTar, "the content is gzip"),
        (
            Hostile::DiffIdCount,
            "the manifest lists 2 layers, the config 1 diff_ids",
        ),
        (Hostile::LayerBomb(2000), "2000 layers: at most 127"),
    ];
    for (kind, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let tag = write_layout(dir.path(), &kind);
        // Twice: the second time the blobs are in the store already (no copy to check them).
        for attempt in ["first", "second"] {
            let (code, _, err) = kiln(r, &["load", "-i", dir.path().to_str().unwrap()]);
            assert_ne!(code, 0, "{kind:?} ({attempt} load) was accepted");
            assert!(err.contains(says), "{kind:?} ({attempt} load): {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
        let (_, out, _) = kiln(r, &["images"]);
        assert!(
            !out.contains(tag.split(':').next().unwrap()),
            "{kind:?}: {out}"
        );
    }
    assert!(
        !r.join("layers").exists() || std::fs::read_dir(r.join("layers")).unwrap().count() == 0,
        "nothing was unpacked"
    );
    // The real busybox, loaded after the poisoned image was refused, has no /POISONED.
    let (code, _, err) = kiln(r, &["load", "-i", common::BASE]);
    assert_eq!(code, 0, "{err}");
    if can_sandbox("hostile_images_are_refused_at_load") {
        let (code, out, err) = kiln(
            r,
            &[
                "run",
                "--rm",
                "kiln.local/busybox",
                "sh",
                "-c",
                "cat /POISONED; ls /",
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(!out.contains("poisoned"), "{out}");
        assert!(out.contains("bin"), "{out}");
    }
    let (code, out, err) = kiln(r, &["store", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    // A poisoned image that reached a store before these checks (its blobs copied in by hand,
    // then tagged) is found by `kiln store verify`.
    let dir = tempfile::tempdir().unwrap();
    write_layout(dir.path(), &Hostile::PoisonedDiffId);
    for e in std::fs::read_dir(dir.path().join("blobs/sha256"))
        .unwrap()
        .flatten()
    {
        std::fs::copy(e.path(), r.join("blobs/sha256").join(e.file_name())).unwrap();
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"][0]["digest"].as_str().unwrap();
    let (code, _, err) = kiln(r, &["tag", manifest, "old/poisoned"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = kiln(r, &["store", "verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("tag old/poisoned:latest: layer 1 of 1")
            && out.contains("its content has diff_id"),
        "{out}{err}"
    );
}

#[test]
fn deeply_nested_substitutions_are_a_located_error() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    let deep = format!("{}v{}", "${a:-".repeat(3000), "}".repeat(3000));
    std::fs::write(
        c.join("Dockerfile"),
        format!("FROM scratch\nENV x={deep}\nLABEL y={deep}\n"),
    )
    .unwrap();
    let dockerfile = c.join("Dockerfile");
    for args in [
        vec!["build", c.to_str().unwrap()],
        vec!["cache", "explain", c.to_str().unwrap()],
        vec!["check", "-f", dockerfile.to_str().unwrap()],
    ] {
        let (code, _, err) = kiln(r, &args);
        assert!(code == 0 || code == 1, "{args:?}: exit {code}: {err}");
        if args[0] != "check" {
            assert_eq!(code, 1, "{args:?}");
            assert!(err.contains("Dockerfile:2:1: error:"), "{args:?}: {err}");
            assert!(
                err.contains("substitutions nested more than 100 deep"),
                "{err}"
            );
            assert!(
                err.len() < 2000 + 2 * deep.len(),
                "{args:?}: the error is bounded"
            );
        }
    }
}

/// Runs kiln, killing it after `limit` (a hang is a failure, not a stuck suite).
fn kiln_bounded(root: &std::path::Path, args: &[&str], limit: u64) -> (Option<i32>, String) {
    let mut child = common::kiln_cmd(root, args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..limit * 20 {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (status.code(), text);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    (None, "killed: it hung".into())
}

#[test]
fn a_fifo_as_etc_passwd_does_not_hang_run() {
    if !can_sandbox("a_fifo_as_etc_passwd_does_not_hang_run") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = common::context(
        "FROM kiln.local/busybox\nRUN rm -f /etc/passwd /etc/group && mkfifo /etc/passwd /etc/group\n",
    );
    let c = ctx.path();
    let (code, _, err) = kiln(r, &["build", "-t", "fifo", c.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, out) = kiln_bounded(r, &["run", "--rm", "-u", "nobody", "fifo", "true"], 20);
    assert_eq!(code, Some(125), "{out}");
    assert!(out.contains("unable to find user nobody"), "{out}");
    // A number needs no passwd entry (the command must not read the FIFO itself: it would
    // hang under docker too).
    let (code, out) = kiln_bounded(r, &["run", "--rm", "-u", "1000", "fifo", "echo", "ran"], 20);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.trim(), "ran");
}

#[test]
fn user_named_files_are_read_bounded() {
    let root = store_with_base();
    let r = root.path();
    let ctx = common::context(
        "FROM kiln.local/busybox\nRUN --mount=type=secret,id=s cat /run/secrets/s | wc -c\n",
    );
    let c = ctx.path();
    let ctx_arg = c.to_str().unwrap();
    for (args, says) in [
        (
            vec!["build", "-f", "/dev/zero", ctx_arg],
            "kiln: error: /dev/zero: larger than 16MB, the most kiln reads for a Dockerfile\n",
        ),
        (
            vec![
                "run",
                "--env-file",
                "/dev/zero",
                "kiln.local/busybox",
                "true",
            ],
            "kiln: error: --env-file /dev/zero: larger than 16MB, the most kiln reads for an env file\n",
        ),
        (
            vec!["build", "--secret", "id=s,src=/dev/zero", ctx_arg],
            "secret s: /dev/zero: larger than 512kB, the most kiln reads for a secret",
        ),
    ] {
        let (code, err) = kiln_bounded(r, &args, 60);
        assert!(code.is_some_and(|c| c != 0), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // A missing file says its cause once.
    let (_, _, err) = kiln(r, &["build", "-f", "/no/such/Dockerfile", ctx_arg]);
    assert_eq!(
        err,
        "kiln: error: /no/such/Dockerfile: No such file or directory (os error 2)\n"
    );
}

#[test]
fn jobs_are_bounded_by_the_work() {
    if !can_sandbox("jobs_are_bounded_by_the_work") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = common::context(
        "FROM kiln.local/busybox AS a\nRUN sleep 1\nFROM kiln.local/busybox\nRUN sleep 1\n",
    );
    let c = ctx.path();
    let mut child = common::kiln_cmd(
        r,
        &[
            "build",
            "--no-cache",
            "--jobs",
            "20000",
            c.to_str().unwrap(),
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut most = 0;
    while child.try_wait().unwrap().is_none() {
        if let Ok(s) = std::fs::read_to_string(&status) {
            if let Some(n) = s
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<usize>().ok())
            {
                most = most.max(n);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(child.wait().unwrap().success());
    let cores = std::thread::available_parallelism().unwrap().get();
    // The pool (at most max(2 stages, cores)), the main thread, and per running RUN step a
    // sandbox thread and an output reader.
    assert!(most > 0, "the build was seen");
    assert!(most <= cores.max(2) + 1 + 2 * 2 + 2, "{most} threads");
}

#[test]
fn rm_force_never_kills_a_process_that_reused_the_pid() {
    use kiln_runtime::{procid::ProcessId, store::Container};
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // An unrelated process that got the pid a container's `kiln run` once had: same pid,
    // another start time.
    let mut bystander = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let now = ProcessId::of(i32::try_from(bystander.id()).unwrap()).unwrap();
    {
        let store = kiln_runtime::store::Store::open(r).unwrap();
        store
            .add_container(&Container {
                id: "f".repeat(64),
                name: "old".into(),
                image: "kiln.local/busybox".into(),
                command: "sleep 1000".into(),
                created: 1,
                pid: Some(ProcessId {
                    start: now.start.saturating_sub(100),
                    ..now
                }),
                ..Default::default()
            })
            .unwrap();
    }
    let (code, out, err) = kiln(r, &["ps", "-a"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("Up"), "not running: {out}");
    let (code, _, err) = kiln(r, &["rm", "-f", "old"]);
    assert_eq!(code, 0, "{err}");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the bystander was killed"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

#[test]
fn a_copy_that_fills_the_disk_leaves_no_partial_blob() {
    if !can_sandbox("a_copy_that_fills_the_disk_leaves_no_partial_blob") {
        return;
    }
    // The store on a 4 MiB tmpfs of its own.
    let mnt = tempfile::tempdir().unwrap();
    let r = mnt.path();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "kiln-enospc"])
        .arg(r)
        .status()
        .unwrap();
    assert!(status.success());
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
    let _unmount = Unmount(r);
    let (code, _, err) = kiln(r, &["load", "-i", common::BASE]);
    assert_eq!(code, 0, "{err}");
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    let big: Vec<u8> = (0..6_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(c.join("big"), big).unwrap();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\nCOPY big /big\n",
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["build", c.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    // Right after the failure, before any other kiln process could recover anything.
    let left: Vec<_> = std::fs::read_dir(r.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn names_and_sources_are_checked_up_front() {
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(c.join("Dockerfile"), "FROM kiln.local/busybox\nLABEL a=b\n").unwrap();
    let cx = c.to_str().unwrap();
    for (args, says) in [
        (
            vec!["build", "-t", "UPPER:bad", cx],
            "-t UPPER:bad: invalid reference \"UPPER:bad\": repository name must be lowercase",
        ),
        (
            vec!["build", "-t", "a:b:c", cx],
            "-t a:b:c: invalid reference \"a:b:c\": bad path component \"a:b\"",
        ),
        (
            vec!["build", "--secret", "id=s,src=/nonexistent", cx],
            "--secret id=s,src=/nonexistent: /nonexistent: No such file or directory",
        ),
        (
            vec!["tag", "kiln.local/busybox", "../../../etc/passwd"],
            "bad registry host \"..\"",
        ),
    ] {
        let (code, _, err) = kiln(r, &args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("#1 "), "refused before any step ran: {err}");
    }
    // A name inside an archive is held to the same grammar.
    let dir = tempfile::tempdir().unwrap();
    common::hostile::write_layout(dir.path(), &common::hostile::Hostile::LayerBomb(1));
    let index = dir.path().join("index.json");
    let text = std::fs::read_to_string(&index)
        .unwrap()
        .replace("hostile/layer-bomb:latest", "../../../etc/passwd");
    std::fs::write(&index, text).unwrap();
    let (code, _, err) = kiln(r, &["load", "-i", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("invalid reference \"../../../etc/passwd\""),
        "{err}"
    );
    let (_, out, _) = kiln(r, &["images"]);
    assert!(!out.contains("etc"), "{out}");
}

#[test]
fn odd_input_gets_a_clear_bounded_message() {
    if !can_sandbox("odd_input_gets_a_clear_bounded_message") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    let cx = c.to_str().unwrap();
    // A NUL byte in a RUN line, and in an env file.
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\nRUN echo a\0b\n",
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["build", cx]);
    assert_eq!(code, 1);
    assert!(
        err.contains("argument 2 of the command has a NUL byte"),
        "{err}"
    );
    std::fs::write(c.join("env"), "A=b\0c\n").unwrap();
    let env = c.join("env");
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "--env-file",
            env.to_str().unwrap(),
            "kiln.local/busybox",
            "true",
        ],
    );
    assert_eq!(code, 125);
    assert!(
        err.contains("environment variable \"A\" has a NUL byte"),
        "{err}"
    );
    std::fs::remove_file(&env).unwrap();
    // A step printing 300 MB without a newline: the log is clipped as BuildKit clips it, the
    // error's tail is short.
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\nRUN head -c 300000000 /dev/zero; false\n",
    )
    .unwrap();
    let (code, out, err) = kiln(r, &["build", "--progress", "plain", cx]);
    assert_eq!(code, 1);
    assert!(err.contains("[output clipped, log limit 2MiB reached]"));
    assert!(
        out.len() + err.len() < 3_000_000,
        "{} bytes",
        out.len() + err.len()
    );
}

#[test]
fn run_usage_errors_exit_125_as_docker_run() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for args in [
        vec!["run", "--bogus", "x"],
        vec!["run", "-m"],
        vec!["run", "--network", "bad", "x"],
        vec!["run", "-p", "8080:80/sctp", "x"],
        vec!["run", "-p", "99999:80", "x"],
        vec!["run", "no-such-image"],
    ] {
        let (code, _, err) = kiln(r, &args);
        assert_eq!(code, 125, "{args:?}: {err}");
    }
    // Bad mounts and docker's options kiln has not yet: named (with what to use meanwhile),
    // not clap's "unexpected argument".
    for (args, says) in [
        (
            vec!["run", "--mount", "type=bind,src=a,dst=/b", "x"],
            "must be an absolute host path",
        ),
        (
            vec!["run", "--mount", "type=npipe,dst=/b", "x"],
            "unsupported type",
        ),
        (
            vec!["run", "--platform", "linux", "x"],
            "invalid platform \"linux\": expected os/arch[/variant]",
        ),
    ] {
        let (code, _, err) = kiln(r, &args);
        assert_eq!(code, 125, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
    }
    // Other commands keep 2 for usage, 1 for failures.
    assert_eq!(kiln(r, &["build", "--bogus"]).0, 2);
    assert_eq!(kiln(r, &["tag", "a", "b"]).0, 1);
    assert_eq!(kiln(r, &["run", "--help"]).0, 0);
}

/// `security.capability` as `setcap cap_net_raw+ep` writes it (VFS_CAP_REVISION_2).
const CAP_NET_RAW_EP: [u8; 20] = [
    0x01, 0, 0, 0x02, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// The `security.capability` of every file named `name` under `dir` (not following links).
fn capabilities_of(dir: &std::path::Path, name: &str) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(p);
            } else if t.is_file() && e.file_name() == name {
                let mut v = vec![0u8; 64];
                out.push(
                    rustix::fs::lgetxattr(&p, "security.capability", &mut v)
                        .ok()
                        .map(|n| v[..n].to_vec()),
                );
            }
        }
    }
    out
}

#[test]
fn file_capabilities_survive_unpack_and_copy() {
    if !can_sandbox("file_capabilities_survive_unpack_and_copy") {
        return;
    }
    // An image whose root-owned /bin/ping carries cap_net_raw+ep, as iputils' package has it.
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("SCHILY.xattr.security.capability", &CAP_NET_RAW_EP[..])])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_size(4);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "ping", &b"ping"[..]).unwrap();
    let layer = b.into_inner().unwrap();
    let layout = tempfile::tempdir().unwrap();
    let tag = common::hostile::write_image(layout.path(), "caps", &layer);
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (code, _, err) = kiln(r, &["load", "-i", layout.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // Unpacked for a container: the attribute is there after the owner was set.
    let (code, out, err) = kiln(r, &["run", "--rm", &tag, "/ping"]);
    assert_ne!(code, 0, "ping is not a program: {out}");
    assert!(!err.contains("cannot unpack"), "{err}");
    let found = capabilities_of(&r.join("layers"), "ping");
    assert_eq!(
        found,
        vec![Some(CAP_NET_RAW_EP.to_vec())],
        "unpacked from the image"
    );

    // COPY from a context file with the attribute: kept in the layer, and in its unpacked
    // directory that a RUN on top reads.
    let base = store_with_base();
    let ctx = common::context("FROM kiln.local/busybox\nCOPY ping /ping\nRUN test -x /ping\n");
    let f = ctx.path().join("ping");
    std::fs::write(&f, "ping").unwrap();
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    rustix::fs::lsetxattr(
        &f,
        "security.capability",
        &CAP_NET_RAW_EP,
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let (code, _, err) = kiln(
        base.path(),
        &[
            "build",
            "-t",
            "caps:copy",
            &ctx.path().display().to_string(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let found = capabilities_of(&base.path().join("layers"), "ping");
    assert!(
        !found.is_empty()
            && found
                .iter()
                .all(|c| c.as_deref() == Some(&CAP_NET_RAW_EP[..])),
        "{found:?}"
    );
}

/// A layout whose multi-platform image nests an index inside its index (OCI allows it; no tool
/// writes it) loads none of it: an index entry is no image, so a hostile layout cannot nest
/// indexes without end. Beside a real image, an attestation entry (`unknown/unknown`) is left
/// out and the image loads.
#[test]
fn nested_indexes_in_a_layout_are_no_images() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("oci");
    let st = std::process::Command::new("cp")
        .arg("-r")
        .arg(common::BASE)
        .arg(&layout)
        .status()
        .unwrap();
    assert!(st.success());
    let put = |doc: &serde_json::Value| -> (String, usize) {
        let bytes = serde_json::to_vec(doc).unwrap();
        let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        std::fs::write(layout.join("blobs/sha256").join(&hex), &bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut image = index["manifests"][0].clone();
    image.as_object_mut().unwrap().remove("annotations");
    let amd64 = serde_json::json!({"os": "linux", "architecture": "amd64"});
    let index_of = |entries: Vec<serde_json::Value>| {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        })
    };
    let (inner, inner_size) = put(&index_of(vec![image.clone()]));
    let (outer, outer_size) = put(&index_of(vec![serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": inner, "size": inner_size, "platform": amd64,
    })]));
    let top = |digest: &str, size: usize| {
        serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": digest, "size": size,
                "annotations": {"org.opencontainers.image.ref.name": "deep:1"},
            }],
        })
        .to_string()
    };
    std::fs::write(layout.join("index.json"), top(&outer, outer_size)).unwrap();
    let root = tempfile::tempdir().unwrap();
    let (code, _, err) = kiln(root.path(), &["load", "-i", layout.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no image for this platform"), "{err}");
    let (_, out, _) = kiln(root.path(), &["images", "-q"]);
    assert!(out.trim().is_empty(), "{out}");

    // An index of the image and an attestation: the image loads, the attestation does not.
    let mut with_platform = image.clone();
    with_platform["platform"] = amd64;
    let attestation = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": image["digest"], "size": image["size"],
        "platform": {"os": "unknown", "architecture": "unknown"},
    });
    let (both, both_size) = put(&index_of(vec![with_platform, attestation]));
    std::fs::write(layout.join("index.json"), top(&both, both_size)).unwrap();
    let (code, _, err) = kiln(root.path(), &["load", "-i", layout.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = kiln(
        root.path(),
        &["inspect", "--format", "{{json .Platforms}}", "deep:1"],
    );
    assert_eq!(out.trim(), r#"["linux/amd64"]"#);
}
