//! A kept container's life after `kiln run`: `--restart` policies applied by its monitor,
//! `kiln start` (its changes kept, its log continued), `restart`, `pause`/`unpause` through the
//! cgroup freezer, `logs --since/--until`, and docker's `inspect` fields for all of it. Every
//! container is a real sandbox under a real monitor process.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{kiln, store_with_base};

fn ok(root: &std::path::Path, args: &[&str]) -> String {
    let (code, out, err) = kiln(root, args);
    assert_eq!(code, 0, "kiln {args:?}: {err}");
    out
}

fn inspect(root: &std::path::Path, name: &str) -> serde_json::Value {
    let out = ok(root, &["inspect", "--type", "container", name]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

/// Polls `what` until it holds, at most 20 s (a generous bound for a loaded machine; the
/// figure is no claim about speed).
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(20), "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn restart_policies_are_applied_by_the_monitor() {
    if !common::can_sandbox("restart_policies_are_applied_by_the_monitor") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    // on-failure:2: the first run and two restarts, then it stays exited with its code.
    ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "flaky",
            "--restart",
            "on-failure:2",
            "kiln.local/busybox",
            "sh",
            "-c",
            "echo try; exit 3",
        ],
    );
    until("flaky exited for good", || {
        inspect(r, "flaky")["State"]["Status"] == "exited"
    });
    let v = inspect(r, "flaky");
    assert_eq!(v["RestartCount"], 2, "{v}");
    assert_eq!(v["State"]["ExitCode"], 3);
    assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(v["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 2);
    assert_eq!(ok(r, &["logs", "flaky"]), "try\ntry\ntry\n");
    // A clean exit is no failure: on-failure does not restart it.
    ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "clean",
            "--restart",
            "on-failure",
            "kiln.local/busybox",
            "true",
        ],
    );
    until("clean exited", || {
        inspect(r, "clean")["State"]["Status"] == "exited"
    });
    assert_eq!(inspect(r, "clean")["RestartCount"], 0);
    // always: started again after each exit, until `kiln stop`, which ends it for good.
    ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "phoenix",
            "--restart",
            "always",
            "kiln.local/busybox",
            "sh",
            "-c",
            "echo up; sleep 0.2",
        ],
    );
    until("phoenix restarted twice", || {
        inspect(r, "phoenix")["RestartCount"].as_i64() >= Some(2)
    });
    ok(r, &["stop", "-t", "1", "phoenix"]);
    let v = inspect(r, "phoenix");
    assert_eq!(v["State"]["Status"], "exited", "{v}");
    let count = v["RestartCount"].clone();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        inspect(r, "phoenix")["RestartCount"],
        count,
        "kiln stop is final"
    );
    let (_, running, _) = kiln(r, &["ps", "-q"]);
    assert_eq!(running, "", "nothing runs any more");
    // docker's refusals: --restart with --rm, and a bad policy, exit 125.
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "--restart",
            "always",
            "kiln.local/busybox",
            "true",
        ],
    );
    assert_eq!(code, 125);
    assert!(err.contains("--restart and --rm"), "{err}");
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "--restart",
            "sometimes",
            "kiln.local/busybox",
            "true",
        ],
    );
    assert_eq!(code, 125);
    assert!(err.contains("on-failure"), "{err}");
}

#[test]
fn start_keeps_changes_and_continues_the_log() {
    if !common::can_sandbox("start_keeps_changes_and_continues_the_log") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    // Run in the foreground first: each run appends to a file in the container's root.
    let script = "echo x >> /count; echo runs=$(wc -l < /count); exit 7";
    let (code, out, _) = kiln(
        r,
        &[
            "run",
            "--name",
            "again",
            "-e",
            "GREETING=hi",
            "kiln.local/busybox",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!((code, out.as_str()), (7, "runs=1\n"));
    // start: detached, same options, same root; prints the name as docker does.
    assert_eq!(ok(r, &["start", "again"]), "again\n");
    until("again ended", || {
        inspect(r, "again")["State"]["Status"] == "exited"
    });
    assert_eq!(ok(r, &["logs", "again"]), "runs=2\n");
    // start -a: attached to the output, exits with the container's code.
    let (code, out, err) = kiln(r, &["start", "-a", "again"]);
    assert_eq!((code, out.as_str()), (7, "runs=3\n"), "{err}");
    assert_eq!(ok(r, &["logs", "again"]), "runs=2\nruns=3\n");
    let v = inspect(r, "again");
    assert!(
        v["Config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "GREETING=hi"),
        "{v}"
    );
    // restart of a running container: stopped, then started with its changes.
    ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "svc",
            "kiln.local/busybox",
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo x >> /n; echo n=$(wc -l < /n); while true; do sleep 0.1; done",
        ],
    );
    until("svc logged", || ok(r, &["logs", "svc"]) == "n=1\n");
    let before = inspect(r, "svc")["State"]["StartedAt"].clone();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(ok(r, &["restart", "-t", "5", "svc"]), "svc\n");
    until("svc logged twice", || {
        ok(r, &["logs", "svc"]) == "n=1\nn=2\n"
    });
    let v = inspect(r, "svc");
    assert_eq!(v["State"]["Status"], "running");
    assert_ne!(v["State"]["StartedAt"], before, "a new start time");
    // start of a running container is a no-op that succeeds.
    assert_eq!(ok(r, &["start", "svc"]), "svc\n");
    ok(r, &["rm", "-f", "svc", "again"]);
    let (code, _, err) = kiln(r, &["start", "svc"]);
    assert_eq!(code, 1);
    assert!(err.contains("no such container: svc"), "{err}");
}

#[test]
fn pause_freezes_every_process() {
    if !common::can_sandbox("pause_freezes_every_process") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "ticker",
            "kiln.local/busybox",
            "sh",
            "-c",
            "while true; do echo tick; sleep 0.05; done",
        ],
    );
    until("ticks", || ok(r, &["logs", "ticker"]).lines().count() >= 3);
    assert_eq!(ok(r, &["pause", "ticker"]), "ticker\n");
    let v = inspect(r, "ticker");
    assert_eq!(v["State"]["Status"], "paused");
    assert_eq!(v["State"]["Paused"], true);
    let (_, ps, _) = kiln(r, &["ps"]);
    assert!(ps.contains("(Paused)"), "{ps}");
    let (_, filtered, _) = kiln(r, &["ps", "-q", "--filter", "status=paused"]);
    assert_eq!(filtered.lines().count(), 1, "{filtered}");
    // Frozen: nothing more is written, however long we wait (a line already in the pipe
    // when it froze reaches the log first).
    std::thread::sleep(Duration::from_millis(300));
    let n = ok(r, &["logs", "ticker"]).lines().count();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(ok(r, &["logs", "ticker"]).lines().count(), n);
    let (code, _, err) = kiln(r, &["exec", "ticker", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("is paused"), "{err}");
    let (code, _, err) = kiln(r, &["pause", "ticker"]);
    assert_eq!(code, 1);
    assert!(err.contains("already paused"), "{err}");
    assert_eq!(ok(r, &["unpause", "ticker"]), "ticker\n");
    until("ticks again", || {
        ok(r, &["logs", "ticker"]).lines().count() > n
    });
    assert_eq!(inspect(r, "ticker")["State"]["Status"], "running");
    let (code, _, err) = kiln(r, &["unpause", "ticker"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not paused"), "{err}");
    // A paused container is stopped (thawed to die) and removed like any other.
    ok(r, &["pause", "ticker"]);
    ok(r, &["stop", "-t", "1", "ticker"]);
    assert_eq!(inspect(r, "ticker")["State"]["Status"], "exited");
    ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "frozen",
            "kiln.local/busybox",
            "sleep",
            "60",
        ],
    );
    ok(r, &["pause", "frozen"]);
    ok(r, &["rm", "-f", "frozen"]);
    let (_, all, _) = kiln(r, &["ps", "-aq", "--filter", "name=frozen"]);
    assert_eq!(all, "");
    let (_, verify, _) = kiln(r, &["store", "verify"]);
    assert!(!verify.contains("error"), "{verify}");
}

#[test]
fn logs_since_and_until_and_inspect_host_config() {
    if !common::can_sandbox("logs_since_and_until_and_inspect_host_config") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let vol = tempfile::tempdir().unwrap();
    let bind = format!("{}:/data:ro", vol.path().display());
    ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "talker",
            "-v",
            &bind,
            "--memory",
            "64m",
            "--log-opt",
            "max-size=1m",
            "kiln.local/busybox",
            "sh",
            "-c",
            "echo early; sleep 1.5; echo late; sleep 60",
        ],
    );
    until("late", || ok(r, &["logs", "talker"]).contains("late"));
    let (_, stamped, _) = kiln(r, &["logs", "-t", "talker"]);
    let late_time = stamped
        .lines()
        .find(|l| l.ends_with(" late"))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(ok(r, &["logs", "--since", &late_time, "talker"]), "late\n");
    assert_eq!(ok(r, &["logs", "--until", &late_time, "talker"]), "early\n");
    // A duration is a time before now: both lines are less than a minute old.
    assert_eq!(ok(r, &["logs", "--since", "1m", "talker"]), "early\nlate\n");
    let (code, _, err) = kiln(r, &["logs", "--since", "yesterday", "talker"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid --since"), "{err}");
    let v = inspect(r, "talker");
    // The argv as run, not a line split at its spaces.
    assert_eq!(v["Path"], "sh");
    assert_eq!(v["Args"][1], "echo early; sleep 1.5; echo late; sleep 60");
    assert_eq!(
        v["Config"]["Cmd"][2],
        "echo early; sleep 1.5; echo late; sleep 60"
    );
    let host = &v["HostConfig"];
    assert_eq!(host["Memory"], 64 * 1024 * 1024, "{v}");
    assert_eq!(host["Binds"][0], bind.as_str());
    assert_eq!(host["LogConfig"]["Config"]["max-size"], "1048576");
    assert_eq!(host["RestartPolicy"]["Name"], "no");
    assert_eq!(v["Mounts"][0]["Destination"], "/data");
    assert_eq!(v["Mounts"][0]["RW"], false);
    ok(r, &["rm", "-f", "talker"]);
}

#[test]
fn diff_and_commit_a_containers_changes() {
    if !common::can_sandbox("diff_and_commit_a_containers_changes") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "--name",
            "changer",
            "kiln.local/busybox",
            "sh",
            "-c",
            "echo hi > /new.txt; rm /etc/group; mkdir -p /tmp/x; echo y > /tmp/x/y",
        ],
    );
    assert_eq!(code, 0, "{err}");
    // docker's letters, sorted by path; a directory holding a change is changed; the files
    // kiln binds over (/etc/hosts, /etc/resolv.conf) are not changes.
    assert_eq!(
        ok(r, &["diff", "changer"]),
        "C /etc\nD /etc/group\nA /new.txt\nC /tmp\nA /tmp/x\nA /tmp/x/y\n"
    );
    let id = ok(
        r,
        &[
            "commit",
            "-m",
            "added a file",
            "-a",
            "someone",
            "-c",
            "CMD [\"cat\", \"/new.txt\"]",
            "-c",
            "ENV FROM_COMMIT=yes",
            "changer",
            "committed:v1",
        ],
    );
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(ok(r, &["run", "--rm", "committed:v1"]), "hi\n");
    assert_eq!(
        ok(
            r,
            &[
                "run",
                "--rm",
                "committed:v1",
                "sh",
                "-c",
                "echo $FROM_COMMIT; cat /tmp/x/y; test -e /etc/group || echo gone"
            ]
        ),
        "yes\ny\ngone\n"
    );
    let (_, image, _) = kiln(r, &["inspect", "--type", "image", "committed:v1"]);
    let v: serde_json::Value = serde_json::from_str(&image).unwrap();
    assert_eq!(v[0]["Author"], "someone", "{v}");
    assert_eq!(v[0]["Comment"], "added a file");
    assert_eq!(v[0]["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    // A running container is frozen while it is read, then runs on.
    ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "busy",
            "kiln.local/busybox",
            "sh",
            "-c",
            "echo x > /live; sleep 60",
        ],
    );
    until("live written", || {
        ok(r, &["diff", "busy"]).contains("A /live")
    });
    ok(r, &["commit", "busy", "committed:live"]);
    assert_eq!(inspect(r, "busy")["State"]["Status"], "running");
    assert_eq!(
        ok(r, &["run", "--rm", "committed:live", "cat", "/live"]),
        "x\n"
    );
    let (code, _, err) = kiln(r, &["commit", "-c", "RUN true", "busy"]);
    assert_eq!(code, 1);
    assert!(err.contains("--change \"RUN true\""), "{err}");
    ok(r, &["rm", "-f", "busy", "changer"]);
    let (code, out, err) = kiln(r, &["store", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn top_and_stats_of_a_running_container() {
    if !common::can_sandbox("top_and_stats_of_a_running_container") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    // A busy loop, a child sleeping, 100 MiB of memory at most, no network of its own.
    ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "busy",
            "-m",
            "100m",
            "--network",
            "none",
            "kiln.local/busybox",
            "sh",
            "-c",
            "sleep 1000 & while true; do :; done",
        ],
    );
    // top: only the container's processes, with the host's pids (as docker's).
    let top = ok(r, &["top", "busy"]);
    let mut lines = top.lines();
    assert!(lines.next().unwrap().starts_with("UID"), "{top}");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "{top}");
    assert!(rows.iter().any(|l| l.ends_with("sleep 1000")), "{top}");
    let init = inspect(r, "busy")["State"]["Pid"].as_i64().unwrap();
    assert!(
        top.contains(&format!(" {init} ")),
        "process 1 is listed: {top}"
    );
    assert!(
        !top.contains("cargo") && !top.contains("kiln "),
        "no host process: {top}"
    );
    let custom = ok(r, &["top", "busy", "-o", "pid,comm"]);
    assert_eq!(
        custom
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["PID", "COMMAND"]
    );
    // stats: the busy loop uses about a CPU; memory against the limit; two processes.
    let line = ok(r, &["stats", "--no-stream", "--format", "json", "busy"]);
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    let cpu: f64 = v["CPUPerc"]
        .as_str()
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    // Well above an idle container's 0, with room for a machine busy with other tests.
    assert!(cpu > 5.0, "a busy loop: {v}");
    assert!(
        v["MemUsage"].as_str().unwrap().ends_with(" / 100MiB"),
        "{v}"
    );
    assert_eq!(v["PIDs"], "2");
    assert_eq!(v["NetIO"], "0B / 0B");
    // A Go template, as docker's.
    assert_eq!(
        ok(
            r,
            &["stats", "--no-stream", "--format", "{{.Name}}", "busy"]
        ),
        "busy\n"
    );
    let table = ok(r, &["stats", "--no-stream"]);
    assert!(table.starts_with("CONTAINER ID   NAME   CPU %"), "{table}");
    ok(r, &["rm", "-f", "busy"]);
    let (code, _, err) = kiln(r, &["top", "busy"]);
    assert_eq!(code, 1);
    assert!(err.contains("no such container"), "{err}");
}

#[test]
fn cp_both_ways_stays_inside_the_root() {
    if !common::can_sandbox("cp_both_ways_stays_inside_the_root") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let host = tempfile::tempdir().unwrap();
    let h = host.path();
    std::fs::create_dir_all(h.join("in/sub")).unwrap();
    std::fs::write(h.join("in/a"), "a\n").unwrap();
    std::fs::write(h.join("in/sub/b"), "b\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", h.join("in/link")).unwrap();
    // The container plants links that point out of its root, as a hostile image would.
    ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "box",
            "kiln.local/busybox",
            "sh",
            "-c",
            "ln -s / /escape; mkdir /data; echo c > /data/c; ln -s /etc/shadow /data/shadow; \
             echo s > /suid; chown 1234:1234 /suid; chmod 6755 /suid; sleep 100",
        ],
    );
    until("box ready", || {
        ok(r, &["diff", "box"]).contains("A /data/shadow")
    });
    // In: a directory into an existing one, under its name; links stay links; root owns all.
    ok(r, &["cp", h.join("in").to_str().unwrap(), "box:/data/"]);
    let listing = ok(
        r,
        &[
            "exec",
            "box",
            "sh",
            "-c",
            "cat /data/in/a /data/in/sub/b; readlink /data/in/link; stat -c %u /data/in/a",
        ],
    );
    assert_eq!(listing, "a\nb\n/etc/passwd\n0\n");
    // Out: the whole directory; the container's link is copied as a link, never followed.
    let out = h.join("out");
    ok(r, &["cp", "box:/data", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(out.join("c")).unwrap(), "c\n");
    assert_eq!(
        std::fs::read_to_string(out.join("in/sub/b")).unwrap(),
        "b\n"
    );
    assert_eq!(
        std::fs::read_link(out.join("shadow")).unwrap(),
        std::path::Path::new("/etc/shadow")
    );
    // A setuid program of the container: on the host without its setuid and setgid bits and
    // owned by the caller, unless -a (archive) asks for owners and every bit.
    use std::os::unix::fs::MetadataExt;
    let plain = h.join("suid-plain");
    ok(r, &["cp", "box:/suid", plain.to_str().unwrap()]);
    let m = std::fs::metadata(&plain).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o755, 0), "{:o}", m.mode());
    let kept = h.join("suid-archive");
    ok(r, &["cp", "-a", "box:/suid", kept.to_str().unwrap()]);
    let m = std::fs::metadata(&kept).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.uid()),
        (0o6755, 1234),
        "{:o}",
        m.mode()
    );
    // A path through the container's `/escape -> /` link resolves inside its root: the file
    // lands in the container's /tmp, not the host's.
    let marker = format!("kiln-cp-{}", std::process::id());
    ok(
        r,
        &[
            "cp",
            h.join("in/a").to_str().unwrap(),
            &format!("box:/escape/tmp/{marker}"),
        ],
    );
    assert!(
        !std::path::Path::new("/tmp").join(&marker).exists(),
        "written on the host"
    );
    assert_eq!(
        ok(r, &["exec", "box", "cat", &format!("/tmp/{marker}")]),
        "a\n"
    );
    ok(
        r,
        &[
            "cp",
            "box:/escape/etc/hostname",
            h.join("hostname").to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(h.join("hostname")).unwrap(),
        ok(r, &["exec", "box", "cat", "/etc/hostname"]),
        "the container's file, not the host's"
    );
    // `-`: a tar on stdout (names from the source's last component, the link kept a link).
    let out = common::kiln_cmd(r, &["cp", "box:/data", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names = Vec::new();
    for e in tar::Archive::new(out.stdout.as_slice()).entries().unwrap() {
        let e = e.unwrap();
        let kind = e.header().entry_type();
        names.push(format!("{} {kind:?}", e.path().unwrap().display()));
    }
    names.sort();
    assert!(names.contains(&"data/c Regular".to_string()), "{names:?}");
    assert!(
        names.contains(&"data/shadow Symlink".to_string()),
        "{names:?}"
    );
    // ... and from stdin into a directory, where even `../..` names stay inside it.
    let mut archive = tar::Builder::new(Vec::new());
    for (name, body) in [("from-tar", &b"t\n"[..]), ("../../../climb", &b"c\n"[..])] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Written raw: the tar crate refuses `..` in names it sets itself.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        archive.append(&h, body).unwrap();
    }
    let data = archive.into_inner().unwrap();
    let mut child = common::kiln_cmd(r, &["cp", "-", "box:/data"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &data).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        ok(
            r,
            &[
                "exec",
                "box",
                "sh",
                "-c",
                "cat /data/from-tar /data/climb; ls /climb 2>&1 || true"
            ]
        ),
        "t\nc\nls: /climb: No such file or directory\n"
    );
    // An ended container: its root is mounted for the copy, and the copy is there next start.
    ok(r, &["stop", "-t", "0", "box"]);
    ok(
        r,
        &["cp", h.join("in/a").to_str().unwrap(), "box:/while-stopped"],
    );
    ok(r, &["start", "box"]);
    until("box runs", || {
        inspect(r, "box")["State"]["Status"] == "running"
    });
    assert_eq!(ok(r, &["exec", "box", "cat", "/while-stopped"]), "a\n");
    let (code, _, err) = kiln(r, &["cp", "box:/nonexistent", h.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("box:/nonexistent"), "{err}");
    let (code, _, err) = kiln(r, &["cp", "/etc/hostname", "/tmp/x"]);
    assert_eq!(code, 1);
    assert!(err.contains("CONTAINER:PATH"), "{err}");
    ok(r, &["rm", "-f", "box"]);
}

/// The pid of the monitor serving containers of the store `root` (a `kiln run` started with
/// the monitor's mark in its environment).
fn monitor_of(root: &std::path::Path, except: Option<i32>) -> Option<i32> {
    let root = root.to_str().unwrap();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        if Some(pid) == except {
            return None;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        (has(&cmd, root.as_bytes()) && has(&env, b"KILN_DETACHED_MONITOR")).then_some(pid)
    })
}

/// How many mounts are stacked on `path`.
fn mounts_at(path: &std::path::Path) -> usize {
    let want = path.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(want))
        .count()
}

#[test]
fn a_killed_monitor_leaves_no_mount_behind() {
    if !common::can_sandbox("a_killed_monitor_leaves_no_mount_behind") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    // Another container keeps the store open throughout, so the recovery a lone kiln process
    // makes when it opens the store does not clean up first.
    ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "keeper",
            "kiln.local/busybox",
            "sleep",
            "1000",
        ],
    );
    let keeper = monitor_of(r, None).expect("the keeper's monitor runs");
    let kill_monitor = |name: &str| {
        let pid = monitor_of(r, Some(keeper)).expect("the monitor runs");
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        until("the container is no longer running", || {
            inspect(r, name)["State"]["Running"] == false
        });
    };
    ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "victim",
            "kiln.local/busybox",
            "sleep",
            "1000",
        ],
    );
    let id = inspect(r, "victim")["Id"].as_str().unwrap().to_string();
    let rootfs = r.join("containers").join(&id).join("rootfs");
    assert_eq!(mounts_at(&rootfs), 1);
    kill_monitor("victim");
    assert_eq!(mounts_at(&rootfs), 1, "the dead monitor's overlay stays");
    let (code, out, _) = kiln(r, &["store", "verify"]);
    assert_ne!(code, 0);
    assert!(
        out.contains("left mounted by a container monitor that is gone"),
        "{out}"
    );
    // Started again: the leftover is unmounted before the new overlay goes on.
    ok(r, &["start", "victim"]);
    until("victim runs again", || {
        inspect(r, "victim")["State"]["Running"] == true
    });
    assert_eq!(mounts_at(&rootfs), 1, "one overlay, not two");
    kill_monitor("victim");
    ok(r, &["rm", "-f", "victim"]);
    assert_eq!(mounts_at(&rootfs), 0);
    assert!(!r.join("containers").join(&id).exists());

    // What a monitor killed before a change like this one left: a container directory the
    // store no longer knows, its root still mounted. verify names both; repair (with the store
    // to itself, whose opening unmounts what dead processes left) removes the directory.
    let stray = r.join("containers").join("f".repeat(64));
    std::fs::create_dir_all(stray.join("rootfs")).unwrap();
    rustix::mount::mount(
        "tmpfs",
        stray.join("rootfs"),
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .unwrap();
    let (code, out, _) = kiln(r, &["store", "verify"]);
    assert_ne!(code, 0);
    assert!(
        out.contains(&format!("{}: left mounted", stray.join("rootfs").display())),
        "{out}"
    );
    assert!(
        out.contains("the directory of a container kiln no longer knows"),
        "{out}"
    );
    ok(r, &["stop", "-t", "0", "keeper"]);
    let (code, out, _) = kiln(r, &["store", "verify", "--repair"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("removed {}", stray.display())),
        "{out}"
    );
    assert_eq!(mounts_at(&stray.join("rootfs")), 0);
    assert!(!stray.exists());
    ok(r, &["rm", "keeper"]);
    let out = ok(r, &["store", "verify"]);
    assert!(out.contains(" 0 problems"), "{out}");
}

#[test]
fn export_and_import_make_an_image_of_a_filesystem() {
    if !common::can_sandbox("export_and_import_make_an_image_of_a_filesystem") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "--name",
            "src",
            "kiln.local/busybox",
            "sh",
            "-c",
            "echo hi > /new; rm /bin/ls",
        ],
    );
    assert_eq!(code, 0, "{err}");
    // export: the whole root as a tar, the container's changes in it.
    let tar = r.join("fs.tar");
    ok(r, &["export", "-o", tar.to_str().unwrap(), "src"]);
    let names: Vec<String> = tar::Archive::new(std::fs::File::open(&tar).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "new"), "{names:?}");
    assert!(names.iter().any(|n| n == "bin/busybox"), "{names:?}");
    assert!(!names.iter().any(|n| n == "bin/ls"), "{names:?}");
    // The points /etc/hosts and /etc/resolv.conf were bound over, as docker's export has them.
    assert!(names.iter().any(|n| n == "etc/hosts"), "{names:?}");
    assert!(names.iter().any(|n| n == "etc/resolv.conf"), "{names:?}");
    // import, gzipped, with changes: an image of that filesystem.
    let gz = r.join("fs.tar.gz");
    std::fs::write(&gz, common::hostile::gzip(&std::fs::read(&tar).unwrap())).unwrap();
    let id = ok(
        r,
        &[
            "import",
            "-c",
            "CMD [\"cat\", \"/new\"]",
            "-m",
            "from a tarball",
            gz.to_str().unwrap(),
            "imported:1",
        ],
    );
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(ok(r, &["run", "--rm", "imported:1"]), "hi\n");
    let (code, _, _) = kiln(r, &["run", "--rm", "imported:1", "ls", "/bin/ls"]);
    assert_ne!(code, 0, "the deleted file stays deleted");
    let history = ok(r, &["history", "--format", "json", "imported:1"]);
    assert!(history.contains("from a tarball"), "{history}");
    // Not a tarball: refused, nothing stored.
    let junk = r.join("junk");
    std::fs::write(&junk, "not a tar").unwrap();
    let (code, _, err) = kiln(r, &["import", junk.to_str().unwrap(), "junk:1"]);
    assert_eq!(code, 1);
    assert!(err.contains("not a tar archive"), "{err}");
    assert!(!ok(r, &["images"]).contains("junk"));
    assert!(ok(r, &["store", "verify"]).contains(" 0 problems"));
}

#[test]
fn create_makes_a_container_that_start_runs() {
    if !common::can_sandbox("create_makes_a_container_that_start_runs") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let cid = r.join("cid");
    let id = ok(
        r,
        &[
            "create",
            "--name",
            "made",
            "--cidfile",
            cid.to_str().unwrap(),
            "-e",
            "GREETING=hi",
            "-v",
            "/data",
            "kiln.local/busybox",
            "sh",
            "-c",
            "echo $GREETING > /data/x; cat /data/x",
        ],
    );
    let id = id.trim();
    assert_eq!(id.len(), 64);
    assert_eq!(std::fs::read_to_string(&cid).unwrap(), id);
    // Made, not started: docker's `Created`; its anonymous volume made with it.
    assert_eq!(
        ok(r, &["ps", "-a", "--format", "{{.Names}} {{.Status}}"]),
        "made Created\n"
    );
    assert_eq!(
        ok(r, &["inspect", "-f", "{{.State.Status}}", "made"]),
        "created\n"
    );
    assert_eq!(ok(r, &["volume", "ls", "-q"]).lines().count(), 1);
    // `start -a` runs it with what `create` was given.
    assert_eq!(ok(r, &["start", "-a", "made"]), "hi\n");
    assert_eq!(
        ok(r, &["inspect", "-f", "{{.State.Status}}", "made"]),
        "exited\n"
    );
    ok(r, &["rm", "-v", "made"]);
    assert_eq!(ok(r, &["volume", "ls", "-q"]), "");
    // `-d` is for `run`; a missing image is named.
    let (code, _, _) = kiln(r, &["create", "-d", "kiln.local/busybox"]);
    assert_ne!(code, 0);
}

/// `kiln start` of one stopped container from many processes at once: every one succeeds, and
/// one monitor runs it once, on one overlay (before, each start's monitor ran it, and the
/// second mount of the same upper directory fell back to a copy).
#[test]
fn starts_at_once_run_a_container_once() {
    if !common::can_sandbox("starts_at_once_run_a_container_once") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let marker = format!("{}", 7000 + std::process::id() % 1000);
    ok(
        r,
        &[
            "create",
            "--name",
            "once",
            "kiln.local/busybox",
            "sleep",
            &marker,
        ],
    );
    let id = ok(r, &["inspect", "-f", "{{.Id}}", "once"]);
    let starts: Vec<_> = (0..6)
        .map(|_| {
            common::kiln_cmd(r, &["start", "once"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for s in starts {
        let out = s.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "once\n");
    }
    until("it runs", || inspect(r, "once")["State"]["Running"] == true);
    let sleeping = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .filter(|c| {
                String::from_utf8_lossy(c).replace('\0', " ").trim() == format!("sleep {marker}")
            })
            .count()
    };
    // Give a second run the time to appear, if there were one.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sleeping(), 1, "one container process");
    let rootfs = r.join("containers").join(id.trim()).join("rootfs");
    assert_eq!(mounts_at(&rootfs), 1, "one overlay on its root");
    ok(r, &["rm", "-f", "once"]);
    assert_eq!(sleeping(), 0);
}
