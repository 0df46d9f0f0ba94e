//! Fifty detached containers at once, started, stopped and removed in parallel by several
//! `kiln` processes, some of them killed (SIGKILL) mid-way: every container is tracked, every
//! log is complete, and after `rm` nothing is left: no process, no mount, no cgroup, no
//! directory, and `kiln store verify` is clean.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{kiln, store_with_base};

const N: usize = 50;
const WORKERS: usize = 5;

/// Runs `f(i)` for every i in 0..N on WORKERS threads, each calling `kiln` processes.
fn parallel(f: impl Fn(usize) + Sync) {
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            let f = &f;
            s.spawn(move || {
                for i in (w..N).step_by(WORKERS) {
                    f(i);
                }
            });
        }
    });
}

/// Directories under /sys/fs/cgroup (a few levels down) whose name holds `needle`.
fn cgroups_named(needle: &str) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, depth: usize, needle: &str, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let p = e.path();
            if e.file_name().to_string_lossy().contains(needle) {
                out.push(p.clone());
            }
            if depth > 0 {
                walk(&p, depth - 1, needle, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(std::path::Path::new("/sys/fs/cgroup"), 5, needle, &mut out);
    out
}

#[test]
fn fifty_containers_in_parallel_leave_nothing_behind() {
    if !common::can_sandbox("fifty_containers_in_parallel_leave_nothing_behind") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    // A marker no other process on the machine has in its command line.
    let marker = format!("{}{}", 4000 + std::process::id() % 1000, N);
    let ids = std::sync::Mutex::new(vec![String::new(); N]);
    parallel(|i| {
        let script = format!("for n in 1 2 3 4 5; do echo c{i} line $n; done; exec sleep {marker}");
        let (code, out, err) = kiln(
            r,
            &[
                "run",
                "-d",
                "--name",
                &format!("c{i}"),
                "kiln.local/busybox",
                "sh",
                "-c",
                &script,
            ],
        );
        assert_eq!(code, 0, "c{i}: {err}");
        ids.lock().unwrap()[i] = out.trim().to_string();
    });
    let ids = ids.into_inner().unwrap();
    // Every one tracked and running; every log complete.
    let (_, running, _) = kiln(r, &["ps", "-q"]);
    assert_eq!(running.lines().count(), N, "{running}");
    parallel(|i| {
        let want: String = (1..=5).map(|n| format!("c{i} line {n}\n")).collect();
        let t0 = Instant::now();
        loop {
            let (_, log, _) = kiln(r, &["logs", &format!("c{i}")]);
            if log == want {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "c{i} logged {log:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    // Stop the first half in parallel; remove the rest with rm -f, killing a few of those
    // `kiln rm` processes (SIGKILL) at once to leave half-done work behind.
    parallel(|i| {
        let name = format!("c{i}");
        if i < N / 2 {
            let (code, _, err) = kiln(r, &["stop", "-t", "1", &name]);
            assert_eq!(code, 0, "{name}: {err}");
        } else if i % 5 == 0 {
            let mut child = common::kiln_cmd(r, &["rm", "-f", &name]).spawn().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let _ = child.kill();
            let _ = child.wait();
        } else {
            let (code, _, err) = kiln(r, &["rm", "-f", &name]);
            assert_eq!(code, 0, "{name}: {err}");
        }
    });
    for i in 0..N / 2 {
        let (_, waited, _) = kiln(r, &["wait", &format!("c{i}")]);
        assert_eq!(
            waited.trim(),
            "137",
            "c{i}: sh as process 1 ignores SIGTERM"
        );
    }
    // Whatever is left (the stopped half, and those whose rm was killed) goes now.
    let (_, all, _) = kiln(r, &["ps", "-aq"]);
    let left: Vec<&str> = all.lines().collect();
    if !left.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(left.iter().copied());
        let (code, _, err) = kiln(r, &args);
        assert_eq!(code, 0, "{err}");
    }
    let (_, all, _) = kiln(r, &["ps", "-aq"]);
    assert_eq!(all, "", "every container removed");
    // Nothing left: processes, mounts, cgroups, directories.
    let t0 = Instant::now();
    loop {
        let alive: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.trim() == format!("sleep {marker}"))
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{} container processes outlived rm",
            alive.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&r.display().to_string()),
        "a mount under the store is left"
    );
    for id in &ids {
        let left = cgroups_named(&id[..12]);
        assert!(left.is_empty(), "cgroups left: {left:?}");
    }
    let dirs: Vec<_> = std::fs::read_dir(r.join("containers"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(dirs.is_empty(), "container directories left: {dirs:?}");
    let (code, out, err) = kiln(r, &["store", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}
