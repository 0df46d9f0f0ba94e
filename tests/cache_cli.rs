//! `kiln cache ls|du|prune` and `kiln system df` end to end, and prune running beside
//! concurrent builds without breaking any of them or the store.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::{can_sandbox, kiln, store_with_base};

fn write(dir: &std::path::Path, text: &str) {
    std::fs::write(dir.join("Dockerfile"), text).unwrap();
}

#[test]
fn cache_is_listed_summed_and_pruned_without_touching_images() {
    if !can_sandbox("cache_is_listed_summed_and_pruned_without_touching_images") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    let cs = c.to_str().unwrap();
    write(
        c,
        "FROM kiln.local/busybox\n\
         RUN --mount=type=cache,target=/c,id=pip echo x > /c/f && echo a > /a\n",
    );
    let (code, _, err) = kiln(r, &["build", "-q", "-t", "kept", cs]);
    assert_eq!(code, 0, "{err}");
    write(c, "FROM kiln.local/busybox\nRUN echo other > /o\n");
    let (code, _, err) = kiln(r, &["build", "-q", cs]); // untagged: nothing uses its layer
    assert_eq!(code, 0, "{err}");

    let (code, out, _) = kiln(r, &["cache", "ls", "--format", "json"]);
    assert_eq!(code, 0);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let find = |d: &str| {
        rows.iter()
            .find(|v| v["description"].as_str().unwrap().contains(d))
            .unwrap_or_else(|| panic!("{d} in {out}"))
            .clone()
    };
    let kept = find("echo x > /c/f");
    assert_eq!(
        (
            kept["type"].as_str(),
            kept["in_use"].as_bool(),
            kept["shared"].as_bool()
        ),
        (Some("layer"), Some(true), Some(true)),
        "an image uses it"
    );
    let other = find("echo other");
    assert_eq!(other["in_use"].as_bool(), Some(false));
    assert_eq!(other["uses"].as_u64(), Some(0));
    let mount = find("cache mount id=pip");
    assert_eq!(mount["type"].as_str(), Some("cache-mount"));
    assert!(mount["size"].as_u64().unwrap() > 0);

    let (_, out, _) = kiln(r, &["cache", "du", "--format", "json"]);
    let du: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(du["entries"].as_u64(), Some(3));
    assert_eq!(
        du["reclaimable"].as_u64(),
        Some(other["size"].as_u64().unwrap() + mount["size"].as_u64().unwrap())
    );
    let (_, out, _) = kiln(r, &["system", "df"]);
    assert!(out.contains("Build Cache   3"), "{out}");

    // Filters choose; --dry-run removes nothing.
    let (_, out, _) = kiln(
        r,
        &[
            "cache",
            "prune",
            "--dry-run",
            "--filter",
            "type=cache-mount",
        ],
    );
    assert!(
        out.contains("would remove") && out.contains("cache mount id=pip"),
        "{out}"
    );
    assert!(!out.contains("echo other"), "{out}");
    let (_, out, _) = kiln(r, &["cache", "prune", "--filter", "until=1h"]);
    assert!(!out.contains("removed "), "nothing is an hour old: {out}");
    let (_, out, _) = kiln(r, &["cache", "prune", "--filter", "description~=other"]);
    assert!(
        out.contains("removed ") && out.contains("echo other"),
        "{out}"
    );
    assert!(!out.contains("pip"), "{out}");
    let (code, _, err) = kiln(r, &["cache", "prune", "--filter", "colour=red"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("expected type=, until= or description~="),
        "{err}"
    );

    // The default prune never removes what an image uses; --all forgets the entry but the
    // image keeps its layer.
    let (_, out, _) = kiln(r, &["cache", "prune"]);
    assert!(
        out.contains("cache mount id=pip") && !out.contains("echo x"),
        "{out}"
    );
    let (_, out, _) = kiln(r, &["cache", "prune", "--all"]);
    assert!(out.contains("echo x"), "{out}");
    let (code, out, _) = kiln(r, &["store", "verify"]);
    assert_eq!(code, 0, "the image is whole after prune --all: {out}");
    let (code, out, err) = kiln(r, &["run", "--rm", "kept", "cat", "/a"]);
    assert_eq!((code, out.as_str()), (0, "a\n"), "{err}");
    let (_, out, _) = kiln(r, &["cache", "ls", "--format", "json"]);
    assert_eq!(out.trim(), "[]");
}

#[test]
fn prune_beside_four_concurrent_builds() {
    if !can_sandbox("prune_beside_four_concurrent_builds") {
        return;
    }
    let root = store_with_base();
    let r = root.path().to_path_buf();
    let ctxs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    for (i, c) in ctxs.iter().enumerate() {
        // Overlapping: the first step is the same in all four.
        write(
            c.path(),
            &format!(
                "FROM kiln.local/busybox\nRUN echo shared > /s\nRUN echo {i} > /own && sleep 0.1\n"
            ),
        );
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pruner = {
        let (r, stop) = (r.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (code, _, err) = kiln(&r, &["cache", "prune", "--all"]);
                assert_eq!(code, 0, "{err}");
                n += 1;
            }
            n
        })
    };
    for round in 0..3 {
        let builds: Vec<_> = ctxs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (r, c) = (r.clone(), c.path().to_path_buf());
                std::thread::spawn(move || {
                    let tag = format!("b{i}");
                    kiln(&r, &["build", "-q", "-t", &tag, c.to_str().unwrap()])
                })
            })
            .collect();
        for (i, b) in builds.into_iter().enumerate() {
            let (code, _, err) = b.join().unwrap();
            assert_eq!(code, 0, "round {round}, build {i}: {err}");
        }
        // Every image this round tagged is whole (a later round would hide a broken one).
        let (code, out, _) = kiln(&r, &["store", "verify"]);
        assert_eq!(code, 0, "round {round}: {out}");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let prunes = pruner.join().unwrap();
    assert!(prunes > 0);
    let (code, out, _) = kiln(&r, &["store", "verify"]);
    assert_eq!(code, 0, "{out}");
    for i in 0..4 {
        let (code, out, err) = kiln(&r, &["run", "--rm", &format!("b{i}"), "cat", "/s", "/own"]);
        assert_eq!((code, out), (0, format!("shared\n{i}\n")), "{err}");
    }
}

#[test]
fn a_gc_policy_keeps_the_cache_under_its_size() {
    if !can_sandbox("a_gc_policy_keeps_the_cache_under_its_size") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    let cs = c.to_str().unwrap();
    write(
        c,
        "FROM kiln.local/busybox\nRUN head -c 300000 /dev/zero > /big\n",
    );
    let (code, _, err) = kiln(r, &["build", "-q", cs]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = kiln(r, &["cache", "du", "--format", "json"]);
    let du: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(du["total"].as_u64().unwrap() > 300_000, "{out}");

    // 100 kB: the next build's untagged layers go; a tagged image's stay.
    std::fs::write(r.join("kiln.json"), r#"{"gc": {"keep_storage": "100kB"}}"#).unwrap();
    write(c, "FROM kiln.local/busybox\nRUN echo small > /s\n");
    let (code, _, err) = kiln(r, &["build", "-q", "-t", "kept", cs]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("the cache was over its limit: freed"), "{err}");
    let (_, out, _) = kiln(r, &["cache", "ls", "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let descs: Vec<&str> = rows
        .iter()
        .map(|v| v["description"].as_str().unwrap())
        .collect();
    assert_eq!(descs.len(), 1, "{descs:?}");
    assert!(descs[0].contains("echo small"), "{descs:?}");
    let (code, out, _) = kiln(r, &["store", "verify"]);
    assert_eq!(code, 0, "{out}");

    std::fs::write(r.join("kiln.json"), r#"{"gc": {"keep_storage": "lots"}}"#).unwrap();
    let (code, _, err) = kiln(r, &["build", "-q", cs]);
    assert_eq!(code, 0, "a bad policy does not fail the build: {err}");
    assert!(
        err.contains("gc.keep_storage: \"lots\" is not a size"),
        "{err}"
    );
}
