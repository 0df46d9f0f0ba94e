//! `kiln cache explain` (a dry run) and `kiln build --explain-cache`: HIT or MISS per step and,
//! for the first miss, what changed since the last build of the same Dockerfile and target:
//! files, ARG/ENV values, the instruction, the base image.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::{can_sandbox, kiln, store_with_base};

#[test]
fn the_first_miss_is_explained() {
    if !can_sandbox("the_first_miss_is_explained") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    let cs = c.to_str().unwrap();
    std::fs::create_dir(c.join("src")).unwrap();
    std::fs::write(c.join("src/a.c"), "a\n").unwrap();
    std::fs::write(c.join("src/b.c"), "b\n").unwrap();
    // A base of our own, so it can move.
    let (code, _, err) = kiln(r, &["tag", "kiln.local/busybox", "mybase"]);
    assert_eq!(code, 0, "{err}");
    let df = |run: &str| {
        std::fs::write(
            c.join("Dockerfile"),
            format!(
                "FROM mybase\nARG V=1\nENV MODE=fast\nCOPY src/ /src/\n\
                 RUN --mount=type=cache,target=/c echo $V $MODE > /v && echo ran >> /c/log\n\
                 RUN {run}\n"
            ),
        )
        .unwrap();
    };
    df("echo done");
    let explain = |extra: &[&str]| {
        let mut a = vec!["cache", "explain"];
        a.extend_from_slice(extra);
        a.push(cs);
        let (code, out, err) = kiln(r, &a);
        assert_eq!(code, 0, "{err}");
        out
    };
    assert!(
        explain(&[]).contains("because: no earlier build of this Dockerfile and target"),
        "before any build"
    );
    let (code, _, err) = kiln(r, &["build", "-q", "-t", "x", cs]);
    assert_eq!(code, 0, "{err}");
    let out = explain(&[]);
    assert_eq!(out.matches("HIT ").count(), 3, "{out}");
    assert!(!out.contains("MISS"), "{out}");

    // A dry run runs nothing: the cache mount saw one RUN only, no entry was added.
    let entries = |r: &std::path::Path| {
        let (_, out, _) = kiln(r, &["cache", "ls", "--format", "json"]);
        serde_json::from_str::<Vec<serde_json::Value>>(&out)
            .unwrap()
            .len()
    };
    let before = entries(r);
    let out = explain(&["--build-arg", "V=2"]);
    assert!(
        out.contains("MISS [stage-0 5/6] RUN --mount")
            && out.contains("because: environment: V changed: \"1\" -> \"2\""),
        "{out}"
    );
    assert_eq!(entries(r), before, "nothing was built");

    // Files: the changed path, not just "context changed".
    std::fs::write(c.join("src/b.c"), "B\n").unwrap();
    std::fs::write(c.join("src/new.c"), "n\n").unwrap();
    let out = explain(&[]);
    assert!(
        out.contains("MISS [stage-0 4/6] COPY src/ /src/")
            && out.contains("because: files changed: src/b.c (changed), src/new.c (added)"),
        "{out}"
    );
    std::fs::write(c.join("src/b.c"), "b\n").unwrap();
    std::fs::remove_file(c.join("src/new.c")).unwrap();

    // The instruction itself.
    df("echo Done");
    let out = explain(&[]);
    assert!(
        out.contains("MISS [stage-0 6/6] RUN echo Done")
            && out.contains("argv changed: [\"/bin/sh\",\"-c\",\"echo done\"] -> [\"/bin/sh\",\"-c\",\"echo Done\"]"),
        "{out}"
    );
    df("echo done");

    // The base image moved: the tag now names another image.
    let (code, _, err) = kiln(r, &["tag", "x", "mybase"]);
    assert_eq!(code, 0, "{err}");
    let out = explain(&[]);
    assert!(
        out.contains(
            "because: [stage-0 1/6] FROM mybase changed: the base image moved: mybase was sha256:"
        ),
        "{out}"
    );

    // --explain-cache while building says the same, then builds.
    let (code, out, err) = kiln(r, &["build", "-q", "--explain-cache", "-t", "y", cs]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("sha256:"), "{out}");
    assert!(err.contains("MISS [stage-0 4/6] COPY src/ /src/"), "{err}");
    assert!(err.contains("the base image moved"), "{err}");
    // And the next explain compares with that build: all hits.
    assert!(!explain(&[]).contains("MISS"));

    // inspect: everything that went into an entry's key.
    let (_, out, _) = kiln(r, &["cache", "ls", "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let rows: Vec<&serde_json::Value> = rows.iter().filter(|v| v["type"] == "layer").collect();
    let run = rows
        .iter()
        .find(|v| v["description"].as_str().unwrap().contains("RUN --mount"))
        .unwrap();
    let (code, out, err) = kiln(
        r,
        &[
            "cache",
            "inspect",
            run["id"].as_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let rec: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rec["key"], run["key"]);
    let env = rec["fields"]["env"].as_str().unwrap();
    assert!(env.contains("V=1") && env.contains("MODE=fast"), "{env}");
    assert!(
        rec["fields"]["mount 0"]
            .as_str()
            .unwrap()
            .starts_with("cache target=/c"),
        "{rec}"
    );
    let copy = rows
        .iter()
        .find(|v| v["description"].as_str().unwrap().contains("COPY src/"))
        .unwrap();
    let (_, out, _) = kiln(r, &["cache", "inspect", copy["id"].as_str().unwrap()]);
    assert!(
        out.contains("Inputs:") && out.contains("  src/a.c") && out.contains("  src/b.c"),
        "{out}"
    );
    let (code, _, err) = kiln(r, &["cache", "inspect", "000000000000"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no recorded cache entry 000000000000"),
        "{err}"
    );
}

#[test]
fn a_dry_run_explains_the_first_miss_of_each_stage() {
    if !can_sandbox("a_dry_run_explains_the_first_miss_of_each_stage") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    let cs = c.to_str().unwrap();
    std::fs::write(c.join("a.txt"), "a\n").unwrap();
    // Two stages independent of each other, and a last one that needs both.
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox AS one\nCOPY a.txt /a\nRUN cat /a > /one\n\
         FROM kiln.local/busybox AS two\nARG N=1\nRUN echo $N > /two\n\
         FROM kiln.local/busybox\nCOPY --from=one /one /one\nCOPY --from=two /two /two\n",
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["build", "-q", cs]);
    assert_eq!(code, 0, "{err}");

    // Both stages miss; the dry run stops each at its own first miss, not the build at the
    // first one, and keys nothing that needs a stage which missed.
    std::fs::write(c.join("a.txt"), "A\n").unwrap();
    // One stage at a time: stage two starts after stage one missed.
    let (code, out, err) = kiln(
        r,
        &["cache", "explain", "--jobs", "1", "--build-arg", "N=2", cs],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("MISS [one 2/3] COPY a.txt /a")
            && out.contains("because: files changed: a.txt (changed)"),
        "{out}"
    );
    assert!(
        // Named as the progress names it: its variables expanded, as BuildKit names a step.
        out.contains("MISS [two 3/3] RUN echo 2 > /two")
            && out.contains("because: environment: N changed: \"1\" -> \"2\""),
        "{out}"
    );
    assert!(!out.contains("COPY --from"), "{out}");
}
