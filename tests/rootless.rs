//! Rootless kiln, end to end: started as an unprivileged user (`nobody`, through `setpriv`),
//! kiln moves into a user namespace of its own and builds (RUN, COPY, a cache mount) and runs
//! images; its mounts never appear in the host's mount table, not even after a SIGKILL; an id
//! the namespace does not have is named, not a bare EINVAL.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::{BASE, added_layers, can_sandbox, have, manifest_of};

use std::{path::Path, process::Command};

const NOBODY: u32 = 65534;

/// Runs kiln as nobody: (exit code, stdout, stderr).
fn kiln_as_nobody(root: &Path, args: &[&str]) -> (i32, String, String) {
    let out = nobody_cmd(root, args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn nobody_cmd(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env("HOME", root)
        .current_dir("/");
    c
}

fn chown_tree(p: &Path) {
    std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path());
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn host_mounts_under(p: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&p.display().to_string()))
        .map(str::to_string)
        .collect()
}

#[test]
fn an_unprivileged_user_builds_and_runs() {
    // Root is needed here only to become nobody.
    if !can_sandbox("an_unprivileged_user_builds_and_runs") || !have("setpriv", "rootless") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (root, ctx, base) = (w.join("store"), w.join("ctx"), w.join("base"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&ctx).unwrap();
    copy_dir(Path::new(BASE), &base);
    std::fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln.local/busybox\n\
         COPY hello.txt /\n\
         RUN --mount=type=cache,target=/c echo x >> /c/n && id -u > /uid && rm /bin/ls\n\
         CMD [\"cat\", \"/hello.txt\", \"/uid\"]\n",
    )
    .unwrap();
    chown_tree(w);
    let (code, _, err) = kiln_as_nobody(&root, &["load", "-i", base.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kiln_as_nobody(&root, &["build", "-t", "r", ctx.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    // The layers are an image like any other: root-owned entries, the deletion a whiteout.
    let layers = added_layers(&root, &manifest_of(&root, "r"));
    let run: Vec<(String, u64)> = layers[1].iter().map(|e| (e.0.clone(), e.2)).collect();
    assert_eq!(
        run,
        [("bin", 0), ("bin/.wh.ls", 0), ("uid", 0)].map(|(p, u)| (p.to_string(), u)),
        "{layers:?}"
    );
    let (code, out, err) = kiln_as_nobody(&root, &["run", "--rm", "r"]);
    assert_eq!((code, out.as_str()), (0, "hello\n0\n"), "{err}");
    // The store's files belong to the user on the host.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(root.join("meta.db")).unwrap().uid(),
        NOBODY
    );
    // An id the namespace lacks is named.
    let (code, _, err) = kiln_as_nobody(&root, &["run", "--rm", "-u", "1000", "r"]);
    assert_eq!(code, 125);
    assert!(
        err.contains("id 1000 does not exist in rootless kiln's user namespace"),
        "{err}"
    );
    assert!(
        host_mounts_under(w).is_empty(),
        "{:?}",
        host_mounts_under(w)
    );

    // A rootless build killed mid-RUN leaves no mount anywhere: its mount namespace died.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln.local/busybox\nRUN sleep 5\n",
    )
    .unwrap();
    let mut child = nobody_cmd(&root, &["build", "-q", ctx.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    // setpriv execs kiln: the child is kiln itself.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        host_mounts_under(w).is_empty(),
        "{:?}",
        host_mounts_under(w)
    );
    let (code, out, err) = kiln_as_nobody(&root, &["store", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn an_unprivileged_user_runs_detached_containers() {
    if !can_sandbox("an_unprivileged_user_runs_detached_containers") || !have("setpriv", "rootless")
    {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (root, base) = (w.join("store"), w.join("base"));
    std::fs::create_dir_all(&root).unwrap();
    copy_dir(Path::new(BASE), &base);
    chown_tree(w);
    let ok = |args: &[&str]| {
        let (code, out, err) = kiln_as_nobody(&root, args);
        assert_eq!(code, 0, "kiln {args:?}: {err}");
        out
    };
    ok(&["load", "-i", base.to_str().unwrap()]);
    // The monitor runs inside the user's namespace and knows it is not root on the host: it
    // used to end at once ("the monitor ended before the container started").
    ok(&[
        "run",
        "-d",
        "--name",
        "bg",
        "kiln.local/busybox",
        "sh",
        "-c",
        "echo up; exec sleep 100",
    ]);
    let mut logs = String::new();
    for _ in 0..100 {
        logs = ok(&["logs", "bg"]);
        if !logs.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(logs, "up\n");
    assert!(ok(&["ps"]).contains(" Up "), "running");
    // exec joins the container's user namespace (a new one of its own could not enter the
    // container's pid namespace: EPERM).
    assert_eq!(
        ok(&["exec", "bg", "sh", "-c", "id -u; cat /proc/1/cmdline"]),
        "0\nsleep\u{0}100\u{0}"
    );
    let (code, _, err) = kiln_as_nobody(&root, &["exec", "-u", "1", "bg", "true"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("does not exist in rootless kiln's user namespace"),
        "{err}"
    );
    ok(&["stop", "-t", "1", "bg"]);
    assert!(ok(&["ps", "-a"]).contains("Exited (137)"));
    ok(&["start", "bg"]);
    assert!(ok(&["ps"]).contains(" Up "), "started again");
    ok(&["rm", "-f", "bg"]);
    assert_eq!(ok(&["ps", "-aq"]), "");
    // Ports need the bridge, which needs root: said so.
    let (code, _, err) = kiln_as_nobody(
        &root,
        &["run", "--rm", "-p", "8080:80", "kiln.local/busybox", "true"],
    );
    assert_eq!(code, 125);
    assert!(err.contains("needs root"), "{err}");
    assert!(host_mounts_under(w).is_empty());
}
