//! Behaviour that must match BuildKit's (checked against dockerd 20.10's BuildKit and its
//! `dockerfile2llb` source), where kiln differed silently:
//! - every stage's config has a PATH (the default one when its base gave none), and `FROM
//!   scratch` has the working directory `/`, as BuildKit's empty image;
//! - `--chown` naming a user the image lacks gives 0:0, a group it lacks keeps the user's gid
//!   (BuildKit's `readUser`), with a warning instead of a failed build;
//! - a COPY wildcard that matches nothing copies nothing and is no error (`AllowEmptyWildcard`);
//!   a plain source that is missing still is;
//! - `RUN --device` (Dockerfile 1.14) parses; a build refuses it at its line;
//! - `RUN --mount` without a target mounts at the working directory, a relative target below
//!   it (`convert_runmount.go`); one that resolves to `/` is refused;
//! - ARG and ENV apply in instruction order: `ARG V` after `ENV V=x` overrides it for RUN and
//!   expansion while the config keeps `V=x`; a stage built on another sees its ARGs;
//! - the automatic platform ARGs have their values globally and after `ARG NAME` in a stage
//!   (also after a global `ARG TARGETARCH` without a value, as current BuildKit's
//!   `buildMetaArgs`; dockerd 20.10's older BuildKit emptied it there); another platform than
//!   this machine's is refused, not ignored;
//! - COPY and WORKDIR onto a path that is (or goes through) a symlink write through it, inside
//!   the root (merged-/usr images: `COPY x /bin/` must not hide `/bin/sh`);
//! - `COPY --from` keeps each file's owner and mode unless `--chown` is given (only context
//!   files become 0:0);
//! - a source that is itself a symlink (named or matched by a wildcard, from the context or a
//!   stage) is followed; links inside a copied directory stay links;
//! - ADD of archives keeps hard links (one inode, also several archives into one destination:
//!   that failed with "expected 6 bytes, got 4"), fifos and device nodes; an archive whose
//!   entries go through a symlink it made itself is refused at ADD, with why;
//! - files hard-linked to each other inside a copied directory stay hard links (from the
//!   context and from a stage); separately named sources are copied separately;
//! - RUN history lines as BuildKit's `runCommandString` writes them (`|2 A=2 B= /bin/sh -c
//!   ...`, exec form as words), and `kiln history` with docker's columns;
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::{can_sandbox, context, kiln, store_with_base};

fn config(root: &std::path::Path, tag: &str) -> serde_json::Value {
    let (code, out, err) = kiln(root, &["inspect", tag]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let v = if v.is_array() { v[0].clone() } else { v };
    v["Config"].clone()
}

/// Builds `dir` with `--progress plain`, which must succeed; its progress output.
fn plain_build(root: &std::path::Path, dir: &std::path::Path) -> String {
    let (code, _, err) = kiln(
        root,
        &["build", "--progress", "plain", dir.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    err
}

/// The lines step `n` printed in `--progress plain` output (`#n text`), without its header
/// (`#n [stage 2/3] ...`) and its `DONE` line.
fn step_output(err: &str, n: usize) -> Vec<&str> {
    let prefix = format!("#{n} ");
    err.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter(|l| !l.starts_with('[') && !l.starts_with("DONE"))
        .collect()
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[test]
fn every_stage_has_a_path() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // FROM scratch: what `docker build` gives for the same Dockerfile.
    let ctx = context("FROM scratch\nLABEL a=b\n");
    let (code, _, err) = kiln(r, &["build", "-q", "-t", "s", ctx.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let c = config(r, "s");
    assert_eq!(c["Env"], serde_json::json!([DEFAULT_PATH]));
    assert_eq!(c["WorkingDir"], "/");
    assert_eq!(c["Labels"]["a"], "b");
    // A base image whose config has no Env at all.
    let layout = tempfile::tempdir().unwrap();
    let tag = common::hostile::write_layout(layout.path(), &common::hostile::Hostile::LayerBomb(1));
    let (code, _, err) = kiln(r, &["load", "-i", layout.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let ctx = context(&format!("FROM {tag}\nENV A=1\n"));
    let (code, _, err) = kiln(r, &["build", "-q", "-t", "p", ctx.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        config(r, "p")["Env"],
        serde_json::json!([DEFAULT_PATH, "A=1"])
    );
}

#[test]
fn chown_to_unknown_names_is_root_as_in_buildkit() {
    if !can_sandbox("chown_to_unknown_names_is_root_as_in_buildkit") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    // The same Dockerfile gave `/x 0:0`, `/y 1000:1000`, `/z 1000:1000` under dockerd 20.10.
    let ctx = context(
        "FROM kiln.local/busybox\n\
         COPY --chown=nobody-here a /x\n\
         COPY --chown=builder:nogroup-here a /y\n\
         COPY --chown=builder a /z\n",
    );
    std::fs::write(ctx.path().join("a"), "a\n").unwrap();
    let (code, _, err) = kiln(r, &["build", "-t", "c", ctx.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("user nobody-here is not in /etc/passwd: uid and gid 0"),
        "{err}"
    );
    assert!(
        err.contains("group nogroup-here is not in /etc/group: gid 1000"),
        "{err}"
    );
    let (code, out, err) = kiln(
        r,
        &[
            "run", "--rm", "c", "stat", "-c", "%n %u:%g", "/x", "/y", "/z",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "/x 0:0\n/y 1000:1000\n/z 1000:1000\n");
}

#[test]
fn an_empty_wildcard_copies_nothing() {
    if !can_sandbox("an_empty_wildcard_copies_nothing") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    // dockerd 20.10: the first build lists `a` in /d, the second has no /d, the third fails
    // with `"/missing" not found`.
    let ctx = context("FROM kiln.local/busybox\nCOPY a *.nomatch /d/\nCOPY *.none /e/\n");
    std::fs::write(ctx.path().join("a"), "a\n").unwrap();
    let c = ctx.path().to_str().unwrap();
    let (code, _, err) = kiln(r, &["build", "-t", "w", c]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "w",
            "sh",
            "-c",
            "ls /d; ls -d /e || echo no-e",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("a\n") && out.ends_with("no-e\n"), "{out}");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM kiln.local/busybox\nCOPY a missing /d/\n",
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["build", c]);
    assert_eq!(code, 1);
    assert!(
        err.contains("COPY a missing /d/: not found") || err.contains("missing: not found"),
        "{err}"
    );
}

#[test]
fn run_device_parses_and_is_refused_at_its_line() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let ctx = context("FROM scratch\nRUN --device=/dev/fuse,required echo hi\n");
    let df = ctx.path().join("Dockerfile");
    let (code, out, err) = kiln(
        r,
        &["parse", "-f", df.to_str().unwrap(), "--format", "tree"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("flag --device=/dev/fuse,required"), "{out}");
    let (code, _, err) = kiln(r, &["check", "-f", df.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kiln(r, &["build", ctx.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Dockerfile:2:1: error: RUN --device=/dev/fuse,required echo hi: RUN --device is not supported"),
        "{err}"
    );
}

#[test]
fn a_mount_without_target_is_at_the_working_directory() {
    if !can_sandbox("a_mount_without_target_is_at_the_working_directory") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    // dockerd 20.10 printed `from-stage` and `n` for this Dockerfile.
    let ctx = context(
        "FROM kiln.local/busybox AS s\nRUN mkdir /out && echo from-stage > /out/f\n\
         FROM kiln.local/busybox\nWORKDIR /w\nRUN --mount=from=s,source=/out cat /w/f\n\
         RUN --mount=type=cache,target=c echo x > c/n && ls /w/c\n",
    );
    let c = ctx.path().to_str().unwrap();
    let (code, _, err) = kiln(r, &["build", "--progress", "plain", c]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("from-stage"), "{err}");
    assert!(err.lines().any(|l| l.ends_with(" n")), "{err}");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM kiln.local/busybox\nRUN --mount=type=bind,source=. true\n",
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["build", c]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Dockerfile:2:1:") && err.contains("the target cannot be /"),
        "{err}"
    );
}

#[test]
fn arg_and_env_apply_in_order_and_stages_inherit_args() {
    if !can_sandbox("arg_and_env_apply_in_order_and_stages_inherit_args") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let run_lines = |err: &str| -> Vec<String> {
        err.lines()
            .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.to_string()))
            .filter(|l| l.starts_with("run") || l.starts_with("v"))
            .collect()
    };
    // dockerd 20.10: `run:arg`, `runw:wbuild`; Env V=env, W=w1; label l=arg.
    let ctx = context(
        "FROM kiln.local/busybox\nENV V=env\nARG V=arg\nRUN echo \"run:$V\"\nLABEL l=$V\n\
         ENV W=w1\nARG W\nRUN echo \"runw:$W\"\n",
    );
    let c = ctx.path().to_str().unwrap();
    let (code, _, err) = kiln(
        r,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "o",
            "--build-arg",
            "W=wbuild",
            c,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(run_lines(&err), ["run:arg", "runw:wbuild"], "{err}");
    let cfg = config(r, "o");
    let env: Vec<&str> = cfg["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"V=env") && env.contains(&"W=w1"), "{env:?}");
    assert_eq!(cfg["Labels"]["l"], "arg");
    // dockerd 20.10: `v:1`, `v2:1`, label l=1, no V in Env.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM kiln.local/busybox AS a\nARG V=1\nFROM a\nRUN echo \"v:$V\"\nLABEL l=$V\n\
         ARG V\nRUN echo \"v2:$V\"\n",
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["build", "--progress", "plain", "-t", "i", c]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(run_lines(&err), ["v:1", "v2:1"], "{err}");
    let cfg = config(r, "i");
    assert_eq!(cfg["Labels"]["l"], "1");
    assert!(!cfg["Env"].to_string().contains("V="), "{}", cfg["Env"]);
}

#[test]
fn platform_args_have_values_for_this_and_other_platforms() {
    if !can_sandbox("platform_args_have_values_for_this_and_other_platforms") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let host = kiln_runtime::oci::host_platform_string();
    let arch = kiln_runtime::oci::host_platform().architecture;
    let ctx = context(
        "ARG TARGETARCH\nFROM --platform=$BUILDPLATFORM kiln.local/busybox AS b\n\
         ARG TARGETARCH\nARG BUILDPLATFORM\n\
         RUN echo \"arch:$TARGETARCH plat:$BUILDPLATFORM os:$TARGETOS\"\n",
    );
    let c = ctx.path().to_str().unwrap();
    let (code, _, err) = kiln(r, &["build", "--progress", "plain", "--platform", &host, c]);
    assert_eq!(code, 0, "{err}");
    // TARGETOS was not declared in the stage: empty, as in BuildKit.
    assert!(
        err.contains(&format!("arch:{arch} plat:{host} os:\n")),
        "{err}"
    );
    let other = if arch == "arm64" {
        "linux/amd64"
    } else {
        "linux/arm64"
    };
    // Built for another platform, the stage on the build platform runs here, natively, and
    // sees the target's ARGs; its image is this machine's, which the build says aloud.
    let (code, _, err) = kiln(r, &["build", "--progress", "plain", "--platform", other, c]);
    assert_eq!(code, 0, "{err}");
    let other_arch = other.rsplit('/').next().unwrap();
    assert!(
        err.contains(&format!("arch:{other_arch} plat:{host} os:\n")),
        "{err}"
    );
    assert!(
        err.contains(&format!("the image built for {other} is a {host} image")),
        "{err}"
    );
    // A stage pinned to a platform the base image has no image for fails at its line.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM --platform={other} kiln.local/busybox\n"),
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["build", c]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Dockerfile:1:1: error: ")
            && err.contains(&format!(
                "no image for {other} under that name, only {host}"
            )),
        "{err}"
    );
}

#[test]
fn copy_and_workdir_write_through_symlinks() {
    if !can_sandbox("copy_and_workdir_write_through_symlinks") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    // dockerd 20.10 printed exactly `want` for this Dockerfile.
    let ctx = context(
        "FROM kiln.local/busybox\n\
         RUN mkdir -p /usr/sbin2 /real1 && ln -s usr/sbin2 /sbin2 && ln -s /real1 /l1 && \
             ln -s /real1 /l2 && echo old > /real1/file && ln -s /real1/file /lf\n\
         COPY f /sbin2/\nCOPY f /l1\nCOPY f /lf\nWORKDIR /l2/sub\n\
         RUN for p in /sbin2 /l1 /l2 /lf /real1/file; do \
             if [ -L $p ]; then echo \"$p link\"; else echo \"$p notlink\"; fi; done; \
             ls /usr/sbin2 /real1 /real1/sub; cat /real1/file /lf; pwd\n",
    );
    std::fs::write(ctx.path().join("f"), "f\n").unwrap();
    let err = plain_build(r, ctx.path());
    let got = step_output(&err, 7);
    let want = [
        "/sbin2 link",
        "/l1 link",
        "/l2 link",
        "/lf link",
        "/real1/file notlink",
        "/real1:",
        "f",
        "file",
        "sub",
        "",
        "/real1/sub:",
        "",
        "/usr/sbin2:",
        "f",
        "f",
        "f",
        "/real1/sub",
    ];
    assert_eq!(got, want, "{err}");
}

#[test]
fn copy_from_keeps_owners() {
    if !can_sandbox("copy_from_keeps_owners") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    // dockerd 20.10 printed exactly these lines for this Dockerfile.
    let ctx = context(
        "FROM kiln.local/busybox AS s\n\
         RUN touch /a && chown 1000:1000 /a && chmod 640 /a && mkdir -p /d/e && \
             chown 123:456 /d /d/e && touch /d/x && chown 7:8 /d/x\n\
         FROM kiln.local/busybox\nCOPY --from=s /a /a\nCOPY --from=s /d /d2\n\
         COPY --from=s --chown=5:6 /a /b\n\
         RUN stat -c \"%n %u:%g %a\" /a /d2 /d2/e /d2/x /b\n",
    );
    let err = plain_build(r, ctx.path());
    let got = step_output(&err, 7);
    assert_eq!(
        got,
        [
            "/a 1000:1000 640",
            "/d2 0:0 755",
            "/d2/e 123:456 755",
            "/d2/x 7:8 644",
            "/b 5:6 640"
        ],
        "{err}"
    );
}

#[test]
fn a_symlink_source_is_followed() {
    if !can_sandbox("a_symlink_source_is_followed") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    // dockerd 20.10 printed exactly these lines for this context and Dockerfile.
    let ctx = context(
        "FROM kiln.local/busybox AS s\nRUN echo S > /s && ln -s /s /slink\n\
         FROM kiln.local/busybox\nCOPY link /l\nCOPY dir /d\nCOPY l* /w/\n\
         COPY --from=s /slink /x\n\
         RUN for p in /l /d/inner /w/link /w/l2 /x; do \
             if [ -L $p ]; then echo \"$p link\"; else echo \"$p $(cat $p)\"; fi; done\n",
    );
    let c = ctx.path();
    std::fs::write(c.join("target.txt"), "T\n").unwrap();
    std::fs::create_dir(c.join("dir")).unwrap();
    std::os::unix::fs::symlink("target.txt", c.join("link")).unwrap();
    std::os::unix::fs::symlink("target.txt", c.join("l2")).unwrap();
    std::os::unix::fs::symlink("../target.txt", c.join("dir/inner")).unwrap();
    let err = plain_build(r, c);
    let got = step_output(&err, 8);
    assert_eq!(
        got,
        ["/l T", "/d/inner link", "/w/link T", "/w/l2 T", "/x S"],
        "{err}"
    );
}

/// A tar: (name, kind, content or link target) with kind 'f' file, 'h' hard link, 'p' fifo,
/// 'l' symlink.
fn tar_of(entries: &[(&str, char, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        match kind {
            'f' => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, data.as_bytes()).unwrap();
            }
            'p' => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_size(0);
                b.append_data(&mut h, name, std::io::empty()).unwrap();
            }
            k => {
                h.set_entry_type(if *k == 'h' {
                    tar::EntryType::Link
                } else {
                    tar::EntryType::Symlink
                });
                h.set_size(0);
                b.append_link(&mut h, name, data).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

#[test]
fn add_keeps_hard_links_and_special_files() {
    if !can_sandbox("add_keeps_hard_links_and_special_files") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = context(
        "FROM kiln.local/busybox\nADD a1.tar a2.tar a3.tar /y/\n\
         RUN stat -c \"%n %F %h\" /y/a /y/b /y/c /y/d /y/fifo /y/z /y/aa; \
             [ /y/a -ef /y/b ] && [ /y/c -ef /y/d ] && [ /y/z -ef /y/aa ] && echo same-inodes; \
             cat /y/b /y/d /y/aa\n",
    );
    let c = ctx.path();
    std::fs::write(
        c.join("a1.tar"),
        tar_of(&[("a", 'f', "hello\n"), ("b", 'h', "a")]),
    )
    .unwrap();
    std::fs::write(
        c.join("a2.tar"),
        tar_of(&[("c", 'f', "xyz\n"), ("d", 'h', "c")]),
    )
    .unwrap();
    std::fs::write(
        c.join("a3.tar"),
        tar_of(&[("z", 'f', "z\n"), ("aa", 'h', "z"), ("fifo", 'p', "")]),
    )
    .unwrap();
    let err = plain_build(r, c);
    let got = step_output(&err, 3);
    // As dockerd 20.10 unpacks the same archives.
    assert_eq!(
        got,
        [
            "/y/a regular file 2",
            "/y/b regular file 2",
            "/y/c regular file 2",
            "/y/d regular file 2",
            "/y/fifo fifo 1",
            "/y/z regular file 2",
            "/y/aa regular file 2",
            "same-inodes",
            "hello",
            "xyz",
            "z",
        ],
        "{err}"
    );
    // An entry below a symlink the archive made is refused where the ADD is written.
    std::fs::write(
        c.join("a4.tar"),
        tar_of(&[("link", 'l', "/x"), ("link/file", 'f', "evil\n")]),
    )
    .unwrap();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM kiln.local/busybox\nADD a4.tar /y/\n",
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["build", c.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Dockerfile:2:1: error: ADD:")
            && err.contains(
                "entry link/file goes through the symlink /y/link the archive itself made"
            ),
        "{err}"
    );
}

#[test]
fn hard_links_inside_a_copied_directory_stay() {
    if !can_sandbox("hard_links_inside_a_copied_directory_stay") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    // dockerd 20.10 printed exactly these lines (and no u-same) for this context and Dockerfile.
    let ctx = context(
        "FROM kiln.local/busybox AS s\nRUN mkdir /s && echo s > /s/x && ln /s/x /s/y\n\
         FROM kiln.local/busybox\nCOPY src /c/\nCOPY --from=s /s /t/\nCOPY src/a src/b /u/\n\
         RUN stat -c \"%n %h\" /c/a /c/b /c/k /t/x /t/y /u/a /u/b; \
             [ /c/a -ef /c/b ] && echo c-same; [ /t/x -ef /t/y ] && echo t-same; \
             [ /u/a -ef /u/b ] && echo u-same; true\n",
    );
    let c = ctx.path();
    std::fs::create_dir(c.join("src")).unwrap();
    std::fs::write(c.join("src/a"), "h\n").unwrap();
    std::fs::hard_link(c.join("src/a"), c.join("src/b")).unwrap();
    std::fs::write(c.join("src/k"), "k\n").unwrap();
    let err = plain_build(r, c);
    let got = step_output(&err, 7);
    assert_eq!(
        got,
        [
            "/c/a 2", "/c/b 2", "/c/k 1", "/t/x 2", "/t/y 2", "/u/a 1", "/u/b 1", "c-same",
            "t-same"
        ],
        "{err}"
    );
}

#[test]
fn run_history_carries_the_build_args_and_history_shows_it() {
    if !can_sandbox("run_history_carries_the_build_args_and_history_shows_it") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = context(
        "FROM kiln.local/busybox\nARG A=1\nARG B\nENV A=2\nRUN echo hi\nRUN [\"echo\",\"x\"]\n\
         ARG A=3\nRUN echo a\n",
    );
    let (code, _, err) = kiln(r, &["build", "-q", "-t", "h", ctx.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    // dockerd 20.10 wrote the first two the same; for the third it repeats A (`|3 A=3 B= A=3`),
    // which current BuildKit no longer does.
    let (code, out, err) = kiln(r, &["history", "--no-trunc", "--format", "json", "h"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by: Vec<&str> = rows
        .iter()
        .map(|v| v["CreatedBy"].as_str().unwrap())
        .collect();
    assert_eq!(
        &by[..6],
        [
            "RUN |2 A=3 B= /bin/sh -c echo a # buildkit",
            "ARG A=3",
            "RUN |2 A=2 B= echo x # buildkit",
            "RUN |2 A=2 B= /bin/sh -c echo hi # buildkit",
            "ENV A=2",
            "ARG B",
        ]
    );
    assert_ne!(rows[0]["ID"], "<missing>");
    assert_eq!(rows[1]["ID"], "<missing>");
    let (code, out, _) = kiln(r, &["history", "h"]);
    assert_eq!(code, 0);
    let header = out.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("IMAGE          CREATED ") && header.contains(" CREATED BY "),
        "{out}"
    );
    assert!(
        out.contains("RUN |2 A=3 B= /bin/sh -c echo a # buildkit "),
        "{out}"
    );
}

#[test]
fn metadata_steps_have_the_time_they_ran_and_rebuilds_keep_it() {
    let root = common::store_with_base();
    let r = root.path();
    let ctx = common::context("FROM kiln.local/busybox\nENV A=1\nLABEL l=1\n");
    let dir = ctx.path().to_str().unwrap();
    let (code, first, err) = kiln(r, &["build", "-q", "-t", "meta", dir]);
    assert_eq!(code, 0, "{err}");
    let history = |tag: &str| -> Vec<String> {
        let (_, out, _) = kiln(r, &["inspect", tag]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["History"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["created"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let times = history("meta");
    let (base, steps) = times.split_at(times.len() - 2);
    // Not the base image's time (years ago): the time of this build.
    let now = kiln_runtime::timefmt::rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            - 600,
    );
    for t in steps {
        assert!(
            t.as_str() > now.as_str(),
            "{t} is older than ten minutes: {times:?}"
        );
        assert!(base.iter().all(|b| b < t), "{times:?}");
    }
    // A rebuild repeats them, so the image is the same.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (_, again, _) = kiln(r, &["build", "-q", "-t", "meta", dir]);
    assert_eq!(first, again);
}
