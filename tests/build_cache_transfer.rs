//! A build cache shared between stores as separate CI runners would share it: runner A builds
//! and exports (`--cache-to type=local|registry`), a fresh runner B imports (`--cache-from`)
//! and its steps hit instead of running, giving the same image; a changed file misses where it
//! should; a corrupt or missing cache is a warning and a normal build. The registry is Debian's
//! `docker-registry`, started on 127.0.0.1 by the test.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::{context, kiln, store_with_base};

use std::path::Path;

fn ok(root: &Path, args: &[&str]) -> (String, String) {
    let (code, out, err) = kiln(root, args);
    assert_eq!(code, 0, "kiln {args:?}: {err}");
    (out, err)
}

/// The image ID of `name`.
fn id(root: &Path, name: &str) -> String {
    ok(root, &["inspect", "-f", "{{.Id}}", name])
        .0
        .trim()
        .to_string()
}

/// How many steps the plain progress says were CACHED, and how many RUN steps ran (`DONE`).
fn cached_and_ran(progress: &str) -> (usize, usize) {
    let step = |l: &str| l.split_whitespace().next().unwrap_or("").to_string();
    let runs: Vec<String> = progress
        .lines()
        .filter(|l| l.contains("] RUN "))
        .map(step)
        .collect();
    let cached = progress.lines().filter(|l| l.ends_with(" CACHED")).count();
    let ran = progress
        .lines()
        .filter(|l| l.contains(" DONE ") && runs.contains(&step(l)))
        .count();
    (cached, ran)
}

/// `kiln build --progress plain -t app --cache-from FROM CONTEXT` on a store: (stdout,
/// stderr), the progress in the second.
fn build_from(root: &Path, from: &str, ctx: &str) -> (String, String) {
    ok(
        root,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "app",
            "--cache-from",
            from,
            ctx,
        ],
    )
}

/// A two-stage project: a builder stage whose output the final stage copies, a RUN that takes
/// time (its output differs each time it runs), ENV and LABEL steps.
const DOCKERFILE: &str = "FROM kiln.local/busybox AS builder\n\
     COPY src /src\n\
     RUN cat /src/a > /built && date +%s%N >> /built\n\
     FROM kiln.local/busybox\n\
     ENV APP=demo\n\
     COPY --from=builder /built /app/built\n\
     COPY conf /conf\n\
     RUN date +%s%N > /stamp\n\
     LABEL stage=final\n";

fn project() -> tempfile::TempDir {
    let ctx = context(DOCKERFILE);
    std::fs::create_dir_all(ctx.path().join("src")).unwrap();
    std::fs::write(ctx.path().join("src/a"), "source\n").unwrap();
    std::fs::write(ctx.path().join("conf"), "conf\n").unwrap();
    ctx
}

#[test]
fn a_fresh_runner_builds_from_a_local_cache() {
    if !common::can_sandbox("a_fresh_runner_builds_from_a_local_cache") {
        return;
    }
    let ctx = project();
    let c = ctx.path().to_str().unwrap();
    let shared = tempfile::tempdir().unwrap();
    let (min_dir, max_dir) = (shared.path().join("min"), shared.path().join("max"));
    let to_min = format!("type=local,dest={}", min_dir.display());
    let to_max = format!("type=local,dest={},mode=max", max_dir.display());
    // Runner A: builds, exports both ways.
    let a = store_with_base();
    let (_, err) = ok(
        a.path(),
        &[
            "build",
            "-q",
            "-t",
            "app",
            "--cache-to",
            &to_min,
            "--cache-to",
            &to_max,
            c,
        ],
    );
    assert!(err.contains("exported"), "{err}");
    assert!(min_dir.join("index.json").is_file() && max_dir.join("oci-layout").is_file());
    let a_id = id(a.path(), "app");

    // Runner B (empty store) with the max cache: every step hits, none runs, same image.
    let b = store_with_base();
    let from_max = format!("type=local,src={}", max_dir.display());
    let (_, progress) = build_from(b.path(), &from_max, c);
    let (cached, ran) = cached_and_ran(&progress);
    assert_eq!(ran, 0, "no RUN executes:\n{progress}");
    assert_eq!(cached, 5, "COPY, RUN, COPY --from, COPY, RUN:\n{progress}");
    assert_eq!(
        id(b.path(), "app"),
        a_id,
        "the same image, digest for digest"
    );
    // The cache is no image of the store.
    let images = ok(b.path(), &["images", "-a", "--format", "{{.Repository}}"]).0;
    assert!(!images.contains("<none>"), "{images}");
    // Where each entry came from: `cache ls` and `cache explain` say so.
    let listed = ok(b.path(), &["cache", "ls", "--format", "json"]).0;
    assert!(
        listed.contains(&format!("(imported from {})", max_dir.display())),
        "{listed}"
    );
    let explained = ok(b.path(), &["cache", "explain", c]).0;
    let from_shared = explained
        .lines()
        .filter(|l| l.starts_with("HIT") && l.contains("(from the shared cache"))
        .count();
    assert_eq!(from_shared, 5, "{explained}");
    // A runner that has built nothing asks before building: `cache explain --cache-from`
    // imports as the build would, and says every step would come from the shared cache.
    let d = store_with_base();
    let explained = ok(
        d.path(),
        &["cache", "explain", "--cache-from", &from_max, c],
    )
    .0;
    let from_shared = explained
        .lines()
        .filter(|l| l.starts_with("HIT") && l.contains("(from the shared cache"))
        .count();
    assert_eq!(from_shared, 5, "{explained}");

    // Runner C with the min cache: the final image's steps hit; the builder stage's RUN (its
    // layer is not in the image) runs, and makes a different file, so the final COPY --from
    // misses from there on.
    let cr = store_with_base();
    let from_min = format!("type=local,src={}", min_dir.display());
    let (_, progress) = build_from(cr.path(), &from_min, c);
    let (_, ran) = cached_and_ran(&progress);
    assert!(ran >= 1, "the builder's RUN runs:\n{progress}");

    // A changed file misses exactly where it should: COPY conf and what follows.
    std::fs::write(ctx.path().join("conf"), "changed\n").unwrap();
    let d = store_with_base();
    let (_, progress) = build_from(d.path(), &from_max, c);
    let (cached, ran) = cached_and_ran(&progress);
    assert_eq!((cached, ran), (3, 1), "{progress}");
    assert_ne!(id(d.path(), "app"), a_id);
}

#[test]
fn a_corrupt_or_missing_cache_is_a_warning_and_a_normal_build() {
    if !common::can_sandbox("a_corrupt_or_missing_cache_is_a_warning_and_a_normal_build") {
        return;
    }
    let ctx = project();
    let c = ctx.path().to_str().unwrap();
    let shared = tempfile::tempdir().unwrap();
    let dir = shared.path().join("cache");
    let a = store_with_base();
    ok(
        a.path(),
        &[
            "build",
            "-q",
            "-t",
            "app",
            "--cache-to",
            &format!("type=local,dest={},mode=max", dir.display()),
            c,
        ],
    );
    // One layer blob altered: the loader refuses the whole cache before any entry is used.
    let blobs = dir.join("blobs/sha256");
    let mut altered = false;
    for e in std::fs::read_dir(&blobs).unwrap() {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut b = bytes.clone();
            let n = b.len();
            b[n / 2] ^= 0xff;
            std::fs::write(&p, b).unwrap();
            altered = true;
            break;
        }
    }
    assert!(altered);
    let b = store_with_base();
    let from = format!("type=local,src={}", dir.display());
    let (_, progress) = build_from(b.path(), &from, c);
    assert!(progress.contains("kiln: warning: cache from"), "{progress}");
    assert_eq!(
        cached_and_ran(&progress).1,
        2,
        "both RUN steps ran:\n{progress}"
    );
    let (code, out, _) = kiln(b.path(), &["store", "verify"]);
    assert_eq!(code, 0, "{out}");
    // Missing: the same.
    let gone = format!("type=local,src={}", shared.path().join("nothing").display());
    let (_, progress) = ok(b.path(), &["build", "-q", "--cache-from", &gone, c]);
    assert!(progress.contains("kiln: warning: cache from"), "{progress}");
    // Mistakes in the flag itself are errors, before anything is built.
    for bad in [
        "type=s3,ref=x",
        "type=local",
        "type=registry,ref=r,mode=all",
        "type=local,dest=x,mounts=yes",
    ] {
        let (code, _, err) = kiln(b.path(), &["build", "-q", "--cache-to", bad, c]);
        assert_eq!(code, 1, "{bad}: {err}");
        assert!(err.contains("--cache-to"), "{bad}: {err}");
    }
    let (code, _, err) = kiln(b.path(), &["build", "-q", "--cache-from", "type=inline", c]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--cache-from IMAGE"), "{err}");
}

#[test]
fn a_fresh_runner_builds_from_a_registry_cache() {
    if !common::can_sandbox("a_fresh_runner_builds_from_a_registry_cache")
        || !common::have(
            "docker-registry",
            "a_fresh_runner_builds_from_a_registry_cache",
        )
        || !common::have("skopeo", "a_fresh_runner_builds_from_a_registry_cache")
    {
        return;
    }
    let reg = common::registry::Registry::start_logged();
    let cache_ref = format!("{}/team/app:buildcache", reg.host());
    let ctx = project();
    let c = ctx.path().to_str().unwrap();
    let a = store_with_base();
    let to = format!("type=registry,ref={cache_ref},mode=max");
    ok(
        a.path(),
        &["build", "-q", "-t", "app", "--cache-to", &to, c],
    );
    let a_id = id(a.path(), "app");
    // An OCI image manifest with kiln's cache config: what ECR and any registry store.
    let raw = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{cache_ref}"))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.kiln.cache.config.v1+json"
    );
    assert_eq!(m["layers"].as_array().unwrap().len(), 5, "{m}");

    // Runner B: docker's short form of --cache-from names the cache's reference.
    let b = store_with_base();
    let before = reg.requests().len();
    let (_, progress) = build_from(b.path(), &cache_ref, c);
    assert_eq!(cached_and_ran(&progress), (5, 0), "{progress}");
    assert_eq!(id(b.path(), "app"), a_id);
    // Its COPY after a RUN hits on the layer indexes the cache carries; its COPY --from of the
    // builder stage reads the file it copies (a copy from a stage is keyed by the content it
    // takes): the cache's config and the builder's RUN layer are the two blobs fetched.
    let blob_gets: Vec<String> = reg.requests()[before..]
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/blobs/"))
        .cloned()
        .collect();
    assert_eq!(blob_gets.len(), 2, "{blob_gets:?}");
    // An inline cache: the image pushed carries it (its own steps: `mode=min`, as BuildKit's),
    // and `--cache-from IMAGE` reads it.
    let single = context("FROM kiln.local/busybox\nCOPY Dockerfile /d\nRUN date +%s%N > /stamp\n");
    let s = single.path().to_str().unwrap();
    let image = format!("{}/team/app:1", reg.host());
    ok(
        a.path(),
        &[
            "build",
            "-q",
            "-t",
            &image,
            "--cache-to",
            "type=inline",
            "--push",
            s,
        ],
    );
    let e = store_with_base();
    let (_, progress) = build_from(e.path(), &image, s);
    assert_eq!(cached_and_ran(&progress), (2, 0), "{progress}");
    // An image without one: a warning.
    let plain = format!("{}/team/plain:1", reg.host());
    ok(a.path(), &["build", "-q", "-t", &plain, "--push", c]);
    let (_, progress) = ok(e.path(), &["build", "-q", "--cache-from", &plain, c]);
    assert!(progress.contains("without an inline cache"), "{progress}");
    // An unreachable registry: a warning, and the build goes on.
    let gone = format!(
        "type=registry,ref=127.0.0.1:{}/x:y",
        common::registry::free_port()
    );
    let d = store_with_base();
    let (_, progress) = ok(d.path(), &["build", "-q", "--cache-from", &gone, c]);
    assert!(progress.contains("kiln: warning: cache from"), "{progress}");
}

#[test]
fn cache_mount_contents_travel_with_mounts_true() {
    if !common::can_sandbox("cache_mount_contents_travel_with_mounts_true") {
        return;
    }
    // Runner A fills a cache mount (as a package manager would) in a RUN.
    let fill = context(
        "FROM kiln.local/busybox\n\
         RUN --mount=type=cache,target=/root/.cache,id=pkgs \
         echo fetched-by-a > /root/.cache/pkg && head -c 200000 /dev/zero > /root/.cache/big\n",
    );
    // Runner B's RUN reads it.
    let read = context(
        "FROM kiln.local/busybox\n\
         RUN --mount=type=cache,target=/root/.cache,id=pkgs \
         cat /root/.cache/pkg > /seen 2>&1 || echo empty > /seen\n",
    );
    let shared = tempfile::tempdir().unwrap();
    let a = store_with_base();
    let export = |dest: &str, extra: &str| {
        let to = format!(
            "type=local,dest={},mode=max{extra}",
            shared.path().join(dest).display()
        );
        ok(
            a.path(),
            &[
                "build",
                "-q",
                "-t",
                "fill",
                "--cache-to",
                &to,
                fill.path().to_str().unwrap(),
            ],
        )
        .1
    };
    export("with", ",mounts=true");
    export("without", "");
    let err = export("small", ",mounts=true,mounts-max-size=100k");
    assert!(err.contains("cache mount pkgs left out"), "{err}");
    let seen = |dir: &str| {
        let b = store_with_base();
        let from = format!("type=local,src={}", shared.path().join(dir).display());
        ok(
            b.path(),
            &[
                "build",
                "-q",
                "-t",
                "read",
                "--cache-from",
                &from,
                read.path().to_str().unwrap(),
            ],
        );
        ok(b.path(), &["run", "--rm", "read", "cat", "/seen"]).0
    };
    assert_eq!(seen("with"), "fetched-by-a\n");
    assert_eq!(seen("without"), "empty\n");
    assert_eq!(seen("small"), "empty\n");
}

#[test]
fn runners_exporting_at_once_leave_a_whole_cache() {
    if !common::can_sandbox("runners_exporting_at_once_leave_a_whole_cache")
        || !common::have(
            "docker-registry",
            "runners_exporting_at_once_leave_a_whole_cache",
        )
    {
        return;
    }
    let reg = common::registry::Registry::start(None, common::registry::Auth::None);
    let shared = tempfile::tempdir().unwrap();
    let dir = shared.path().join("cache");
    let cache_ref = format!("{}/team/app:buildcache", reg.host());
    // Two runners build different versions and export to the same places at the same time,
    // several times over.
    let projects: Vec<tempfile::TempDir> = (0..2)
        .map(|k| {
            let p = project();
            std::fs::write(p.path().join("conf"), format!("runner {k}\n")).unwrap();
            p
        })
        .collect();
    let stores: Vec<tempfile::TempDir> = (0..2).map(|_| store_with_base()).collect();
    let to_local = format!("type=local,dest={},mode=max", dir.display());
    let to_reg = format!("type=registry,ref={cache_ref},mode=max");
    for round in 0..3 {
        let children: Vec<std::process::Child> = (0..2)
            .map(|k| {
                common::kiln_cmd(
                    stores[k].path(),
                    &[
                        "build",
                        "-q",
                        "--no-cache",
                        "-t",
                        "app",
                        "--cache-to",
                        &to_local,
                        "--cache-to",
                        &to_reg,
                        projects[k].path().to_str().unwrap(),
                    ],
                )
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // Whichever runner wrote last, the cache is whole: a fresh runner building that runner's
    // version hits every step, from the directory and from the registry.
    for from in [
        format!("type=local,src={}", dir.display()),
        cache_ref.clone(),
    ] {
        let hits: Vec<usize> = projects
            .iter()
            .map(|p| {
                let b = store_with_base();
                let (_, progress) = build_from(b.path(), &from, p.path().to_str().unwrap());
                assert!(!progress.contains("warning"), "{from}: {progress}");
                cached_and_ran(&progress).0
            })
            .collect();
        assert!(
            hits.contains(&5),
            "{from}: one runner's version hits whole: {hits:?}"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(shared.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temporary layout left: {leftovers:?}"
    );
}

/// sha256 of `bytes`, as `sha256:<hex>`.
fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Writes `bytes` as a blob of the OCI layout `dir`; its digest.
fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = sha256(bytes);
    std::fs::write(dir.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
    d
}

fn read_blob(dir: &Path, digest: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(&digest[7..])).unwrap())
        .unwrap()
}

#[test]
fn a_shared_cache_mount_with_a_device_node_is_refused() {
    if !common::can_sandbox("a_shared_cache_mount_with_a_device_node_is_refused") {
        return;
    }
    let fill = context(
        "FROM kiln.local/busybox\n\
         RUN --mount=type=cache,target=/c,id=pkgs echo fetched > /c/pkg\n",
    );
    let read = context(
        "FROM kiln.local/busybox\n\
         RUN --mount=type=cache,target=/c,id=pkgs ls /c > /seen\n",
    );
    let shared = tempfile::tempdir().unwrap();
    let dir = shared.path().join("cache");
    let a = store_with_base();
    let to = format!("type=local,dest={},mode=max,mounts=true", dir.display());
    ok(
        a.path(),
        &[
            "build",
            "-q",
            "--cache-to",
            &to,
            fill.path().to_str().unwrap(),
        ],
    );
    // Someone with write access to the cache swaps the mount's layer for one with a device.
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest = read_blob(&dir, &manifest_digest);
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let mut config = read_blob(&dir, &config_digest);
    let old = config["kiln.cache.v1"]["mounts"][0]["layer"]
        .as_str()
        .unwrap()
        .to_string();
    let at = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .position(|d| d == &serde_json::json!(old))
        .unwrap();
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Char);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_mode(0o666);
    h.set_size(0);
    h.set_path("null").unwrap();
    h.set_cksum();
    layer.append(&h, std::io::empty()).unwrap();
    let plain = layer.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &plain).unwrap();
    let gz = gz.finish().unwrap();
    let diff_id = sha256(&plain);
    let blob = put_blob(&dir, &gz);
    config["rootfs"]["diff_ids"][at] = serde_json::json!(diff_id);
    config["kiln.cache.v1"]["mounts"][0]["layer"] = serde_json::json!(diff_id);
    let config_bytes = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = serde_json::json!(put_blob(&dir, &config_bytes));
    manifest["config"]["size"] = serde_json::json!(config_bytes.len());
    manifest["layers"][at]["digest"] = serde_json::json!(blob);
    manifest["layers"][at]["size"] = serde_json::json!(gz.len());
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    index["manifests"][0]["digest"] = serde_json::json!(put_blob(&dir, &manifest_bytes));
    index["manifests"][0]["size"] = serde_json::json!(manifest_bytes.len());
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();

    let b = store_with_base();
    let from = format!("type=local,src={}", dir.display());
    let (_, err) = ok(
        b.path(),
        &[
            "build",
            "-q",
            "-t",
            "read",
            "--cache-from",
            &from,
            read.path().to_str().unwrap(),
        ],
    );
    assert!(err.contains("device node"), "{err}");
    assert_eq!(ok(b.path(), &["run", "--rm", "read", "cat", "/seen"]).0, "");
}

/// A remote hit is lazy: fresh runner B, whose every step hits A's registry cache, downloads
/// no layer (the registry's log says which blobs it served), pushes the same image as A to the
/// same registry by mounting A's blobs, and fetches a layer only when something needs its
/// files (`kiln run`).
#[test]
fn a_remote_hit_downloads_no_layer_and_its_push_mounts_them() {
    const TEST: &str = "a_remote_hit_downloads_no_layer_and_its_push_mounts_them";
    if !common::can_sandbox(TEST) || !common::have("docker-registry", TEST) {
        return;
    }
    let reg = common::registry::Registry::start_logged();
    // A WORKDIR and a COPY after a RUN plan against the layers below: the artifact's layer
    // indexes let them hit without those layers.
    let ctx = context(
        "FROM kiln.local/busybox\n\
         COPY src /src\n\
         RUN cat /src/a > /built && date +%s%N >> /built\n\
         WORKDIR /app\n\
         COPY later /app/later\n\
         ENV APP=demo\n\
         RUN echo ready > /ready\n\
         CMD [\"cat\", \"/built\", \"/app/later\", \"/ready\"]\n",
    );
    std::fs::create_dir_all(ctx.path().join("src")).unwrap();
    std::fs::write(ctx.path().join("src/a"), "source\n").unwrap();
    std::fs::write(ctx.path().join("later"), "later\n").unwrap();
    let c = ctx.path().to_str().unwrap();
    let cache = format!("{}/team/app:buildcache", reg.host());
    let to = format!("type=registry,ref={cache},mode=max");
    let a = store_with_base();
    let a_image = format!("{}/team/app:a", reg.host());
    let (a_out, _) = ok(
        a.path(),
        &[
            "build",
            "-q",
            "-t",
            &a_image,
            "--push",
            "--cache-to",
            &to,
            c,
        ],
    );
    let a_digest = common::registry::Env::plain().ok(a.path(), &["push", "-q", &a_image]);

    let b = store_with_base();
    let before = reg.requests().len();
    // Another repository of the registry: its blobs are mounted from the cache's.
    let b_image = format!("{}/other/app:b", reg.host());
    let from = format!("type=registry,ref={cache}");
    // As CI configures it: from the cache, and back to it.
    let (b_out, progress) = ok(
        b.path(),
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            &b_image,
            "--cache-from",
            &from,
            "--cache-to",
            &to,
            "--push",
            c,
        ],
    );
    assert_eq!(cached_and_ran(&progress), (5, 0), "{progress}");
    assert!(progress.contains("exported 5 cache entries"), "{progress}");
    let served: Vec<String> = reg.requests()[before..].to_vec();
    let layer_gets: Vec<&String> = served
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/blobs/"))
        .collect();
    // The cache's config is the one blob fetched: no layer was downloaded.
    assert_eq!(layer_gets.len(), 1, "{served:#?}");
    assert!(
        served
            .iter()
            .any(|r| r.starts_with("POST ") && r.contains("mount=")),
        "{served:#?}"
    );
    // The same image as A's: its ID, and the digest the registry serves.
    assert_eq!(a_out.trim().len(), 71, "{a_out}");
    assert!(b_out.is_empty() || !b_out.contains("error"), "{b_out}");
    assert_eq!(id(b.path(), &b_image), id(a.path(), &a_image));
    let b_digest = common::registry::Env::plain().ok(b.path(), &["push", "-q", &b_image]);
    assert_eq!(b_digest.trim(), a_digest.trim());
    // The store is consistent while only the registry has those layers.
    let (out, _) = ok(b.path(), &["store", "verify"]);
    assert!(out.contains(" 0 problems"), "{out}");
    // Running it needs its files: fetched now, checked, and run.
    let before = reg.requests().len();
    let (out, _) = ok(b.path(), &["run", "--rm", &b_image]);
    assert!(
        out.starts_with("source\n") && out.ends_with("ready\n"),
        "{out}"
    );
    let fetched = reg.requests()[before..]
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/blobs/"))
        .count();
    assert_eq!(
        fetched, 5,
        "the layers of the COPYs, the WORKDIR and the RUNs: {fetched}"
    );
}

/// A remote hit's layer that the registry serves wrong (or no longer has) when a later step
/// needs its files is never a failed or a wrong build: kiln says so and builds that step.
#[test]
fn a_remote_layer_served_wrong_is_built_instead() {
    const TEST: &str = "a_remote_layer_served_wrong_is_built_instead";
    if !common::can_sandbox(TEST) || !common::have("docker-registry", TEST) {
        return;
    }
    let reg = common::registry::Registry::start_logged();
    let ctx = context(
        "FROM kiln.local/busybox\n\
         COPY src /src\n\
         RUN cat /src/a > /built\n\
         COPY later /later\n\
         RUN cat /built /later > /both\n",
    );
    std::fs::create_dir_all(ctx.path().join("src")).unwrap();
    std::fs::write(ctx.path().join("src/a"), "source\n").unwrap();
    std::fs::write(ctx.path().join("later"), "one\n").unwrap();
    let c = ctx.path().to_str().unwrap();
    let cache = format!("{}/team/app:buildcache", reg.host());
    let a = store_with_base();
    let to = format!("type=registry,ref={cache},mode=max");
    ok(a.path(), &["build", "-q", "--cache-to", &to, c]);
    // Every layer blob the registry holds now has other bytes of the same size: what a
    // damaged or hostile registry would serve.
    let blobs = reg.dir.path().join("data/docker/registry/v2/blobs/sha256");
    let mut damaged = 0;
    for prefix in std::fs::read_dir(&blobs).unwrap() {
        for blob in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
            let data = blob.unwrap().path().join("data");
            let bytes = std::fs::read(&data).unwrap();
            // Gzip layers (the base's and the cache's), not the JSON documents.
            if bytes.starts_with(&[0x1f, 0x8b]) {
                let mut bad = bytes.clone();
                let last = bad.len() - 9;
                bad[last] ^= 0xff;
                std::fs::write(&data, bad).unwrap();
                damaged += 1;
            }
        }
    }
    assert!(damaged >= 2, "{damaged}");
    // Runner B changes the second file: its COPY misses and needs the layers below it.
    std::fs::write(ctx.path().join("later"), "two\n").unwrap();
    let b = store_with_base();
    let from = format!("type=registry,ref={cache}");
    let (_, progress) = ok(
        b.path(),
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "app",
            "--cache-from",
            &from,
            c,
        ],
    );
    assert!(
        progress.contains("could not be fetched") && progress.contains("building its step instead"),
        "{progress}"
    );
    let (out, _) = ok(b.path(), &["run", "--rm", "app", "cat", "/both"]);
    assert_eq!(out, "source\ntwo\n");
    let (out, _) = ok(b.path(), &["store", "verify"]);
    assert!(out.contains(" 0 problems"), "{out}");
}
