//! `kiln run`'s options beyond the basics, each checked from inside a real container (what the
//! kernel says in /proc) or in its cgroup on the host: capabilities, `--privileged`,
//! `--security-opt`, `--ulimit` (and that `kiln exec` gets the same), `--shm-size`, `--tmpfs`,
//! `--group-add`, CPU and swap limits, `--label`, `--cidfile`, and docker's 125 for bad values.
#![allow(clippy::unwrap_used)]

mod common;

use common::{kiln, store_with_base};

fn run(root: &std::path::Path, args: &[&str]) -> String {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(args);
    let (code, out, err) = kiln(root, &all);
    assert_eq!(code, 0, "kiln {all:?}: {err}");
    out
}

fn status_field(out: &str, field: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn capabilities_privileged_and_security_options() {
    if !common::can_sandbox("capabilities_privileged_and_security_options") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let status = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["kiln.local/busybox", "cat", "/proc/self/status"]);
        run(r, &all)
    };
    // docker's default set, as docker's containers show it.
    let default = status(&[]);
    assert_eq!(status_field(&default, "CapEff"), "00000000a80425fb");
    assert_eq!(status_field(&default, "Seccomp"), "2");
    assert_eq!(status_field(&default, "NoNewPrivs"), "0");
    // + NET_ADMIN (bit 12), - CHOWN (bit 0); the bounding set follows.
    let changed = status(&["--cap-add", "NET_ADMIN", "--cap-drop", "chown"]);
    assert_eq!(status_field(&changed, "CapEff"), "00000000a80435fa");
    assert_eq!(status_field(&changed, "CapBnd"), "00000000a80435fa");
    let none = status(&["--cap-drop", "ALL", "--cap-add", "CAP_KILL"]);
    assert_eq!(status_field(&none, "CapEff"), "0000000000000020");
    // --privileged: every capability kiln holds, no filter, /sys writable.
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let privileged = status(&["--privileged"]);
    assert_eq!(
        status_field(&privileged, "CapEff"),
        status_field(&own, "CapEff")
    );
    assert_eq!(status_field(&privileged, "Seccomp"), "0");
    let mounts = run(
        r,
        &["--privileged", "kiln.local/busybox", "cat", "/proc/mounts"],
    );
    let sys = mounts.lines().find(|l| l.contains(" /sys sysfs ")).unwrap();
    assert!(sys.contains(" rw,"), "{sys}");
    let mounts = run(r, &["kiln.local/busybox", "cat", "/proc/mounts"]);
    let sys = mounts.lines().find(|l| l.contains(" /sys sysfs ")).unwrap();
    assert!(sys.contains(" ro,"), "{sys}");
    let nnp = status(&["--security-opt", "no-new-privileges"]);
    assert_eq!(status_field(&nnp, "NoNewPrivs"), "1");
    let unconfined = status(&["--security-opt", "seccomp=unconfined"]);
    assert_eq!(status_field(&unconfined, "Seccomp"), "0");
    // kiln exec gets what process 1 got.
    let (code, id, err) = kiln(
        r,
        &[
            "run",
            "-d",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--ulimit",
            "nofile=64:128",
            "kiln.local/busybox",
            "sleep",
            "60",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let id = id.trim();
    let (code, out, err) = kiln(r, &["exec", id, "cat", "/proc/self/status"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(status_field(&out, "CapEff"), "0000000000000000");
    assert_eq!(status_field(&out, "NoNewPrivs"), "1");
    let (_, limits, _) = kiln(r, &["exec", id, "sh", "-c", "ulimit -n; ulimit -Hn"]);
    assert_eq!(limits, "64\n128\n");
    let (_, inspect, _) = kiln(r, &["inspect", id]);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let host = &v[0]["HostConfig"];
    assert_eq!(host["CapDrop"].as_array().unwrap().len(), 14, "{host}");
    assert_eq!(host["SecurityOpt"][0], "no-new-privileges");
    assert_eq!(host["Ulimits"][0]["Name"], "nofile");
    assert_eq!(host["Ulimits"][0]["Hard"], 128);
    kiln(r, &["rm", "-f", id]);
}

#[test]
fn limits_mounts_groups_labels_and_cidfile() {
    if !common::can_sandbox("limits_mounts_groups_labels_and_cidfile") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    assert_eq!(
        run(
            r,
            &[
                "--ulimit",
                "nofile=100:200",
                "kiln.local/busybox",
                "sh",
                "-c",
                "ulimit -n; ulimit -Hn"
            ]
        ),
        "100\n200\n"
    );
    let df = run(
        r,
        &[
            "--shm-size",
            "10m",
            "--tmpfs",
            "/scratch:size=5m,mode=700",
            "kiln.local/busybox",
            "sh",
            "-c",
            "df -k /dev/shm /scratch | tail -n 2 | awk '{print $2}'; stat -c %a /scratch",
        ],
    );
    assert_eq!(df, "10240\n5120\n700\n");
    // Supplementary groups: one by number, one by name from the image's /etc/group.
    let id = run(
        r,
        &[
            "-u",
            "1000:1000",
            "--group-add",
            "123",
            "--group-add",
            "root",
            "kiln.local/busybox",
            "id",
            "-G",
        ],
    );
    let groups: Vec<&str> = id.split_whitespace().collect();
    assert!(groups.contains(&"123") && groups.contains(&"0"), "{id}");
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "--group-add",
            "nosuchgroup",
            "kiln.local/busybox",
            "true",
        ],
    );
    assert_eq!(code, 125);
    assert!(err.contains("unable to find group nosuchgroup"), "{err}");
    // CPU and swap limits land in the container's cgroup, seen from the host.
    let cid = r.join("cid");
    let cid_s = cid.to_str().unwrap();
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "-d",
            "--name",
            "limited",
            "--cidfile",
            cid_s,
            "--label",
            "tier=web",
            "--label",
            "team",
            "--cpus",
            "0.5",
            "--cpu-shares",
            "512",
            "-m",
            "64m",
            "--memory-swap",
            "128m",
            "kiln.local/busybox",
            "sleep",
            "60",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (_, inspect, _) = kiln(r, &["inspect", "limited"]);
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(
        std::fs::read_to_string(&cid).unwrap(),
        v[0]["Id"].as_str().unwrap()
    );
    let host = &v[0]["HostConfig"];
    assert_eq!(host["NanoCpus"], 500_000_000);
    assert_eq!(host["CpuShares"], 512);
    assert_eq!(host["MemorySwap"], 128 << 20);
    assert_eq!(v[0]["Config"]["Labels"]["tier"], "web");
    let pid = v[0]["State"]["Pid"].as_i64().unwrap();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let file = |controller: &str, v1: &str, v2: &str| -> Option<String> {
        for line in cgroups.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, ctls, path) = (parts.next()?, parts.next()?, parts.next()?);
            let dir = if ctls.split(',').any(|c| c == controller) {
                format!("/sys/fs/cgroup/{ctls}{path}/{v1}")
            } else if ctls.is_empty() {
                let base = if std::path::Path::new("/sys/fs/cgroup/unified").exists() {
                    "/sys/fs/cgroup/unified"
                } else {
                    "/sys/fs/cgroup"
                };
                format!("{base}{path}/{v2}")
            } else {
                continue;
            };
            if let Ok(text) = std::fs::read_to_string(&dir) {
                return Some(text.trim().to_string());
            }
        }
        None
    };
    match file("cpu", "cpu.cfs_quota_us", "cpu.max").as_deref() {
        Some("50000" | "50000 100000") => {}
        other => panic!("cpu quota: {other:?}\n{cgroups}"),
    }
    match file("cpu", "cpu.shares", "cpu.weight").as_deref() {
        // v1 shares, or runc's conversion to a v2 weight.
        Some("512" | "20") => {}
        other => panic!("cpu shares: {other:?}\n{cgroups}"),
    }
    match file("memory", "memory.memsw.limit_in_bytes", "memory.swap.max").as_deref() {
        // v1: memory and swap together; v2: the swap alone.
        Some("134217728" | "67108864") => {}
        other => panic!("swap: {other:?}\n{cgroups}"),
    }
    let (_, found, _) = kiln(r, &["ps", "-q", "--filter", "label=tier=web"]);
    assert_eq!(found.lines().count(), 1, "{found}");
    let (_, found, _) = kiln(r, &["ps", "-q", "--filter", "label=team"]);
    assert_eq!(found.lines().count(), 1, "{found}");
    let (_, found, _) = kiln(r, &["ps", "-q", "--filter", "label=tier=db"]);
    assert_eq!(found, "");
    // The OOM killer's work is told apart, as docker's State.OOMKilled.
    let (code, _, _) = kiln(
        r,
        &[
            "run",
            "--name",
            "hog",
            "-m",
            "8m",
            "kiln.local/busybox",
            "tail",
            "/dev/zero",
        ],
    );
    assert_eq!(code, 137, "killed");
    let (_, hog, _) = kiln(r, &["inspect", "hog"]);
    let hog: serde_json::Value = serde_json::from_str(&hog).unwrap();
    assert_eq!(hog[0]["State"]["OOMKilled"], true, "{hog}");
    assert_eq!(v[0]["State"]["OOMKilled"], false);
    // The file exists now: another run naming it is refused before anything starts.
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "--cidfile",
            cid_s,
            "kiln.local/busybox",
            "true",
        ],
    );
    assert_eq!(code, 125);
    assert!(err.contains("container ID file found"), "{err}");
    kiln(r, &["rm", "-f", "limited"]);
}

#[test]
fn bad_values_exit_125_with_the_option_named() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for (args, says) in [
        (&["--cpus", "lots"][..], "--cpus lots"),
        (&["--cpus", "0.001"][..], "--cpus 0.001"),
        (&["--memory-swap", "1g"][..], "needs --memory"),
        (
            &["-m", "64m", "--memory-swap", "32m"][..],
            "at least the memory limit",
        ),
        (&["--ulimit", "nofile=10:5"][..], "soft limit is above"),
        (&["--ulimit", "bogus=1"][..], "unknown resource"),
        (&["--cap-add", "SUPERPOWER"][..], "--cap-add SUPERPOWER"),
        (
            &["--security-opt", "apparmor=x"][..],
            "--security-opt apparmor=x",
        ),
        (&["--tmpfs", "run"][..], "--tmpfs run"),
        (&["--shm-size", "big"][..], "--shm-size big"),
        (&["--restart", "always:3"][..], "--restart always:3"),
        (&["--bogus-flag"][..], "--bogus-flag"),
    ] {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        all.push("kiln.local/busybox");
        let (code, _, err) = kiln(r, &all);
        assert_eq!(code, 125, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn init_reaps_forwards_and_hides_itself() {
    if !common::can_sandbox("init_reaps_forwards_and_hides_itself") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    // An orphan is reaped (no zombie), the init is named as docker's is, its binary and memory
    // are out of the container's reach, and the command's code is the container's.
    let script = "sh -c 'sleep 0.2 &'; sleep 0.6; ps -o stat,args; cat /proc/1/cmdline | tr '\\0' ' '; echo; \
                  readlink /proc/1/exe || echo unreadable; cat /proc/1/maps >/dev/null 2>&1 || echo hidden; exit 9";
    let (code, out, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "--init",
            "kiln.local/busybox",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(code, 9, "{err}");
    assert!(!out.lines().any(|l| l.starts_with('Z')), "a zombie: {out}");
    assert!(out.contains("/sbin/kiln-init -- sh -c"), "{out}");
    assert!(!out.contains("--root"), "no host command line: {out}");
    assert!(
        out.contains("unreadable") && out.contains("hidden"),
        "{out}"
    );
    // Without --init, sh as process 1 ignores SIGTERM: stop waits, then kills (137). With it,
    // the init passes SIGTERM on and the command ends with it (143).
    for (init, want) in [(true, "143"), (false, "137")] {
        let mut args = vec!["run", "-d"];
        if init {
            args.push("--init");
        }
        args.extend([
            "kiln.local/busybox",
            "sh",
            "-c",
            "while true; do sleep 0.1; done",
        ]);
        let (code, id, err) = kiln(r, &args);
        assert_eq!(code, 0, "{err}");
        let id = id.trim();
        kiln(r, &["stop", "-t", "2", id]);
        let (_, waited, _) = kiln(r, &["wait", id]);
        assert_eq!(waited.trim(), want, "init: {init}");
        kiln(r, &["rm", id]);
    }
    let (code, _, err) = kiln(
        r,
        &["run", "--rm", "--init", "kiln.local/busybox", "nosuch"],
    );
    assert_eq!(code, 127);
    assert!(
        err.contains("exec: \"nosuch\": executable file not found in $PATH"),
        "{err}"
    );
}
