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
    let d = kept["description"].as_str().unwrap();
    assert!(
        d.starts_with("[stage-0 2/2] RUN --mount=type=cache") && d.ends_with("(Dockerfile:2)"),
        "the step and where it is written: {d}"
    );
    assert_eq!(
        (
            kept["type"].as_str(),
            kept["in_use"].as_bool(),
            kept["shared"].as_bool()
        ),
        (Some("layer"), Some(true), Some(true)),
        "an image uses it"
    );
    assert_eq!(
        kept["shared_size"], kept["size"],
        "the image holds all of it"
    );
    let other = find("echo other");
    assert_eq!(other["in_use"].as_bool(), Some(false));
    assert_eq!(other["shared_size"].as_u64(), Some(0), "all its own");
    assert_eq!(other["uses"].as_u64(), Some(0));
    let mount = find("cache mount id=pip");
    assert_eq!(mount["type"].as_str(), Some("cache-mount"));
    assert!(mount["size"].as_u64().unwrap() > 0);

    let (_, out, _) = kiln(r, &["cache", "du", "--format", "json"]);
    let du: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The two layers, the cache mount, the base image and its unpacked layer (both needed by
    // the tagged image).
    assert_eq!(du["entries"].as_u64(), Some(5), "{out}");
    assert_eq!(
        du["reclaimable"].as_u64(),
        Some(other["size"].as_u64().unwrap() + mount["size"].as_u64().unwrap())
    );
    let (_, out, _) = kiln(r, &["system", "df"]);
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().take(3).eq(["Build", "Cache", "5"])),
        "{out}"
    );

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
    assert!(
        out.contains("echo x") && out.contains("base-image"),
        "{out}"
    );
    let (code, out, _) = kiln(r, &["store", "verify"]);
    assert_eq!(code, 0, "the image is whole after prune --all: {out}");
    let (code, out, err) = kiln(r, &["run", "--rm", "kept", "cat", "/a"]);
    assert_eq!((code, out.as_str()), (0, "a\n"), "{err}");
    // The run unpacked the image's layer again.
    let (_, out, _) = kiln(r, &["cache", "ls", "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(rows.iter().all(|v| v["type"] == "unpacked"), "{out}");
    let (_, out, _) = kiln(r, &["cache", "prune", "--all"]);
    assert!(out.contains("removed "), "{out}");
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
        .filter(|v| v["type"] == "layer")
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

#[test]
fn every_kind_of_entry_is_listed_and_pruned_safely() {
    if !can_sandbox("every_kind_of_entry_is_listed_and_pruned_safely") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let base = tempfile::tempdir().unwrap();
    write(
        base.path(),
        "FROM kiln.local/busybox\nRUN echo base > /base\n",
    );
    let (code, _, err) = kiln(
        r,
        &["build", "-q", "-t", "mybase", base.path().to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let ctx = tempfile::tempdir().unwrap();
    let c = std::fs::canonicalize(ctx.path()).unwrap();
    let cs = c.to_str().unwrap();
    std::fs::write(c.join("a.txt"), "a\n").unwrap();
    write(&c, "FROM mybase\nCOPY a.txt /a\nRUN cat /a > /b\n");
    let (code, _, err) = kiln(r, &["build", "-q", "-t", "app", cs]);
    assert_eq!(code, 0, "{err}");
    // Leaving the store makes gzip forms of app's layers.
    let saved = tempfile::tempdir().unwrap();
    let tar = saved.path().join("app.tar");
    let (code, _, err) = kiln(r, &["save", "-o", tar.to_str().unwrap(), "app"]);
    assert_eq!(code, 0, "{err}");

    let ls = || -> Vec<serde_json::Value> {
        let (_, out, _) = kiln(r, &["cache", "ls", "--format", "json"]);
        serde_json::from_str(&out).unwrap()
    };
    let rows = ls();
    let of =
        |t: &str| -> Vec<&serde_json::Value> { rows.iter().filter(|v| v["type"] == t).collect() };
    let context = of("context");
    assert_eq!(context.len(), 1, "{rows:?}");
    assert_eq!(context[0]["key"].as_str(), Some(cs));
    assert!(
        context[0]["description"]
            .as_str()
            .unwrap()
            .starts_with(&format!("context {cs} (2 files")),
        "{rows:?}"
    );
    let bases: Vec<&str> = of("base-image")
        .iter()
        .map(|v| v["description"].as_str().unwrap())
        .collect();
    assert!(
        bases
            .iter()
            .any(|d| d.starts_with("base image mybase (sha256:")),
        "{bases:?}"
    );
    // Unpacked: the layers the RUN steps ran on (busybox's, mybase's, app's COPY), each
    // named by the step that made it, else by the base image it is part of.
    let mut unpacked: Vec<&str> = of("unpacked")
        .iter()
        .map(|v| v["description"].as_str().unwrap())
        .collect();
    unpacked.sort_unstable();
    assert_eq!(unpacked.len(), 3, "{unpacked:?}");
    assert!(
        unpacked[0].starts_with("unpacked [stage-0 2/2] RUN echo base > /base (Dockerfile:2)"),
        "{unpacked:?}"
    );
    assert!(
        unpacked[1].starts_with("unpacked [stage-0 2/3] COPY a.txt /a (Dockerfile:2)"),
        "{unpacked:?}"
    );
    assert!(
        unpacked[2].contains("layer 1/") && unpacked[2].contains(" of base image "),
        "{unpacked:?}"
    );
    let copy = of("layer")
        .into_iter()
        .find(|v| v["description"].as_str().unwrap().contains("COPY a.txt"))
        .unwrap();
    assert!(
        copy["description"]
            .as_str()
            .unwrap()
            .ends_with("(Dockerfile:2)"),
        "{copy}"
    );

    let (code, _, err) = kiln(r, &["cache", "inspect", context[0]["id"].as_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("is a context entry (context ") && err.contains("only cached layers"),
        "{err}"
    );

    // A context snapshot pruned is forgotten, and comes back with the next build.
    let (_, out, _) = kiln(r, &["cache", "prune", "--filter", "type=context"]);
    assert!(out.contains(&format!("context {cs}")), "{out}");
    assert!(ls().iter().all(|v| v["type"] != "context"));
    let (code, _, err) = kiln(r, &["build", "-q", "-t", "app", cs]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(ls().iter().filter(|v| v["type"] == "context").count(), 1);

    let gz: Vec<String> = {
        let store = kiln_runtime::store::Store::open(r).unwrap();
        store
            .compressed_forms()
            .unwrap()
            .into_values()
            .flatten()
            .map(|(d, _)| d)
            .collect()
    };
    assert!(!gz.is_empty());
    let blob_exists = |d: &str| {
        r.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
            .exists()
    };
    assert!(gz.iter().all(|d| blob_exists(d)));
    let mybase = common::manifest_of(r, "mybase");
    let (code, _, _) = kiln(r, &["rmi", "probe-tag"]);
    assert_eq!(code, 0);

    // A container running app: its unpacked layers survive `prune --all` while it runs.
    let container = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(r)
        .args(["run", "--rm", "app", "sh", "-c", "sleep 3; cat /a /b"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !kiln(r, &["ps"]).1.contains("app") {
        assert!(
            std::time::Instant::now() < deadline,
            "the container never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for image in ["app", "mybase"] {
        let (code, _, err) = kiln(r, &["rmi", image]);
        assert_eq!(code, 0, "{err}");
    }
    let (code, out, err) = kiln(r, &["cache", "prune", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("base image mybase"), "{out}");
    let out = container.wait_with_output().unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (Some(0), "a\na\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // What only the untagged images and pruned entries needed is gone: mybase's manifest, the
    // gzip forms; nothing half-removed is left, and the store is whole.
    assert!(!blob_exists(&mybase), "mybase's manifest stayed");
    let left: Vec<&String> = gz.iter().filter(|d| blob_exists(d)).collect();
    assert!(left.is_empty(), "gzip forms stayed: {left:?}");
    assert_eq!(std::fs::read_dir(r.join("tmp")).unwrap().count(), 0);
    let (code, out, _) = kiln(r, &["store", "verify"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, err) = kiln(r, &["run", "--rm", "kiln.local/busybox", "echo", "ok"]);
    assert_eq!((code, out.as_str()), (0, "ok\n"), "{err}");
}

#[test]
fn load_and_tag_beside_prune() {
    if !can_sandbox("load_and_tag_beside_prune") {
        return;
    }
    let root = store_with_base();
    let r = root.path().to_path_buf();
    let digest = kiln_runtime::store::Store::open(&r)
        .unwrap()
        .resolve_tag("kiln.local/busybox")
        .unwrap()
        .unwrap()
        .to_string();
    let ctx = tempfile::tempdir().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pruner = {
        let (r, stop) = (r.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let (code, _, err) = kiln(&r, &["cache", "prune", "--all"]);
                assert_eq!(code, 0, "{err}");
            }
        })
    };
    // Each round: a build makes busybox a base-image entry. While it is loaded again (its
    // blobs are found in the store, not written) or tagged again by digest, it is untagged and
    // prune may remove its blobs: a tag must never name an image whose blobs prune removed.
    for round in 0..12 {
        if kiln(&r, &["inspect", "kiln.local/busybox"]).0 != 0 {
            let (code, _, err) = kiln(&r, &["load", "-i", common::BASE]);
            assert_eq!(code, 0, "round {round}: {err}");
        }
        write(
            ctx.path(),
            &format!("FROM kiln.local/busybox\nRUN echo {round} > /r\n"),
        );
        let (code, _, err) = kiln(&r, &["build", "-q", ctx.path().to_str().unwrap()]);
        assert_eq!(code, 0, "round {round}: {err}");
        let again = {
            let (r, digest) = (r.clone(), digest.clone());
            std::thread::spawn(move || {
                if round % 2 == 0 {
                    kiln(&r, &["load", "-i", common::BASE])
                } else {
                    kiln(&r, &["tag", &digest, "again"])
                }
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(round % 4 * 3));
        let (code, _, err) = kiln(&r, &["rmi", "kiln.local/busybox"]);
        assert_eq!(code, 0, "round {round}: {err}");
        let (code, _, err) = again.join().unwrap();
        assert!(
            code == 0 || err.contains("no such image"),
            "round {round}: {err}"
        );
        let (code, out, err) = kiln(&r, &["store", "verify"]);
        assert_eq!(code, 0, "round {round}: {out}{err}");
        let _ = kiln(&r, &["rmi", "again"]);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    pruner.join().unwrap();
    let (code, _, err) = kiln(&r, &["load", "-i", common::BASE]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = kiln(&r, &["run", "--rm", "kiln.local/busybox", "echo", "ok"]);
    assert_eq!((code, out.as_str()), (0, "ok\n"), "{err}");
}

#[test]
fn prune_all_frees_the_blobs_of_superseded_images() {
    if !can_sandbox("prune_all_frees_the_blobs_of_superseded_images") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    // Four builds of one tag: three manifests and configs (and their layers) superseded.
    for i in 1..=4 {
        std::fs::write(
            c.join("Dockerfile"),
            format!("FROM kiln.local/busybox\nRUN echo {i} > /f\nLABEL v={i}\n"),
        )
        .unwrap();
        let (code, _, err) = kiln(r, &["build", "-q", "-t", "t", c.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
    }
    let count = || std::fs::read_dir(r.join("blobs/sha256")).unwrap().count();
    let before = count();
    let (code, out, err) = kiln(r, &["cache", "prune", "-a", "-f"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("unreferenced"), "{out}");
    // Exactly what the image needs stays: nothing left for repair to collect.
    let (code, out, _) = kiln(r, &["store", "verify", "--repair"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("removed"), "prune left garbage: {out}");
    // busybox (manifest, config, layer) and t (manifest, config, RUN layer).
    assert_eq!(count(), 6, "from {before}");
    let (code, out, err) = kiln(r, &["run", "--rm", "t", "cat", "/f"]);
    assert_eq!((code, out.as_str()), (0, "4\n"), "{err}");
}
