//! The store after crashes and corruption: `kiln store verify` finds a corrupt blob and what
//! needs it, `--repair` removes them, and a build killed with SIGKILL at any moment leaves a
//! store that verifies clean (the next kiln process unmounts and removes what the dead one left)
//! and builds again.
//!
//! The kill loop runs 10 times here; `KILN_CRASH_LOOPS=50 cargo test --test store_crash` is the
//! stress run.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::{can_sandbox, kiln, manifest_of, store_with_base};

fn mounts_under(root: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&root.display().to_string()))
        .map(str::to_string)
        .collect()
}

/// Waits (bounded) until no process has `path` open.
fn wait_until_unheld(path: &std::path::Path) {
    for _ in 0..200 {
        let held = std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
            std::fs::read_dir(p.path().join("fd"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == path))
        });
        if !held {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn verify_finds_a_corrupt_blob_and_repair_removes_what_needs_it() {
    if !can_sandbox("verify_finds_a_corrupt_blob_and_repair_removes_what_needs_it") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\nRUN echo data > /data\n",
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["build", "-t", "t", c.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = kiln(r, &["store", "verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with(" 0 problems\n"), "{out}");

    // Flip one byte of the RUN layer.
    let m: serde_json::Value =
        serde_json::from_slice(&common::blob(r, &manifest_of(r, "t"))).unwrap();
    let layer = m["layers"][1]["digest"].as_str().unwrap().to_string();
    let path = r
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let mut data = std::fs::read(&path).unwrap();
    data[600] ^= 0xff;
    std::fs::write(&path, data).unwrap();
    let (code, out, _) = kiln(r, &["store", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("{}: content has digest", path.display())),
        "{out}"
    );
    assert!(out.contains("tag t:latest: missing layer"), "{out}");
    assert!(
        out.contains("cache entry") && out.contains("missing layer"),
        "{out}"
    );
    assert!(
        !out.contains("kiln.local/busybox"),
        "the base image is intact: {out}"
    );

    let (code, out, _) = kiln(r, &["store", "verify", "--repair"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed tag t:latest"), "{out}");
    let (code, out, _) = kiln(r, &["store", "verify"]);
    assert_eq!(code, 0, "clean after repair: {out}");
    // The base image survived; the build runs again.
    let (code, _, err) = kiln(r, &["build", "-t", "t", c.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = kiln(r, &["store", "verify"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn builds_killed_at_random_moments_leave_a_consistent_store() {
    if !can_sandbox("builds_killed_at_random_moments_leave_a_consistent_store") {
        return;
    }
    let loops: u64 = std::env::var("KILN_CRASH_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    for i in 0..200 {
        std::fs::write(c.join(format!("f{i}")), format!("file {i}\n").repeat(50)).unwrap();
    }
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox AS a\n\
         COPY . /ctx\n\
         RUN --mount=type=cache,target=/cache cp -r /ctx /copy && echo x >> /cache/n && sleep 0.05\n\
         RUN rm -rf /copy/f1* && sleep 0.05\n\
         FROM kiln.local/busybox\n\
         COPY --from=a /copy /out\n\
         RUN ls /out | wc -l > /count\n",
    )
    .unwrap();
    // A fixed pseudo-random sequence of delays (0-600 ms), printed, so a failure can be replayed.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..loops {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = seed % 600;
        eprintln!("kill loop {i}: SIGKILL after {delay} ms");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(r)
            .args(["build", "-q", "--no-cache", "-t", "k"])
            .arg(c)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        // A sandbox process forked at the moment of the kill holds the store's files until it
        // has died of its parent-death signal (a few ms); recovery needs the store alone.
        wait_until_unheld(&r.join("active.lock"));
        // The next kiln process recovers: nothing mounted or half-written is left, and every
        // blob and reference checks out.
        let (code, out, err) = kiln(r, &["store", "verify"]);
        assert_eq!(code, 0, "loop {i} (after {delay} ms): {out}{err}");
        assert!(
            mounts_under(r).is_empty(),
            "loop {i}: {:?}",
            mounts_under(r)
        );
        let tmp: Vec<_> = std::fs::read_dir(r.join("tmp")).unwrap().collect();
        assert!(tmp.is_empty(), "loop {i}: {tmp:?}");
    }
    let (code, _, err) = kiln(r, &["build", "-q", "-t", "k", c.to_str().unwrap()]);
    assert_eq!(code, 0, "a build after the kills: {err}");
    let layers = common::added_layers(r, &manifest_of(r, "k"));
    let count = layers
        .concat()
        .into_iter()
        .find(|e| e.0 == "count")
        .and_then(|e| e.4);
    let expected = std::fs::read_dir(c)
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("f1")
        })
        .count();
    assert_eq!(
        count,
        Some(format!("{expected}\n")),
        "the context minus f1*"
    );
    let (code, out, _) = kiln(r, &["store", "verify"]);
    assert_eq!(code, 0, "{out}");
}
