//! `kiln run` end to end on the example image: docker's entrypoint/cmd/args rules, env, user,
//! workdir, hostname, network, stdin passed through, exit codes, named failures, and nothing
//! left behind.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::{can_sandbox, cgroups_of, kiln, kiln_pid, store_with_base};

use std::{io::Write, process::Stdio};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/example");

#[test]
fn runs_the_example_with_dockers_rules() {
    if !can_sandbox("runs_the_example_with_dockers_rules") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let (code, _, err) = kiln(r, &["build", "-q", "-t", "example", EXAMPLE]);
    assert_eq!(code, 0, "{err}");
    let run = |args: &[&str]| {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(args);
        kiln(r, &a)
    };
    assert_eq!(
        run(&["example"]).1,
        "hello from kiln, friend\n",
        "ENTRYPOINT + CMD"
    );
    assert_eq!(
        run(&["example", "there"]).1,
        "hello from kiln, there\n",
        "args replace CMD"
    );
    let env_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(env_file.path(), "# comment\nFROM_FILE=yes\n\n").unwrap();
    let (code, out, err) = run(&[
        "--entrypoint",
        "sh",
        "-e",
        "X=1",
        "-e",
        "GREETING_USER=override",
        "--env-file",
        env_file.path().to_str().unwrap(),
        "-w",
        "/tmp",
        "-u",
        "0:0",
        "--hostname",
        "h1",
        "--network",
        "none",
        "example",
        "-c",
        "echo $X $FROM_FILE $GREETING_USER $HOME; id -u; pwd; hostname; ls /sys/class/net; exit 4",
    ]);
    assert_eq!(code, 4, "the container's exit code: {err}");
    assert_eq!(out, "1 yes override /root\n0\n/tmp\nh1\nlo\n");
    // The image's USER (1000) and its HOME from /etc/passwd, by default.
    let (_, out, _) = run(&["--entrypoint", "sh", "example", "-c", "id -u; echo $HOME"]);
    assert_eq!(out, "1000\n/home\n");

    // Generated /etc/hosts (localhost and the hostname) and the host's resolv.conf.
    let (code, out, err) = run(&[
        "--entrypoint",
        "cat",
        "--hostname",
        "h2",
        "example",
        "/etc/hosts",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("127.0.0.1\tlocalhost\n") && out.contains("\th2\n"),
        "{out}"
    );
    if let Ok(host) = std::fs::read_to_string("/etc/resolv.conf") {
        let (_, out, _) = run(&["--entrypoint", "cat", "example", "/etc/resolv.conf"]);
        assert_eq!(out, host);
    }

    // stdin is passed through with -i (without it the container reads nothing, as docker).
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(r)
        .args(["run", "--rm", "-i", "--entrypoint", "cat", "example"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");

    // Failures are named.
    let (code, _, err) = run(&["--pull", "never", "no/such:image"]);
    assert_eq!(code, 125, "docker's code for a failure of the runner");
    assert!(err.contains("no such image: no/such:image"), "{err}");
    let (code, _, err) = run(&["--entrypoint", "/nope", "example"]);
    assert_eq!(code, 127, "docker's code for a missing command");
    assert!(
        err.contains("exec: \"/nope\": stat /nope: no such file or directory"),
        "{err}"
    );
    let (code, _, err) = run(&["--entrypoint", "/etc/passwd", "example"]);
    assert_eq!(
        code, 126,
        "docker's code for a command that cannot run: {err}"
    );
    assert!(
        err.contains("exec: \"/etc/passwd\": permission denied"),
        "{err}"
    );
    let (code, _, err) = run(&["-u", "nobody-here", "example"]);
    assert_eq!(code, 125);
    assert!(err.contains("unable to find user nobody-here"), "{err}");

    // Nothing left: no container directory, no mount.
    let left: Vec<_> = std::fs::read_dir(r.join("containers")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&r.display().to_string()));
}

#[test]
fn volumes_read_only_root_and_a_created_workdir() {
    if !can_sandbox("volumes_read_only_root_and_a_created_workdir") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let host = tempfile::tempdir().unwrap();
    let h = host.path();
    std::fs::write(h.join("in"), "from host\n").unwrap();
    let data = format!("{}:/data", h.display());
    let ro = format!("{}:/ro:ro", h.display());
    let fresh = h.join("made/by/kiln");
    let made = format!("{}:/made", fresh.display());
    let (code, out, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "-v",
            &data,
            "-v",
            &ro,
            "-v",
            &made,
            "-w",
            "/new/dir",
            "kiln.local/busybox",
            "sh",
            "-c",
            "cat /data/in; echo back > /data/out; touch /ro/x 2>/dev/null || echo ro refused; \
             touch /made/f; pwd",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "from host\nro refused\n/new/dir\n");
    assert_eq!(std::fs::read_to_string(h.join("out")).unwrap(), "back\n");
    assert!(!h.join("x").exists());
    assert!(
        fresh.join("f").exists(),
        "a missing host directory is created, as docker -v does"
    );

    // --read-only: the root cannot be written; /dev/shm and volumes still can.
    let (code, out, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "--read-only",
            "-v",
            &data,
            "kiln.local/busybox",
            "sh",
            "-c",
            "touch /x 2>/dev/null || echo root refused; touch /dev/shm/y && echo shm ok; \
             echo again > /data/out && echo volume ok",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "root refused\nshm ok\nvolume ok\n");

    // Bad -v specs are named, before anything runs.
    for (spec, msg) in [
        ("a/b:/x", "invalid characters for a local volume name"),
        ("/tmp:relative", "must be absolute"),
        ("/tmp:/x:shared", "unsupported option \"shared\""),
        ("/tmp:/x:nocopy", "unsupported option \"nocopy\""),
    ] {
        let (code, _, err) = kiln(
            r,
            &["run", "--rm", "-v", spec, "kiln.local/busybox", "true"],
        );
        assert_ne!(code, 0);
        assert!(err.contains(msg), "{spec}: {err}");
    }
}

#[test]
fn signals_to_kiln_reach_the_container() {
    if !can_sandbox("signals_to_kiln_reach_the_container") {
        return;
    }
    let root = store_with_base();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root.path())
        .args([
            "run",
            "--rm",
            "kiln.local/busybox",
            "sh",
            "-c",
            // Bounded (10 s), so a lost signal fails the test instead of hanging it.
            "trap 'echo got TERM; exit 3' TERM; echo ready; for i in $(seq 200); do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(rest, "got TERM\n", "the container's own handler ran");
    assert_eq!(
        status.code(),
        Some(3),
        "kiln exits with the container's code"
    );
}

#[test]
fn memory_and_pids_limits_hold() {
    if !can_sandbox("memory_and_pids_limits_hold") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    fn run<'a>(args: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(args);
        a.push("kiln.local/busybox");
        a
    }
    // A 64 MiB buffer under a 16 MiB limit: the kernel's OOM killer ends it (128 + SIGKILL).
    let mut pids = Vec::new();
    let dd = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"];
    let (code, err, pid) = kiln_pid(r, &[run(&["-m", "16m"]), dd.to_vec()].concat());
    pids.push(pid);
    assert!(!err.contains("warning"), "{err}");
    assert_eq!(code, 137, "{err}");
    let (code, err, pid) = kiln_pid(r, &[run(&["-m", "128m"]), dd.to_vec()].concat());
    pids.push(pid);
    assert_eq!(code, 0, "{err}");
    // Six background processes under a limit of four: forks fail.
    let sh = ["sh", "-c", "for i in 1 2 3 4 5 6; do sleep 1 & done; wait"];
    let (code, err, pid) = kiln_pid(r, &[run(&["--pids-limit", "4"]), sh.to_vec()].concat());
    pids.push(pid);
    assert_ne!(code, 0);
    assert!(err.contains("can't fork"), "{err}");
    // Bad values are named.
    let (code, _, err) = kiln(r, &[run(&["-m", "1k"]), vec!["true"]].concat());
    assert_ne!(code, 0);
    assert!(err.contains("--memory 1k: the minimum is 6m"), "{err}");
    // The cgroups are gone afterwards.
    for pid in pids {
        assert_eq!(
            cgroups_of(pid),
            Vec::<std::path::PathBuf>::new(),
            "left behind"
        );
    }
}

#[test]
fn containers_are_kept_named_listed_and_removed() {
    if !can_sandbox("containers_are_kept_named_listed_and_removed") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let img = "kiln.local/busybox";
    // Without --rm the container is kept, with its changes and how it ended.
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "--name",
            "web",
            img,
            "sh",
            "-c",
            "echo hi > /f; exit 4",
        ],
    );
    assert_eq!(code, 4, "{err}");
    let (code, _, err) = kiln(r, &["run", "--name", "web", img, "true"]);
    assert_eq!(code, 125, "a taken name is docker's 125");
    assert!(
        err.contains("the container name \"web\" is already in use"),
        "{err}"
    );
    let (_, out, _) = kiln(r, &["ps"]);
    assert_eq!(
        out.lines().count(),
        1,
        "only the header: nothing runs\n{out}"
    );
    let (_, out, _) = kiln(r, &["ps", "-a"]);
    let row = out
        .lines()
        .find(|l| l.contains("web"))
        .unwrap_or_default()
        .to_string();
    assert!(row.contains("Exited (4)") && row.contains(img), "{out}");
    let store = kiln_runtime::store::Store::open(r).unwrap();
    let c = store.find_container("web").unwrap().unwrap();
    let upper = r.join("containers").join(&c.id).join("upper/f");
    assert_eq!(
        std::fs::read_to_string(&upper).unwrap(),
        "hi\n",
        "its changes are kept"
    );
    // A generated name when none is given; --rm leaves nothing.
    let (code, _, _) = kiln(r, &["run", img, "true"]);
    assert_eq!(code, 0);
    assert_eq!(store.containers().unwrap().len(), 2);
    let (code, _, _) = kiln(r, &["run", "--rm", img, "true"]);
    assert_eq!(code, 0);
    assert_eq!(store.containers().unwrap().len(), 2);
    // Bad names are refused before anything runs.
    let (code, _, err) = kiln(r, &["run", "--name=x/y", img, "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("invalid container name"), "{err}");
    // Detached too, and nothing of it stays (its monitor made a directory for its log).
    let dirs = || std::fs::read_dir(r.join("containers")).unwrap().count();
    let before = dirs();
    for bad in ["--name=x/y", "--name=web"] {
        let (code, _, err) = kiln(r, &["run", "-d", bad, img, "true"]);
        assert_eq!(code, 125, "{err}");
    }
    assert_eq!(dirs(), before);
    let (code, out, err) = kiln(r, &["store", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    // rm: by name and by id prefix; unknown names are errors.
    let other = store
        .containers()
        .unwrap()
        .into_iter()
        .find(|c| c.name != "web")
        .unwrap();
    let (code, out, err) = kiln(r, &["rm", "web", &other.id[..8], "nope"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(out, format!("web\n{}\n", &other.id[..8]));
    assert!(err.contains("no such container: nope"), "{err}");
    assert!(store.containers().unwrap().is_empty());
    let left: Vec<_> = std::fs::read_dir(r.join("containers")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");

    // A running container is listed as such and `rm -f` ends it.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(r)
        .args([
            "run",
            "--name",
            "long",
            img,
            "sh",
            "-c",
            "echo up; sleep 60",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let (_, out, _) = kiln(r, &["ps"]);
    assert!(out.contains("long") && out.contains("Up "), "{out}");
    let (code, _, err) = kiln(r, &["rm", "long"]);
    assert_eq!(code, 1);
    assert!(err.contains("is running"), "{err}");
    let (code, _, err) = kiln(r, &["rm", "-f", "long"]);
    assert_eq!(code, 0, "{err}");
    child.wait().unwrap();
    assert!(store.containers().unwrap().is_empty());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&r.display().to_string()), "no mount left");
}

#[test]
fn rm_force_ends_every_process_of_a_non_root_container() {
    if !can_sandbox("rm_force_ends_every_process_of_a_non_root_container") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    // A marker argument only this test's processes carry.
    let marker = format!("{}", 900_000 + std::process::id() % 99_999);
    let script = format!("sleep {marker} & sleep {marker}");
    for user in ["0", "1000"] {
        let name = format!("nr{user}");
        let mut child = common::kiln_cmd(
            r,
            &[
                "run",
                "--name",
                &name,
                "-u",
                user,
                "kiln.local/busybox",
                "sh",
                "-c",
                &script,
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
        let count = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter(|p| {
                    std::fs::read(p.path().join("cmdline"))
                        .is_ok_and(|c| c == format!("sleep\0{marker}\0").as_bytes())
                })
                .count()
        };
        for _ in 0..500 {
            if count() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(count(), 2, "user {user}: the container runs");
        let (code, _, err) = kiln(r, &["rm", "-f", &name]);
        assert_eq!(code, 0, "{err}");
        child.wait().unwrap();
        for _ in 0..100 {
            if count() == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(
            count(),
            0,
            "user {user}: a process of the container outlived rm -f"
        );
    }
}

/// RUN steps and containers get the machine's transparent huge page setting, not the one kiln
/// sets for itself (the kernel keeps `PR_SET_THP_DISABLE` across fork and exec): a Go compiler
/// or a JVM in a RUN step ran a third slower without huge pages.
#[test]
fn containers_get_the_machines_huge_page_setting() {
    const TEST: &str = "containers_get_the_machines_huge_page_setting";
    if !can_sandbox(TEST) {
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let Some(ours) = status.lines().find(|l| l.starts_with("THP_enabled:")) else {
        eprintln!("skipped: {TEST}: this kernel does not report THP_enabled");
        return;
    };
    let root = store_with_base();
    let r = root.path();
    let (code, out, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "kiln.local/busybox",
            "grep",
            "THP_enabled",
            "/proc/self/status",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), ours.trim());
    let ctx =
        common::context("FROM kiln.local/busybox\nRUN grep THP_enabled /proc/self/status > /thp\n");
    let (code, _, err) = kiln(
        r,
        &["build", "-q", "-t", "thp", ctx.path().to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = kiln(r, &["run", "--rm", "thp", "cat", "/thp"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), ours.trim());
}

/// The points /etc/hosts and /etc/resolv.conf are bound over, where the image lacks them, come
/// from a layer kiln makes once per image: a container's own changes hold none of them (nor a
/// copy of /etc), /etc keeps the image's owner, mode and time, and the layer goes when the
/// image's unpacked layers are pruned.
#[test]
fn mount_points_are_a_layer_of_their_own() {
    if !can_sandbox("mount_points_are_a_layer_of_their_own") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let image = "kiln.local/busybox";
    // The base image has an /etc without hosts or resolv.conf.
    let (code, out, err) = kiln(
        r,
        &[
            "run",
            "--name",
            "stubbed",
            image,
            "sh",
            "-c",
            "cat /etc/hosts | head -1; stat -c '%a %u %Y' /etc",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("127.0.0.1\tlocalhost"), "{out}");
    let (_, id, _) = kiln(r, &["inspect", "-f", "{{.Id}}", "stubbed"]);
    let upper = r.join("containers").join(id.trim()).join("upper");
    assert!(upper.is_dir(), "{}", upper.display());
    assert!(
        !upper.join("etc").exists(),
        "the container's changes have no /etc: {:?}",
        std::fs::read_dir(&upper)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect::<Vec<_>>()
    );
    let (code, diff, err) = kiln(r, &["diff", "stubbed"]);
    assert_eq!((code, diff.as_str()), (0, ""), "{err}");
    // /etc as the image has it (its layer, unpacked: the stub layer copies it).
    let layers =
        std::fs::read_to_string(r.join("containers").join(id.trim()).join("layers")).unwrap();
    let base_etc = layers
        .lines()
        .map(|l| r.join("layers").join(l).join("etc"))
        .find(|p| p.is_dir())
        .unwrap();
    let m = std::fs::metadata(&base_etc).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        lines.next().unwrap(),
        format!("{:o} {} {}", m.mode() & 0o7777, m.uid(), m.mtime()),
        "/etc's mode, owner and time are the image's"
    );
    let stubs: Vec<_> = std::fs::read_dir(r.join("stubs"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(stubs.len(), 1, "one layer of mount points for the image");
    // Pruned with the image's unpacked layers, once nothing uses them.
    let (code, _, err) = kiln(r, &["rm", "stubbed"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kiln(r, &["cache", "prune", "-a", "-f"]);
    assert_eq!(code, 0, "{err}");
    let left: Vec<_> = std::fs::read_dir(r.join("stubs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(
        left,
        Vec::<std::path::PathBuf>::new(),
        "removed with the layer"
    );
}

/// A removed container's directory is taken by the next one (fewer directories made on the
/// store's filesystem), and nothing of the first container comes with it: not its files, nor
/// its root directory's mode, owner or extended attributes (`upper` is always new).
#[test]
fn a_reused_container_directory_carries_nothing_over() {
    if !can_sandbox("a_reused_container_directory_carries_nothing_over") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "kiln.local/busybox",
            "sh",
            "-c",
            "echo secret > /left; mkdir /d; chmod 700 /; chown 1:1 /; stat -c '%a %u' /",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let spares = std::fs::read_dir(r.join("spare")).unwrap().count();
    assert_eq!(
        spares, 1,
        "the removed container's directory is kept as a spare"
    );
    let (code, out, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "kiln.local/busybox",
            "sh",
            "-c",
            "ls /left /d 2>&1; stat -c '%a %u' /",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("/left: No such file"), "{out}");
    assert!(out.contains("/d: No such file"), "{out}");
    assert!(
        out.ends_with("755 0\n"),
        "the root as the image has it: {out}"
    );
    // Taken and given back: still one, and the store is consistent.
    assert_eq!(std::fs::read_dir(r.join("spare")).unwrap().count(), 1);
    assert_eq!(std::fs::read_dir(r.join("containers")).unwrap().count(), 0);
    // What the spares sent to the trash is removed while a later container runs.
    let names = |d: &std::path::Path| -> Vec<std::ffi::OsString> {
        std::fs::read_dir(d)
            .map(|e| e.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default()
    };
    let before = names(&r.join("trash"));
    assert!(
        !before.is_empty(),
        "the overlay scratch directories went to the trash"
    );
    let (code, _, err) = kiln(r, &["run", "--rm", "kiln.local/busybox", "sleep", "1"]);
    assert_eq!(code, 0, "{err}");
    let after = names(&r.join("trash"));
    assert!(
        before.iter().all(|n| !after.contains(n)),
        "{before:?} still in {after:?}"
    );
    let (code, out, err) = kiln(r, &["store", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}
