//! `kiln build` end to end on RUN: the command runs in the sandbox (real namespaces and
//! overlayfs; root), sees ENV, ARG, WORKDIR and USER, its changes become the layer (deletions as
//! whiteouts), a rebuild takes it from the cache, a failure names the line with the output, and
//! nothing of the host is visible or changed.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::{added_layers, blob, can_sandbox, kiln, layer_files, manifest_of, store_with_base};

#[test]
fn run_steps_make_layers_and_are_cached() {
    if !can_sandbox("run_steps_make_layers_and_are_cached") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    // A host file the build must neither see nor change.
    let marker = tempfile::NamedTempFile::new().unwrap();
    let marker = marker.path().display().to_string();
    std::fs::write(
        c.join("Dockerfile"),
        format!(
            "FROM kiln.local/busybox\n\
             ARG GREETING=hello\n\
             ENV APP=/app\n\
             WORKDIR /app\n\
             RUN echo \"$GREETING $APP $(id -u) $(pwd) $$ $(hostname)\" > msg && rm /bin/ls\n\
             RUN test -e {marker} && exit 9; true\n\
             USER 1000:1000\n\
             RUN id -u > /tmp/me\n\
             RUN --network=none ls /sys/class/net > /tmp/net && \
             ip -o -4 addr show lo | grep -o 127.0.0.1/8 >> /tmp/net\n"
        ),
    )
    .unwrap();
    let (code, _, err) = kiln(
        r,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "r",
            c.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let layers = added_layers(r, &manifest_of(r, "r"));
    let files = layer_files(r, "r");
    let f = |p: &str, c: Option<&str>| (p.to_string(), c.map(str::to_string));
    assert_eq!(
        files,
        vec![
            vec![f("app", None)], // WORKDIR
            vec![
                f("app", None),
                f("app/msg", Some("hello /app 0 /app 1 kiln\n")),
                f("bin", None),
                f("bin/.wh.ls", Some("")),
            ],
            // `test -e` changed nothing: no layer.
            vec![f("tmp", None), f("tmp/me", Some("1000\n"))],
            // Loopback only, and up (as runc makes a new network namespace).
            vec![f("tmp", None), f("tmp/net", Some("lo\n127.0.0.1/8\n"))],
        ],
        "layers of WORKDIR and the RUN steps"
    );
    let me = layers[2].iter().find(|e| e.0 == "tmp/me").unwrap();
    assert_eq!((me.2, me.3), (1000, 1000), "written as USER");
    // History: the no-change RUN is an empty layer.
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(r, &manifest_of(r, "r"))).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&blob(r, manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let hist = config["history"].as_array().unwrap();
    let run_test = hist
        .iter()
        .find(|h| h["created_by"].as_str().unwrap_or("").contains("test -e"))
        .unwrap();
    assert_eq!(run_test["empty_layer"], true, "{run_test}");

    // Rebuild: every RUN from the cache, same image.
    let (code, _, err2) = kiln(
        r,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "r2",
            c.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err2}");
    let run_lines = err2.lines().filter(|l| l.contains("] RUN ")).count();
    assert_eq!(run_lines, 4, "{err2}");
    assert_eq!(
        err2.matches("CACHED").count(),
        5,
        "WORKDIR and 4 RUNs cached: {err2}"
    );
    assert_eq!(manifest_of(r, "r"), manifest_of(r, "r2"));

    // The host is untouched, and nothing is left mounted or in the store's tmp.
    assert!(!std::path::Path::new("/app/msg").exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&r.display().to_string()), "{mounts}");
    let tmp: Vec<_> = std::fs::read_dir(r.join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

#[test]
fn a_failing_run_names_the_line_and_shows_its_output() {
    if !can_sandbox("a_failing_run_names_the_line_and_shows_its_output") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\nRUN echo first; echo second >&2; exit 7\n",
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["build", "--progress", "plain", c.to_str().unwrap()]);
    assert!(
        err.contains("#2 first\n#2 second\n"),
        "plain progress shows the output as it comes: {err}"
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "Dockerfile:2:1: error: RUN echo first; echo second >&2; exit 7: exit status 7"
        ),
        "{err}"
    );
    assert!(err.contains("  first\n  second"), "{err}");
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\nRUN [\"/bin/nope\"]\n",
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["build", c.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "RUN [\"/bin/nope\"]: exec: \"/bin/nope\": stat /bin/nope: no such file or directory"
        ),
        "a setup failure is named, not exit status 127: {err}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&r.display().to_string()), "{mounts}");
}

#[test]
fn run_heredocs_as_buildkit_runs_them() {
    if !can_sandbox("run_heredocs_as_buildkit_runs_them") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\n\
         ARG WHO=world\n\
         RUN <<EOF\necho \"plain $WHO\" > /plain\necho second >> /plain\nEOF\n\
         RUN <<-EOF\n\t#!/bin/sh\n\techo \"shebang $0\" > /shebang\n\tEOF\n\
         RUN cat > /two <<A && cat > /three <<'B'\nfirst $WHO\nA\nsecond $WHO\nB\n",
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["build", "-q", "-t", "hd", c.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let files: Vec<(String, Option<String>)> = added_layers(r, &manifest_of(r, "hd"))
        .into_iter()
        .flatten()
        .filter(|e| e.4.is_some())
        .map(|e| (e.0, e.4))
        .collect();
    let f = |p: &str, c: &str| (p.to_string(), Some(c.to_string()));
    assert_eq!(
        files,
        vec![
            f("plain", "plain world\nsecond\n"),
            // Run from /dev/pipes (the sandbox's own /dev), so not part of any layer.
            f("shebang", "shebang /dev/pipes/EOF\n"),
            f("three", "second $WHO\n"),
            f("two", "first world\n"),
        ]
    );
}

#[test]
fn proxy_build_args_reach_run_but_not_the_cache_key() {
    if !can_sandbox("proxy_build_args_reach_run_but_not_the_cache_key") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\nRUN echo \"proxy=$HTTP_PROXY\" > /p\n",
    )
    .unwrap();
    let build = |proxy: &str| {
        kiln(
            r,
            &[
                "build",
                "--progress",
                "plain",
                "--build-arg",
                &format!("HTTP_PROXY={proxy}"),
                "-t",
                "px",
                c.to_str().unwrap(),
            ],
        )
    };
    let (code, _, err) = build("http://one:3128");
    assert_eq!(code, 0, "{err}");
    let files = added_layers(r, &manifest_of(r, "px"));
    assert_eq!(
        files[0].last().unwrap().4.as_deref(),
        Some("proxy=http://one:3128\n"),
        "passed without an ARG instruction"
    );
    // Another proxy: the step is a cache hit.
    let (code, _, err) = build("http://two:3128");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("CACHED"), "{err}");
}

#[test]
fn run_resolves_user_as_the_runtime_does() {
    // A bare uid missing from /etc/passwd runs with gid 0 (docker/BuildKit), unlike
    // `COPY --chown=1234`, which gives gid 1234; a name takes its passwd group.
    if !can_sandbox("run_resolves_user_as_the_runtime_does") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\n\
         USER 1234\nRUN echo \"$(id -u) $(id -g)\" > /tmp/bare\n\
         USER builder\nRUN echo \"$(id -u) $(id -g)\" > /tmp/named\n",
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["build", "-q", "-t", "u", c.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let files: Vec<(String, Option<String>)> = added_layers(r, &manifest_of(r, "u"))
        .into_iter()
        .flatten()
        .filter(|e| e.4.is_some())
        .map(|e| (e.0, e.4))
        .collect();
    assert_eq!(
        files,
        vec![
            ("tmp/bare".to_string(), Some("1234 0\n".to_string())),
            ("tmp/named".to_string(), Some("1000 1000\n".to_string())),
        ]
    );
}

#[test]
fn build_limits_apply_to_run_steps() {
    if !can_sandbox("build_limits_apply_to_run_steps") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\nRUN dd if=/dev/zero of=/dev/null bs=64M count=1\n",
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["build", "-m", "16m", c.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("Dockerfile:2:1"), "{err}");
    assert!(err.contains("exit status 137"), "{err}");
    let (code, _, err) = kiln(r, &["build", c.to_str().unwrap()]);
    assert_eq!(code, 0, "without the limit: {err}");
}

#[test]
fn the_copy_fallback_gives_the_same_image_as_overlayfs() {
    if !can_sandbox("the_copy_fallback_gives_the_same_image_as_overlayfs") {
        return;
    }
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    // Every kind of change, over two steps (the second sees the first's whiteouts and opaque
    // directory through the layers), including a rewrite that keeps size and mtime.
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\n\
         RUN mkdir -p /d/sub /keep && echo a > /d/sub/f && echo b > /d/g && echo k > /keep/k && \
             echo x >> /etc/passwd && rm /bin/ls && ln -s /d/g /link && mkfifo /fifo && \
             ln /d/g /hard && chmod 700 /keep\n\
         RUN rm -rf /d && mkdir /d && echo new > /d/only && rm /keep/k && \
             touch -r /hard /tmp/ref && echo B > /hard && touch -r /tmp/ref /hard && rm /tmp/ref\n\
         RUN test ! -e /d/g && test \"$(cat /link 2>&1)\" != b && cat /hard > /seen\n",
    )
    .unwrap();
    let digest = |copy: bool| {
        let root = store_with_base();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
        if copy {
            cmd.env("KILN_ROOTFS", "copy");
        }
        let out = cmd
            .env("SOURCE_DATE_EPOCH", "1")
            .arg("--root")
            .arg(root.path())
            .args(["build", "-q", "-t", "f"])
            .arg(c)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let layers = added_layers(root.path(), &manifest_of(root.path(), "f"));
        (manifest_of(root.path(), "f"), layers)
    };
    let (overlay, overlay_layers) = digest(false);
    let (copy, copy_layers) = digest(true);
    assert_eq!(copy_layers, overlay_layers, "same layer entries");
    assert_eq!(copy, overlay, "same image digest");
    let seen = overlay_layers[2].iter().find(|e| e.0 == "seen").unwrap();
    assert_eq!(seen.4.as_deref(), Some("B\n"));
}

#[test]
fn run_binds_etc_files_read_only_and_terminals_to_group_tty() {
    if !can_sandbox("run_binds_etc_files_read_only_and_terminals_to_group_tty") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    // As BuildKit: /etc/hosts and /etc/resolv.conf are read-only in a RUN step, devpts gives
    // new terminals to group tty (5).
    let ctx = common::context(
        "FROM kiln.local/busybox\n\
         RUN mount | grep ' /dev/pts ' > /devpts\n\
         RUN echo '1.2.3.4 x' >> /etc/hosts\n",
    );
    let (code, out, err) = kiln(
        r,
        &["build", "--progress", "plain", ctx.path().to_str().unwrap()],
    );
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(err.contains("Dockerfile:3:1"), "{err}");
    let ctx = common::context("FROM kiln.local/busybox\nRUN mount | grep ' /dev/pts ' > /devpts\n");
    let (code, _, err) = kiln(r, &["build", "-t", "pts", ctx.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = kiln(r, &["run", "--rm", "pts", "cat", "/devpts"]);
    assert!(out.contains("gid=5,mode=620,ptmxmode=666"), "{out}");
    // A container's own /etc/hosts stays writable, as docker's.
    let (code, out, _) = kiln(
        r,
        &[
            "run",
            "--rm",
            "pts",
            "sh",
            "-c",
            "echo '1.2.3.4 x' >> /etc/hosts && mount | grep ' /dev/pts '",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.contains("gid=5"), "{out}");
}

#[test]
fn supplementary_groups_follow_runc_and_docker() {
    if !can_sandbox("supplementary_groups_follow_runc_and_docker") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = common::context(
        "FROM kiln.local/busybox\n\
         RUN echo 'builder:x:1000:1000:b:/home/b:/bin/sh' >> /etc/passwd \
             && echo 'builder:x:1000:' >> /etc/group && echo 'staff:x:50:builder' >> /etc/group \
             && echo 'other:x:60:' >> /etc/group && touch /tmp/ids && chmod 666 /tmp/ids\n\
         USER builder\nRUN id >> /tmp/ids\n\
         USER 1000\nRUN id >> /tmp/ids\n\
         USER builder:other\nRUN id >> /tmp/ids\n\
         USER 1000:60\nRUN id >> /tmp/ids\n\
         USER 2000\nRUN id >> /tmp/ids\n\
         USER builder\n",
    );
    let (code, _, err) = kiln(r, &["build", "-t", "grp", ctx.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // What BuildKit (dockerd 20.10) printed for the same steps: groups only in the implicit
    // form, and never the primary group.
    let (_, out, _) = kiln(r, &["run", "--rm", "grp", "cat", "/tmp/ids"]);
    assert_eq!(
        out,
        "uid=1000(builder) gid=1000(builder) groups=50(staff)\n\
         uid=1000(builder) gid=1000(builder) groups=50(staff)\n\
         uid=1000(builder) gid=60(other)\n\
         uid=1000(builder) gid=60(other)\n\
         uid=2000 gid=0(root)\n"
    );
    // What `docker run -u` printed: the primary group is always among the groups.
    for (user, want) in [
        (
            "builder",
            "uid=1000(builder) gid=1000(builder) groups=50(staff),1000(builder)\n",
        ),
        (
            "1000",
            "uid=1000(builder) gid=1000(builder) groups=50(staff),1000(builder)\n",
        ),
        (
            "builder:other",
            "uid=1000(builder) gid=60(other) groups=60(other)\n",
        ),
        (
            "1000:60",
            "uid=1000(builder) gid=60(other) groups=60(other)\n",
        ),
        ("2000", "uid=2000 gid=0(root) groups=0(root)\n"),
    ] {
        let (code, out, err) = kiln(r, &["run", "--rm", "-u", user, "grp", "id"]);
        assert_eq!((code, out.as_str()), (0, want), "-u {user}: {err}");
    }
    let (_, out, _) = kiln(r, &["run", "--rm", "grp", "id"]);
    assert_eq!(
        out,
        "uid=1000(builder) gid=1000(builder) groups=50(staff),1000(builder)\n"
    );
}

#[test]
fn plain_progress_names_steps_as_buildkit_and_marks_the_failure() {
    if !can_sandbox("plain_progress_names_steps_as_buildkit_and_marks_the_failure") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = common::context(
        "FROM kiln.local/busybox\nARG V=1\n\
         RUN echo \"$HOME\" $UNSET ${X:-def} \\$V a\\\\b '$V' $V and a line that goes on past eighty characters\n\
         COPY --chown=1:1 Dockerfile /x-$V\n\
         RUN echo fail && exit 3\n",
    );
    let (code, _, err) = kiln(
        r,
        &["build", "--progress", "plain", ctx.path().to_str().unwrap()],
    );
    assert_eq!(code, 1);
    // The names dockerd 20.10's BuildKit gave these steps: whole, variables expanded, quotes
    // and unset variables as written.
    assert!(
        err.contains(
            "] RUN echo \"$HOME\" $UNSET ${X:-def} $V a\\b '$V' 1 and a line that goes on past \
             eighty characters\n"
        ),
        "{err}"
    );
    assert!(
        err.contains("] COPY --chown=1:1 Dockerfile /x-1\n"),
        "{err}"
    );
    // BuildKit's line for the failed step.
    assert!(
        err.contains("#5 ERROR: RUN echo fail && exit 3: exit status 3\n"),
        "{err}"
    );
}

/// `kiln build --network` is the network of RUN steps that name none (and of
/// `RUN --network=default`), as BuildKit's; `--add-host` adds /etc/hosts lines to every RUN
/// step. Both are in the steps' keys: a build without them runs the steps again.
#[test]
fn the_builds_network_and_extra_hosts_reach_its_run_steps() {
    if !can_sandbox("the_builds_network_and_extra_hosts_reach_its_run_steps") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\n\
         RUN ls /sys/class/net | tr '\\n' ' ' > /unnamed\n\
         RUN --network=default ls /sys/class/net | tr '\\n' ' ' > /default\n\
         RUN --network=host ls /sys/class/net | tr '\\n' ' ' > /host\n\
         RUN grep -v -e localhost -e 127.0.1.1 /etc/hosts > /hosts; true\n",
    )
    .unwrap();
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "--progress", "plain", "-t", "n"];
        args.extend_from_slice(extra);
        args.push(c.to_str().unwrap());
        let (code, _, err) = kiln(r, &args);
        assert_eq!(code, 0, "{err}");
        err
    };
    let file = |p: &str| {
        let (code, out, err) = kiln(r, &["run", "--rm", "n", "cat", p]);
        assert_eq!(code, 0, "{err}");
        out
    };
    // On the host's network: the host's interfaces, more than loopback. (Not compared one by
    // one: tests running beside this one add and remove bridges.)
    let on_host = |listed: &str| {
        let names: Vec<&str> = listed.split_whitespace().collect();
        names.contains(&"lo") && names.len() > 1
    };
    build(&[
        "--network",
        "none",
        "--add-host",
        "db:10.1.2.3",
        "--add-host",
        "thehost:host-gateway",
    ]);
    assert_eq!(file("/unnamed"), "lo ");
    assert_eq!(file("/default"), "lo ");
    let host = file("/host");
    assert!(on_host(&host), "RUN --network=host wins: {host}");
    assert_eq!(file("/hosts"), "10.1.2.3\tdb\n127.0.0.1\tthehost\n");
    // Without them: the host's network (kiln's default), no extra line, and nothing from the
    // cache of the build before.
    let log = build(&[]);
    assert!(!log.contains("CACHED"), "{log}");
    for p in ["/unnamed", "/default"] {
        let seen = file(p);
        assert!(on_host(&seen), "{p}: {seen}");
    }
    assert_eq!(file("/hosts"), "");
    // BuildKit's modes only.
    let (code, _, err) = kiln(r, &["build", "--network", "bridge", c.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("bridge"), "{err}");
}
