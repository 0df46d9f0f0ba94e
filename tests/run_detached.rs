//! `kiln run -d` and the commands that act on a running container: `ps`, `logs`, `stop`,
//! `kill`, `wait`, `rm`; each container's monitor is a real process of its own, and its
//! process 1 a real sandbox.
#![allow(clippy::unwrap_used)]

mod common;

use common::{kiln, store_with_base};

fn detached(root: &std::path::Path, args: &[&str]) -> String {
    let mut all = vec!["run", "-d"];
    all.extend_from_slice(args);
    let (code, out, err) = kiln(root, &all);
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_string();
    assert_eq!(id.len(), 64, "docker prints the full id: {out}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    id
}

fn ps_line(root: &std::path::Path, name: &str) -> String {
    let (_, out, _) = kiln(root, &["ps", "-a"]);
    out.lines()
        .find(|l| l.ends_with(name))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn detached_container_logs_stop_and_wait() {
    if !common::can_sandbox("detached_container_logs_stop_and_wait") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let id = detached(
        r,
        &[
            "--name",
            "web",
            "kiln.local/busybox",
            "sh",
            "-c",
            "echo hello; echo oops >&2; while true; do echo tick; sleep 0.1; done",
        ],
    );
    assert!(ps_line(r, "web").contains("Up "), "{}", ps_line(r, "web"));
    let (_, running, _) = kiln(r, &["ps"]);
    assert!(running.contains(&id[..12]), "{running}");
    // docker's json-file log, where docker keeps it.
    let log = r
        .join("containers")
        .join(&id)
        .join(format!("{id}-json.log"));
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("tick")
        .count()
        < 4
    {
        assert!(t0.elapsed().as_secs() < 20, "no output logged");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The two streams are read apart, so only each one's own order is kept (as in docker).
    let entries: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first = entries.iter().find(|e| e["stream"] == "stdout").unwrap();
    assert_eq!(first["log"], "hello\n");
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    let errs: Vec<&serde_json::Value> =
        entries.iter().filter(|e| e["stream"] == "stderr").collect();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0]["log"], "oops\n");
    let (code, out, err) = kiln(r, &["logs", "web"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("hello\ntick\n"), "{out}");
    assert_eq!(err, "oops\n", "stderr lines go to stderr");
    // The last lines of both streams together (the stderr line came early on).
    let (_, tail, tail_err) = kiln(r, &["logs", "--tail", "2", &id[..12]]);
    assert_eq!((tail.as_str(), tail_err.as_str()), ("tick\ntick\n", ""));
    let (_, stamped, _) = kiln(r, &["logs", "-t", "--tail", "1", "web"]);
    assert!(stamped.contains("Z tick\n"), "{stamped}");
    // sh as process 1 ignores SIGTERM (no default handlers for pid 1): killed after 1 s.
    let (code, out, err) = kiln(r, &["stop", "-t", "1", "web"]);
    assert_eq!((code, out.as_str()), (0, "web\n"), "{err}");
    assert!(
        ps_line(r, "web").contains("Exited (137)"),
        "{}",
        ps_line(r, "web")
    );
    let (_, code, _) = kiln(r, &["wait", "web"]);
    assert_eq!(code.trim(), "137");
    // The log stays until the container is removed, and `logs -f` of an ended one returns.
    let (code, out, _) = kiln(r, &["logs", "-f", "web"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("hello\n"));
    let (code, _, err) = kiln(r, &["kill", "web"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not running"), "{err}");
    let (code, _, err) = kiln(r, &["rm", "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(!r.join("containers").join(&id).exists());
}

#[test]
fn stop_signals_and_kill() {
    if !common::can_sandbox("stop_signals_and_kill") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    // A process 1 that handles TERM ends at once, with its own code.
    let trap = "trap 'exit 3' TERM; echo ready; while true; do sleep 0.1; done";
    detached(
        r,
        &["--name", "polite", "kiln.local/busybox", "sh", "-c", trap],
    );
    // Stopped once the trap is set (a TERM before it would end sh with 143: a loaded machine
    // showed it).
    let t0 = std::time::Instant::now();
    while !kiln(r, &["logs", "polite"]).1.contains("ready") {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "never ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (code, _, err) = kiln(r, &["stop", "-t", "30", "polite"]);
    assert_eq!(code, 0, "{err}");
    assert!(ps_line(r, "polite").contains("Exited (3)"));
    // The image's STOPSIGNAL is what stop sends.
    let ctx = common::context("FROM kiln.local/busybox\nSTOPSIGNAL SIGUSR1\n");
    let (code, _, err) = kiln(
        r,
        &["build", "-q", "-t", "usr1", ctx.path().to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let usr1 = "trap 'exit 4' USR1; while true; do sleep 0.1; done";
    detached(r, &["--name", "usr1", "usr1", "sh", "-c", usr1]);
    kiln(r, &["stop", "-t", "30", "usr1"]);
    assert!(
        ps_line(r, "usr1").contains("Exited (4)"),
        "{}",
        ps_line(r, "usr1")
    );
    // kill: SIGKILL by default, or the signal named.
    let hup = "trap 'exit 5' HUP; while true; do sleep 0.1; done";
    detached(r, &["--name", "hup", "kiln.local/busybox", "sh", "-c", hup]);
    let (code, _, err) = kiln(r, &["kill", "-s", "SIGHUP", "hup"]);
    assert_eq!(code, 0, "{err}");
    let (_, waited, _) = kiln(r, &["wait", "hup"]);
    assert_eq!(waited.trim(), "5");
    detached(
        r,
        &["--name", "doomed", "kiln.local/busybox", "sleep", "60"],
    );
    kiln(r, &["kill", "doomed"]);
    let (_, waited, _) = kiln(r, &["wait", "doomed"]);
    assert_eq!(waited.trim(), "137");
    let (code, _, err) = kiln(r, &["kill", "-s", "NOPE", "doomed"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid signal"), "{err}");
}

#[test]
fn detached_failures_and_removal() {
    if !common::can_sandbox("detached_failures_and_removal") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    // A command that does not exist: docker's 127, the reason, and an exited container.
    let (code, out, err) = kiln(
        r,
        &["run", "-d", "--name", "bad", "kiln.local/busybox", "nosuch"],
    );
    assert_eq!(code, 127, "{out}{err}");
    assert!(err.contains("nosuch"), "{err}");
    assert!(ps_line(r, "bad").contains("Exited (127)"));
    // --rm: gone once it ends.
    detached(
        r,
        &[
            "--rm",
            "--name",
            "brief",
            "kiln.local/busybox",
            "sh",
            "-c",
            "echo bye",
        ],
    );
    let (_, waited, _) = kiln(r, &["wait", "brief"]);
    let t0 = std::time::Instant::now();
    while !ps_line(r, "brief").is_empty() {
        assert!(t0.elapsed().as_secs() < 20, "not removed: {waited}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The monitor killed outright: the container dies with it (parent-death signal), `ps`
    // says so, and `rm` cleans up.
    let id = detached(
        r,
        &["--name", "orphan", "kiln.local/busybox", "sleep", "60"],
    );
    let store = kiln_runtime::store::Store::open(r).unwrap();
    let c = store.find_container(&id).unwrap().unwrap();
    let init = store.container_init(&id).unwrap().unwrap();
    drop(store);
    c.pid.unwrap().signal(rustix::process::Signal::KILL);
    let t0 = std::time::Instant::now();
    while init.alive() {
        assert!(
            t0.elapsed().as_secs() < 20,
            "the container outlived its monitor"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        ps_line(r, "orphan").contains("Dead"),
        "{}",
        ps_line(r, "orphan")
    );
    let (code, _, err) = kiln(r, &["rm", "orphan"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = kiln(r, &["store", "verify"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn logs_follow_until_the_container_ends() {
    if !common::can_sandbox("logs_follow_until_the_container_ends") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    detached(
        r,
        &[
            "--name",
            "talker",
            "kiln.local/busybox",
            "sh",
            "-c",
            "echo a; sleep 1; echo b; exit 6",
        ],
    );
    // Started while the container still runs: `-f` prints what comes later, then returns.
    let (code, out, err) = kiln(r, &["logs", "-f", "talker"]);
    assert_eq!((code, out.as_str()), (0, "a\nb\n"), "{err}");
    assert!(ps_line(r, "talker").contains("Exited (6)"));
}

#[test]
fn inspect_ps_filters_rename_and_prune() {
    if !common::can_sandbox("inspect_ps_filters_rename_and_prune") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let id = detached(r, &["--name", "alive", "kiln.local/busybox", "sleep", "60"]);
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "--name",
            "done",
            "kiln.local/busybox",
            "sh",
            "-c",
            "exit 4",
        ],
    );
    assert_eq!(code, 4, "{err}");
    // docker's State for a running and an exited container.
    let (code, out, err) = kiln(r, &["inspect", "alive", "done"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["Id"], id.as_str());
    assert_eq!(v[0]["Name"], "/alive");
    assert_eq!(v[0]["State"]["Status"], "running");
    assert_eq!(v[0]["State"]["Running"], true);
    assert!(v[0]["State"]["Pid"].as_i64().unwrap() > 1);
    assert_eq!(v[1]["State"]["Status"], "exited");
    assert_eq!(v[1]["State"]["ExitCode"], 4);
    assert_ne!(v[1]["State"]["FinishedAt"], "0001-01-01T00:00:00Z");
    // An image by the same word still answers with --type image.
    let (code, out, _) = kiln(r, &["inspect", "--type", "image", "kiln.local/busybox"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"RootFS\""));
    let (code, _, err) = kiln(r, &["inspect", "--type", "container", "kiln.local/busybox"]);
    assert_eq!(code, 1);
    assert!(err.contains("no such object"), "{err}");
    // ps: filters, -n, JSON lines.
    let (_, out, _) = kiln(r, &["ps", "--filter", "status=exited", "-q"]);
    assert_eq!(out.lines().count(), 1);
    let (_, out, _) = kiln(r, &["ps", "-a", "--filter", "name=liv", "--format", "json"]);
    let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        (line["Names"].as_str(), line["State"].as_str()),
        (Some("alive"), Some("running"))
    );
    let (_, out, _) = kiln(r, &["ps", "-n", "1", "-q"]);
    assert_eq!(out.lines().count(), 1);
    let (code, _, err) = kiln(r, &["ps", "--filter", "colour=red"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid --filter"), "{err}");
    // rename, with docker's rules.
    let (code, _, err) = kiln(r, &["rename", "done", "finished"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kiln(r, &["rename", "finished", "alive"]);
    assert_eq!(code, 1);
    assert!(err.contains("already in use"), "{err}");
    // prune: the ended one goes, the running one stays.
    let (code, out, err) = kiln(r, &["container", "prune", "-f"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Total reclaimed containers: 1"), "{out}");
    assert!(ps_line(r, "finished").is_empty());
    assert!(ps_line(r, "alive").contains("Up "));
    kiln(r, &["rm", "-f", "alive"]);
}

#[test]
fn exec_joins_the_running_container() {
    if !common::can_sandbox("exec_joins_the_running_container") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let id = detached(
        r,
        &[
            "--name",
            "box",
            "-e",
            "FOO=bar",
            "-w",
            "/srv",
            "kiln.local/busybox",
            "sh",
            "-c",
            "echo made > /tmp/marker; sleep 60",
        ],
    );
    let sh = |args: &[&str]| {
        let mut all = vec!["exec"];
        all.extend_from_slice(args);
        kiln(r, &all)
    };
    let t0 = std::time::Instant::now();
    while sh(&["box", "cat", "/tmp/marker"]).1 != "made\n" {
        assert!(
            t0.elapsed().as_secs() < 20,
            "the container's file never showed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The container's environment, hostname, process tree and working directory.
    let (code, out, err) = sh(&[
        "box",
        "sh",
        "-c",
        "echo $FOO; hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; pwd",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "bar");
    assert_eq!(lines[1], &id[..12]);
    // sh ran `sleep` as its last command in its own place: process 1 is sleep now.
    assert_eq!(lines[2], "sleep 60 ", "{out}");
    assert_eq!(lines[3], "/srv", "the container's working directory: {out}");
    // The same protections as process 1: capabilities, seccomp, cgroups; kiln's descriptors
    // and binary out of reach.
    let (_, out, _) = sh(&[
        "box",
        "sh",
        "-c",
        "grep -E '^(CapEff|CapBnd|Seccomp):' /proc/1/status; grep -E '^(CapEff|CapBnd|Seccomp):' /proc/self/status; cat /proc/1/cgroup; cat /proc/self/cgroup; ls /proc/self/fd | wc -l; readlink /proc/self/exe",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0..3], lines[3..6], "{out}");
    assert!(lines[2].ends_with("2"), "seccomp filter mode: {out}");
    let n = lines.len();
    let cg = (n - 8) / 2;
    assert_eq!(
        lines[6..6 + cg],
        lines[6 + cg..6 + 2 * cg],
        "same cgroups: {out}"
    );
    assert!(
        lines[n - 2].trim().parse::<u32>().unwrap() <= 4,
        "only stdio (and ls's own): {out}"
    );
    assert_eq!(lines[n - 1], "/bin/busybox");
    // -u, -w, -e; the command's exit code; docker's 126.
    let (_, out, _) = sh(&[
        "-u",
        "nobody",
        "-w",
        "/tmp",
        "-e",
        "FOO=baz",
        "box",
        "sh",
        "-c",
        "id -u; pwd; echo $FOO",
    ]);
    assert_eq!(out, "65534\n/tmp\nbaz\n");
    assert_eq!(sh(&["box", "sh", "-c", "exit 7"]).0, 7);
    // As dockerd: exec of a missing command is 126 (run's is 127), with runc's words.
    let (code, _, err) = sh(&["box", "nosuch"]);
    assert_eq!(code, 126, "{err}");
    assert!(
        err.contains("exec: \"nosuch\": executable file not found in $PATH"),
        "{err}"
    );
    let (code, _, err) = sh(&["box", "/etc/passwd"]);
    assert_eq!(code, 126, "{err}");
    assert!(
        err.contains("exec: \"/etc/passwd\": permission denied"),
        "{err}"
    );
    kiln(r, &["stop", "-t", "0", "box"]);
    let (code, _, err) = sh(&["box", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not running"), "{err}");
}

#[test]
fn log_rotation_bounds_the_disk() {
    if !common::can_sandbox("log_rotation_bounds_the_disk") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let id = detached(
        r,
        &[
            "--name",
            "chatty",
            "--log-opt",
            "max-size=20k",
            "--log-opt",
            "max-file=2",
            "kiln.local/busybox",
            "seq",
            "1",
            "30000",
        ],
    );
    let (_, code, _) = kiln(r, &["wait", "chatty"]);
    assert_eq!(code.trim(), "0");
    let dir = r.join("containers").join(&id);
    let logs: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .contains("-json.log")
        })
        .collect();
    assert_eq!(logs.len(), 2, "{logs:?}");
    for l in &logs {
        assert!(std::fs::metadata(l).unwrap().len() <= 20 * 1024, "{l:?}");
    }
    // The newest lines, in order, across both files.
    let (code, out, _) = kiln(r, &["logs", "chatty"]);
    assert_eq!(code, 0);
    assert!(
        out.ends_with("29999\n30000\n"),
        "{}",
        &out[out.len().saturating_sub(50)..]
    );
    assert!(
        !out.starts_with("1\n"),
        "the oldest lines were rotated away"
    );
    let nums: Vec<u32> = out.lines().map(|l| l.parse().unwrap()).collect();
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1));
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "-d",
            "--log-opt",
            "max-file=2",
            "kiln.local/busybox",
            "true",
        ],
    );
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("max-file needs max-size"), "{err}");

    // The store's default (kiln.json, as docker's daemon.json): applied to a container that
    // names no --log-opt; the container's own max-file wins over it, key by key.
    std::fs::write(
        r.join("kiln.json"),
        r#"{"log-opts": {"max-size": "10k", "max-file": "3"}}"#,
    )
    .unwrap();
    let id = detached(
        r,
        &[
            "--name",
            "quiet",
            "--log-opt",
            "max-file=2",
            "kiln.local/busybox",
            "seq",
            "1",
            "30000",
        ],
    );
    let (_, code, _) = kiln(r, &["wait", "quiet"]);
    assert_eq!(code.trim(), "0");
    let logs: Vec<u64> = std::fs::read_dir(r.join("containers").join(&id))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("-json.log"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert!(logs.iter().all(|n| *n <= 10 * 1024), "{logs:?}");
}

#[test]
fn health_checks_run_in_the_container() {
    if !common::can_sandbox("health_checks_run_in_the_container") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = common::context(
        "FROM kiln.local/busybox\nHEALTHCHECK --interval=200ms --timeout=2s --retries=2 CMD test -f /tmp/ok && echo fine\n",
    );
    let (code, _, err) = kiln(
        r,
        &["build", "-q", "-t", "checked", ctx.path().to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    // Healthy once the file the check looks for is there.
    detached(
        r,
        &[
            "--name",
            "good",
            "checked",
            "sh",
            "-c",
            "sleep 1; touch /tmp/ok; sleep 60",
        ],
    );
    // Never healthy: unhealthy after two failures.
    detached(r, &["--name", "bad", "checked", "sleep", "60"]);
    let status = |name: &str| -> serde_json::Value {
        let (_, out, _) = kiln(r, &["inspect", name]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["State"]["Health"].clone()
    };
    assert!(
        ps_line(r, "good").contains("(health: starting)"),
        "{}",
        ps_line(r, "good")
    );
    let t0 = std::time::Instant::now();
    while status("good")["Status"] != "healthy" || status("bad")["Status"] != "unhealthy" {
        assert!(
            t0.elapsed().as_secs() < 30,
            "good {} bad {}",
            status("good"),
            status("bad")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        ps_line(r, "good").contains("(healthy)"),
        "{}",
        ps_line(r, "good")
    );
    assert!(
        ps_line(r, "bad").contains("(unhealthy)"),
        "{}",
        ps_line(r, "bad")
    );
    let good = status("good");
    let last = good["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["ExitCode"].as_i64(), last["Output"].as_str()),
        (Some(0), Some("fine\n"))
    );
    assert_eq!(
        status("bad")["FailingStreak"].as_u64().map(|n| n >= 2),
        Some(true)
    );
    // run's --health-* options over the image's; --no-healthcheck turns it off.
    detached(
        r,
        &[
            "--name",
            "own",
            "--health-cmd",
            "echo mine",
            "--health-interval",
            "200ms",
            "checked",
            "sleep",
            "60",
        ],
    );
    detached(
        r,
        &[
            "--name",
            "none",
            "--no-healthcheck",
            "checked",
            "sleep",
            "60",
        ],
    );
    let t0 = std::time::Instant::now();
    while status("own")["Status"] != "healthy" {
        assert!(t0.elapsed().as_secs() < 30, "{}", status("own"));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let own = status("own");
    assert_eq!(own["Log"].as_array().unwrap()[0]["Output"], "mine\n");
    assert!(status("none").is_null(), "{}", status("none"));
    assert!(!ps_line(r, "none").contains("health"));
    let (code, _, err) = kiln(
        r,
        &["run", "-d", "--health-interval", "soon", "checked", "true"],
    );
    assert_eq!(code, 125, "{err}");
    kiln(r, &["rm", "-f", "good", "bad", "own", "none"]);
}
