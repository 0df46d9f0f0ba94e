//! Volumes as docker has them: named volumes outlive containers and are seeded once with the
//! image's content (owner and mode too), an image's VOLUME gets an anonymous volume that `rm
//! -v` and `--rm` remove, `--volumes-from` and `--mount` mount them, a volume in use cannot be
//! removed, and `volume prune` removes only what no container uses.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::{context, kiln, store_with_base};

use std::path::Path;

fn ok(root: &Path, args: &[&str]) -> String {
    let (code, out, err) = kiln(root, args);
    assert_eq!(code, 0, "kiln {args:?}: {err}");
    out
}

fn volumes(root: &Path) -> Vec<String> {
    ok(root, &["volume", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn volumes_keep_data_seed_from_the_image_and_go_when_asked() {
    if !common::can_sandbox("volumes_keep_data_seed_from_the_image_and_go_when_asked") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let ctx = context(
        "FROM kiln.local/busybox\n\
         RUN mkdir -p /srv/db && echo seed > /srv/db/x && chown -R 1000:1000 /srv/db \
         && chmod 0750 /srv/db\n\
         VOLUME /srv/db\n",
    );
    ok(
        r,
        &["build", "-q", "-t", "db", ctx.path().to_str().unwrap()],
    );

    // The image's VOLUME: an anonymous volume, seeded with owner, mode and content.
    let out = ok(
        r,
        &[
            "run",
            "--name",
            "app",
            "db",
            "sh",
            "-c",
            "stat -c '%u %a' /srv/db; cat /srv/db/x; echo more >> /srv/db/x",
        ],
    );
    assert_eq!(out, "1000 750\nseed\n");
    let anon = volumes(r);
    assert_eq!(anon.len(), 1, "{anon:?}");
    assert_eq!(anon[0].len(), 64);
    let mounts = ok(r, &["inspect", "-f", "{{json .Mounts}}", "app"]);
    assert!(
        mounts.contains("\"Type\":\"volume\"") && mounts.contains("/srv/db"),
        "{mounts}"
    );
    // Started again: the same volume, what it wrote still there.
    ok(r, &["start", "-a", "app"]);
    assert_eq!(volumes(r), anon);
    // Another container with its volumes: `--volumes-from`, read-only.
    let out = ok(
        r,
        &[
            "run",
            "--rm",
            "--volumes-from",
            "app:ro",
            "kiln.local/busybox",
            "sh",
            "-c",
            "cat /srv/db/x; touch /srv/db/y 2>/dev/null || echo read-only",
        ],
    );
    assert_eq!(out, "seed\nmore\nmore\nread-only\n");
    // In use: refused; `rm -v` takes the anonymous volume along.
    let (code, _, err) = kiln(r, &["volume", "rm", &anon[0]]);
    assert_eq!(code, 1);
    assert!(err.contains("volume is in use"), "{err}");
    ok(r, &["rm", "-v", "app"]);
    assert!(volumes(r).is_empty());

    // A named volume outlives its containers; made on first use, seeded once.
    ok(
        r,
        &[
            "run",
            "--rm",
            "-v",
            "dbdata:/srv/db",
            "db",
            "sh",
            "-c",
            "echo kept > /srv/db/x",
        ],
    );
    assert_eq!(volumes(r), ["dbdata"]);
    let out = ok(
        r,
        &[
            "run",
            "--rm",
            "-v",
            "dbdata:/srv/db",
            "db",
            "cat",
            "/srv/db/x",
        ],
    );
    assert_eq!(out, "kept\n", "not seeded again over its data");
    // `--mount type=volume` and a read-only bind through `--mount`.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "from-host").unwrap();
    let out = ok(
        r,
        &[
            "run",
            "--rm",
            "--mount",
            "type=volume,source=dbdata,target=/data",
            "--mount",
            &format!("type=bind,src={},dst=/h,readonly", host.path().display()),
            "--mount",
            "type=tmpfs,target=/scratch,tmpfs-size=1m",
            "kiln.local/busybox",
            "sh",
            "-c",
            "cat /data/x /h/f; echo; touch /h/g 2>/dev/null || echo ro; df /scratch | tail -1",
        ],
    );
    assert!(out.starts_with("kept\nfrom-host\nro\n"), "{out}");
    assert!(
        out.contains(" 1024 ") && out.ends_with("/scratch\n"),
        "a 1 MiB tmpfs: {out}"
    );
    // `--rm` removes the anonymous volume of the image's VOLUME, not the named one.
    ok(r, &["run", "--rm", "db", "true"]);
    assert_eq!(volumes(r), ["dbdata"]);

    // Inspect, and prune: anonymous ones only unless -a; never one a container uses.
    let info = ok(r, &["volume", "inspect", "dbdata"]);
    assert!(
        info.contains("\"Mountpoint\"") && info.contains("\"Driver\": \"local\""),
        "{info}"
    );
    ok(
        r,
        &[
            "run",
            "--name",
            "keeps",
            "-v",
            "dbdata:/d",
            "-v",
            "/anon2",
            "kiln.local/busybox",
            "true",
        ],
    );
    ok(
        r,
        &[
            "run",
            "--name",
            "gone",
            "-v",
            "/anon3",
            "kiln.local/busybox",
            "true",
        ],
    );
    ok(r, &["rm", "gone"]);
    assert_eq!(volumes(r).len(), 3);
    let pruned = ok(r, &["volume", "prune", "-f"]);
    assert!(pruned.starts_with("Deleted Volumes:"), "{pruned}");
    assert_eq!(volumes(r).len(), 2, "the unused anonymous one went");
    ok(r, &["volume", "prune", "-f", "-a"]);
    assert_eq!(volumes(r).len(), 2, "both in use by `keeps`");
    ok(r, &["rm", "keeps"]);
    ok(r, &["volume", "prune", "-af"]);
    assert!(volumes(r).is_empty());
    // Bad names never leave the volumes directory.
    let (code, _, err) = kiln(r, &["volume", "create", "../x"]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid characters"), "{err}");
    let (code, _, _) = kiln(
        r,
        &["run", "--rm", "-v", "a/b:/x", "kiln.local/busybox", "true"],
    );
    assert_eq!(code, 125);
}

/// Whether anything is mounted below `dir` (the store's volume directory of one volume).
fn mounted_below(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| {
            l.split(' ')
                .nth(4)
                .unwrap()
                .starts_with(dir.to_str().unwrap())
        })
}

#[test]
fn volumes_with_driver_options_mount_a_tmpfs_or_a_host_directory() {
    if !common::can_sandbox("volumes_with_driver_options_mount_a_tmpfs_or_a_host_directory") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let tv = r.join("volumes/scratch");
    // A tmpfs volume: its size limit holds, containers using it at once share it, and its
    // content goes with the last of them, as docker's.
    ok(
        r,
        &[
            "volume",
            "create",
            "-o",
            "type=tmpfs",
            "-o",
            "device=tmpfs",
            "-o",
            "o=size=1m,mode=0700",
            "scratch",
        ],
    );
    let opts = ok(
        r,
        &["volume", "inspect", "-f", "{{json .Options}}", "scratch"],
    );
    assert_eq!(
        opts.trim(),
        r#"{"device":"tmpfs","o":"size=1m,mode=0700","type":"tmpfs"}"#
    );
    ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "holder",
            "-v",
            "scratch:/s",
            "kiln.local/busybox",
            "sleep",
            "600",
        ],
    );
    assert!(mounted_below(&tv));
    let out = ok(
        r,
        &[
            "run",
            "--rm",
            "-v",
            "scratch:/s",
            "kiln.local/busybox",
            "sh",
            "-c",
            "stat -c %a /s; df -k /s | tail -n 1 | awk '{print $2}'; echo hi > /s/f; \
             dd if=/dev/zero of=/s/big bs=1k count=2048 2>/dev/null || echo full",
        ],
    );
    assert_eq!(out, "700\n1024\nfull\n");
    // Still mounted for the container that runs: it sees what the other wrote.
    assert_eq!(ok(r, &["exec", "holder", "cat", "/s/f"]), "hi\n");
    ok(r, &["rm", "-f", "holder"]);
    assert!(!mounted_below(&tv), "unmounted with its last container");
    let again = ok(
        r,
        &[
            "run",
            "--rm",
            "-v",
            "scratch:/s",
            "kiln.local/busybox",
            "ls",
            "/s",
        ],
    );
    assert_eq!(again, "", "a new tmpfs each time it is first used");
    ok(r, &["volume", "rm", "scratch"]);

    // A volume bound to a host directory: the container reads and writes the directory, and
    // removing the volume leaves the directory and its files alone.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("h"), "from-host\n").unwrap();
    let device = format!("device={}", host.path().display());
    ok(
        r,
        &[
            "volume",
            "create",
            "-o",
            "type=none",
            "-o",
            "o=bind",
            "-o",
            &device,
            "hostdir",
        ],
    );
    let out = ok(
        r,
        &[
            "run",
            "--rm",
            "-v",
            "hostdir:/d",
            "kiln.local/busybox",
            "sh",
            "-c",
            "cat /d/h; echo c > /d/c",
        ],
    );
    assert_eq!(out, "from-host\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("c")).unwrap(),
        "c\n"
    );
    ok(r, &["volume", "rm", "hostdir"]);
    assert_eq!(
        std::fs::read_to_string(host.path().join("h")).unwrap(),
        "from-host\n"
    );
    assert!(host.path().join("c").exists());

    // docker's refusals.
    let (code, _, err) = kiln(r, &["volume", "create", "-o", "size=1m", "bad"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid option key: \"size\""), "{err}");
    let (code, _, err) = kiln(r, &["volume", "create", "-o", "type=tmpfs", "bad"]);
    assert_eq!(code, 1);
    assert!(err.contains("\"device\""), "{err}");
    assert!(!volumes(r).contains(&"bad".to_string()));
}
