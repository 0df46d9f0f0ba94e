//! `RUN --mount` end to end (real namespaces and overlayfs; root): bind (context, stage),
//! cache, tmpfs, secret and ssh mounts; what each adds to the cache key; and that no mount point
//! or secret reaches the image, the store or the logs.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::{added_layers, can_sandbox, kiln, layer_files, manifest_of, store_with_base};

fn build(root: &std::path::Path, ctx: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["build", "--progress", "plain", "-t", "m"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    kiln(root, &args)
}

/// The paths of every layer the build added.
fn paths(root: &std::path::Path) -> Vec<Vec<String>> {
    added_layers(root, &manifest_of(root, "m"))
        .into_iter()
        .map(|l| l.into_iter().map(|e| e.0).collect())
        .collect()
}

#[test]
fn bind_mounts_show_the_context_read_only_and_leave_no_trace() {
    if !can_sandbox("bind_mounts_show_the_context_read_only_and_leave_no_trace") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::create_dir(c.join("sub")).unwrap();
    std::fs::write(c.join("a.txt"), "A\n").unwrap();
    std::fs::write(c.join("sub/b.txt"), "B\n").unwrap();
    std::fs::write(c.join("ignored.txt"), "nope\n").unwrap();
    std::fs::write(c.join(".dockerignore"), "ignored.txt\n").unwrap();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\n\
         RUN --mount=target=/src cat /src/a.txt /src/sub/b.txt > /seen && \
             (test -e /src/ignored.txt && echo leaked >> /seen; true) && \
             (touch /src/new 2>/dev/null && echo writable >> /seen; true)\n\
         RUN --mount=target=/w,source=sub,rw sh -c 'echo changed > /w/b.txt && cat /w/b.txt > /rw'\n",
    )
    .unwrap();
    let (code, _, err) = build(r, c, &[]);
    assert_eq!(code, 0, "{err}");
    let files = layer_files(r, "m");
    assert_eq!(
        files,
        vec![
            vec![("seen".to_string(), Some("A\nB\n".to_string()))],
            vec![("rw".to_string(), Some("changed\n".to_string()))],
        ],
        "the mount saw the context minus .dockerignore, read-only; no mount point in a layer"
    );
    // rw: the writes were discarded, the context is untouched.
    assert_eq!(std::fs::read_to_string(c.join("sub/b.txt")).unwrap(), "B\n");
    assert!(!c.join("new").exists());

    // The key sees the mounted files: an ignored file changing is a hit, a mounted one a miss.
    std::fs::write(c.join("ignored.txt"), "still ignored\n").unwrap();
    let (code, out, err) = build(r, c, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(format!("{out}{err}").matches("CACHED").count(), 2, "{err}");
    std::fs::write(c.join("sub/b.txt"), "B2\n").unwrap();
    let (code, out, err) = build(r, c, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(format!("{out}{err}").matches("CACHED").count(), 0, "{err}");

    // A source that is not in the context is named.
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\nRUN --mount=target=/x,source=ignored.txt true\n",
    )
    .unwrap();
    let (code, _, err) = build(r, c, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("Dockerfile:2:1"), "{err}");
    assert!(
        err.contains("\"ignored.txt\" is not in the build context"),
        "{err}"
    );
}

#[test]
fn bind_mount_from_a_stage() {
    if !can_sandbox("bind_mount_from_a_stage") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox AS tools\n\
         RUN mkdir /out && echo built > /out/tool\n\
         FROM kiln.local/busybox\n\
         RUN --mount=from=tools,source=/out,target=/t cat /t/tool > /got\n",
    )
    .unwrap();
    let (code, _, err) = build(r, c, &[]);
    assert_eq!(code, 0, "{err}");
    let layers = added_layers(r, &manifest_of(r, "m"));
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0].len(), 1, "{:?}", layers[0]);
    assert_eq!(layers[0][0].0, "got");
    assert_eq!(layers[0][0].4.as_deref(), Some("built\n"));
}

#[test]
fn cache_mounts_persist_across_builds_and_stay_out_of_the_image() {
    if !can_sandbox("cache_mounts_persist_across_builds_and_stay_out_of_the_image") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\n\
         RUN --mount=type=cache,target=/var/cache/app,uid=1000,mode=0750 \
             echo run >> /var/cache/app/log && wc -l < /var/cache/app/log > /count && \
             stat -c '%u %a' /var/cache/app > /owner\n",
    )
    .unwrap();
    let count =
        |r: &std::path::Path| -> Vec<(String, Option<String>)> { layer_files(r, "m").concat() };
    let (code, _, err) = build(r, c, &[]);
    assert_eq!(code, 0, "{err}");
    // Only the step's own files: /var/cache/app is a mount point, and /var was not changed.
    assert_eq!(
        count(r),
        vec![
            ("count".to_string(), Some("1\n".to_string())),
            ("owner".to_string(), Some("1000 750\n".to_string())),
        ]
    );
    // --no-cache reruns the step; the cache mount kept its content.
    let (code, _, err) = build(r, c, &["--no-cache"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(count(r)[0].1.as_deref(), Some("2\n"));
    // id= names the cache: another target with the same id sees the same files.
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\n\
         RUN --mount=type=cache,id=/var/cache/app,target=/elsewhere,sharing=locked \
             wc -l < /elsewhere/log > /count\n",
    )
    .unwrap();
    let (code, _, err) = build(r, c, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        count(r),
        vec![("count".to_string(), Some("2\n".to_string()))]
    );
}

#[test]
fn tmpfs_mounts_are_scratch_space() {
    if !can_sandbox("tmpfs_mounts_are_scratch_space") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\n\
         RUN --mount=type=tmpfs,target=/scratch,size=1m \
             grep ' /scratch tmpfs ' /proc/mounts > /dev/null && \
             echo x > /scratch/f && ! dd if=/dev/zero of=/scratch/big bs=1k count=2048 2>/dev/null && \
             echo ok > /result\n",
    )
    .unwrap();
    let (code, _, err) = build(r, c, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(paths(r), vec![vec!["result".to_string()]]);
}

#[test]
fn secrets_reach_the_step_and_nothing_else() {
    if !can_sandbox("secrets_reach_the_step_and_nothing_else") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    let secret = "s3cr3t-value-7f1e0c";
    let token = "t0ken-from-env-93ab";
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), secret).unwrap();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\n\
         RUN --mount=type=secret,id=db,uid=1000 \
             sha256sum < /run/secrets/db | cut -c1-64 > /perm && \
             stat -c '%a %u' /run/secrets/db >> /perm\n\
         RUN --mount=type=secret,id=tok,env=TOKEN,required=true \
             printf %s \"$TOKEN\" | sha256sum | cut -c1-64 > /env && test ! -e /run/secrets/tok\n\
         RUN --mount=type=secret,id=absent true\n",
    )
    .unwrap();
    let src = format!("id=db,src={}", file.path().display());
    let (code, out, err) = kiln(
        r,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "m",
            "--secret",
            &src,
            "--secret",
            "id=tok,env=KILN_TEST_TOKEN",
            c.to_str().unwrap(),
        ],
    );
    // The variable is set for the child only.
    assert_ne!(code, 0, "fails without KILN_TEST_TOKEN in the environment");
    assert!(
        err.contains("secret tok: $KILN_TEST_TOKEN is not set"),
        "{err}"
    );
    assert!(!out.contains(secret) && !err.contains(secret));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_TEST_TOKEN", token)
        .arg("--root")
        .arg(r)
        .args(["build", "--progress", "plain", "-t", "m", "--secret", &src])
        .args(["--secret", "id=tok,env=KILN_TEST_TOKEN"])
        .arg(c)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{err}");
    let files = layer_files(r, "m").concat();
    // The Dockerfile holds only digests: the values themselves must appear nowhere.
    let sum = |s: &str| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(s.as_bytes()))
    };
    assert_eq!(
        files,
        vec![
            (
                "perm".to_string(),
                Some(format!("{}\n400 1000\n", sum(secret)))
            ),
            ("env".to_string(), Some(format!("{}\n", sum(token)))),
        ],
        "the step read both values; no /run/secrets in any layer"
    );
    // Nowhere: not in the logs, and not in any file of the store (blobs, cache, metadata).
    for s in [secret, token] {
        assert!(!out.contains(s) && !err.contains(s), "{s} in the logs");
        for entry in walk(r) {
            let data = std::fs::read(&entry).unwrap_or_default();
            assert!(
                !data.windows(s.len()).any(|w| w == s.as_bytes()),
                "{s} found in {}",
                entry.display()
            );
        }
    }
    // required=true without the secret fails at its line, naming it.
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\nRUN --mount=type=secret,id=need,required true\n",
    )
    .unwrap();
    let (code, _, err) = build(r, c, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("Dockerfile:2:1"), "{err}");
    assert!(err.contains("secret \"need\" is required"), "{err}");
}

#[test]
fn ssh_mounts_forward_an_agent_socket() {
    if !can_sandbox("ssh_mounts_forward_an_agent_socket") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    let agent_dir = tempfile::tempdir().unwrap();
    let agent = agent_dir.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&agent).unwrap();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\n\
         RUN --mount=type=ssh,uid=1000 test -S \"$SSH_AUTH_SOCK\" && \
             echo \"$SSH_AUTH_SOCK $(stat -c '%a %u' $SSH_AUTH_SOCK)\" > /sock\n",
    )
    .unwrap();
    let ssh = format!("default={}", agent.display());
    let (code, _, err) = build(r, c, &["--ssh", &ssh]);
    assert_eq!(code, 0, "{err}");
    let files = layer_files(r, "m").concat();
    assert_eq!(
        files,
        vec![(
            "sock".to_string(),
            Some("/run/buildkit/ssh_agent.0 600 1000\n".to_string())
        )]
    );
    // A key file is not an agent.
    let key = agent_dir.path().join("id_ed25519");
    std::fs::write(&key, "not a socket").unwrap();
    let (code, _, err) = build(r, c, &["--ssh", &format!("default={}", key.display())]);
    assert_ne!(code, 0);
    assert!(err.contains("is not a socket"), "{err}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn a_cache_mount_starts_from_its_from() {
    if !can_sandbox("a_cache_mount_starts_from_its_from") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox AS seed\n\
         RUN mkdir /out && echo seeded > /out/s\n\
         FROM kiln.local/busybox\n\
         RUN --mount=type=cache,id=c1,target=/c,from=seed,source=/out \
             cat /c/s > /got && echo more >> /c/s\n",
    )
    .unwrap();
    let got = |r: &std::path::Path| {
        added_layers(r, &manifest_of(r, "m"))
            .concat()
            .into_iter()
            .find(|e| e.0 == "got")
            .and_then(|e| e.4)
    };
    let (code, _, err) = build(r, c, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        got(r).as_deref(),
        Some("seeded\n"),
        "a new cache starts with the seed"
    );
    let (code, _, err) = build(r, c, &["--no-cache"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        got(r).as_deref(),
        Some("seeded\nmore\n"),
        "an existing cache keeps its content: the seed is not applied again"
    );
}
