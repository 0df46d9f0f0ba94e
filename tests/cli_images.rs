//! `kiln load`, `images`, `tag`, `rmi` end to end, each test with its own store.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::{BASE, kiln};

#[test]
fn load_list_tag_and_remove() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (code, out, _) = kiln(r, &["load", "-i", BASE]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "Loaded image: kiln.local/busybox:latest (sha256:88ca2ffc7f1b09e60e0b57e78745fb6dc78ffcd2846ef03fbc185373748138e0)\n"
    );
    assert_eq!(kiln(r, &["tag", "kiln.local/busybox", "base:1"]).0, 0);
    let (_, out, _) = kiln(r, &["images"]);
    // CREATED as docker prints it: the base was made 2023-11-14T22:13:20Z (over two years ago).
    // SIZE as docker's: what the layer holds unpacked (busybox 1,982,256 bytes and the targets
    // of its links: dockerd shows 1.99MB for this image), 3 significant digits.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ago = format!("{} years ago", (now - 1_700_000_000) / 3600 / 24 / 365);
    assert_eq!(
        out,
        format!(
            "REPOSITORY           TAG      IMAGE ID       CREATED       SIZE\n\
             base                 1        1696572d56f9   {ago}   1.99MB\n\
             kiln.local/busybox   latest   1696572d56f9   {ago}   1.99MB\n"
        )
    );
    // Tagging by manifest digest works too.
    let digest = "sha256:88ca2ffc7f1b09e60e0b57e78745fb6dc78ffcd2846ef03fbc185373748138e0";
    assert_eq!(kiln(r, &["tag", digest, "by-digest"]).0, 0);
    let (code, out, err) = kiln(r, &["rmi", "base:1", "by-digest", "nope"]);
    assert_eq!(code, 1);
    // As docker prints it: the tag in full.
    assert_eq!(out, "Untagged: base:1\nUntagged: by-digest:latest\n");
    assert_eq!(err, "kiln: error: no such image: nope\n");
    assert_eq!(kiln(r, &["images", "-q"]).1, "1696572d56f9\n");
}

#[test]
fn load_and_tag_errors_name_their_input() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (code, _, err) = kiln(r, &["load", "-i", "/nonexistent/image.tar"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(
            "kiln: error: cannot load /nonexistent/image.tar: /nonexistent/image.tar: No such file"
        ),
        "{err}"
    );
    let junk = r.join("junk.tar");
    std::fs::write(
        &junk,
        b"this is not a tar archive at all, not even close......",
    )
    .unwrap();
    let (code, _, err) = kiln(r, &["load", "-i", junk.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("junk.tar") && err.contains("not a usable OCI image layout"),
        "{err}"
    );
    let (code, _, err) = kiln(r, &["tag", "missing", "x"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "kiln: error: no such image: missing\n")
    );
    let (code, _, err) = kiln(r, &["load", "-i", BASE]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kiln(r, &["tag", "kiln.local/busybox", "Bad Name"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid reference \"Bad Name\""), "{err}");
}

#[test]
fn inspect_shows_docker_like_json() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    assert_eq!(kiln(r, &["load", "-i", BASE]).0, 0);
    let (code, out, _) = kiln(r, &["inspect", "kiln.local/busybox"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v[0]["Id"]
            .as_str()
            .unwrap()
            .starts_with("sha256:1696572d56f9")
    );
    assert_eq!(
        v[0]["RepoTags"],
        serde_json::json!(["kiln.local/busybox:latest"])
    );
    assert_eq!(v[0]["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(v[0]["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    let (code, _, err) = kiln(r, &["inspect", "missing"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "kiln: error: no such object: missing\n")
    );
}

#[test]
fn inspect_has_dockers_config_fields_and_survives_a_closed_pipe() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    assert_eq!(kiln(r, &["load", "-i", BASE]).0, 0);
    let (code, out, err) = kiln(r, &["inspect", "kiln.local/busybox"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c = &v[0]["Config"];
    // Zero values where the image sets nothing, as `docker inspect` shows them.
    assert_eq!(c["Tty"], false);
    assert_eq!(c["OpenStdin"], false);
    assert_eq!(c["Hostname"], "");
    assert_eq!(c["Entrypoint"], serde_json::Value::Null);
    assert_eq!(c["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(v[0]["VirtualSize"], v[0]["Size"]);
    // A reader that goes away ends kiln quietly (SIGPIPE), not with a panic.
    // The pipe's read end is closed before kiln writes a byte.
    let (read_end, write_end) = rustix::pipe::pipe().unwrap();
    drop(read_end);
    let out = common::kiln_cmd(r, &["inspect", "kiln.local/busybox"])
        .stdout(std::process::Stdio::from(write_end))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn save_and_load_stream_as_docker_does() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    assert_eq!(kiln(r, &["load", "-i", BASE]).0, 0);
    // `kiln save IMAGE > x.tar`: the same bytes as `-o x.tar`.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.tar");
    let (code, _, err) = kiln(
        r,
        &["save", "-o", file.to_str().unwrap(), "kiln.local/busybox"],
    );
    assert_eq!(code, 0, "{err}");
    let out = common::kiln_cmd(r, &["save", "kiln.local/busybox"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout,
        std::fs::read(&file).unwrap(),
        "stdout and -o agree"
    );
    // `kiln load < x.tar` and `-i -` into fresh stores, nothing left in tmp/.
    for args in [vec!["load"], vec!["load", "-i", "-"]] {
        let other = tempfile::tempdir().unwrap();
        let o = common::kiln_cmd(other.path(), &args)
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            text.starts_with("Loaded image: kiln.local/busybox:latest (sha256:88ca2ffc"),
            "{text}"
        );
        assert_eq!(
            std::fs::read_dir(other.path().join("tmp")).unwrap().count(),
            0
        );
    }
}

#[test]
fn build_reads_a_dockerfile_from_stdin_without_context() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let run = |args: &[&str], input: &str| {
        let mut child = common::kiln_cmd(r, args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A build refused before it reads stdin closes the pipe: the write may then
        // fail with EPIPE, which the exit status checked below already covers.
        let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes());
        child.wait_with_output().unwrap()
    };
    // `kiln build - < Dockerfile`: no context.
    let out = run(
        &["build", "-q", "-t", "s", "-"],
        "FROM scratch\nLABEL from=stdin\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, inspect, _) = kiln(r, &["inspect", "s"]);
    assert!(inspect.contains("\"from\": \"stdin\""), "{inspect}");
    // `-f -` with a context directory.
    let ctx = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "build",
            "-q",
            "-t",
            "f",
            "-f",
            "-",
            ctx.path().to_str().unwrap(),
        ],
        "FROM scratch\nLABEL from=dash-f\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["build", "-f", "x", "-"], "FROM scratch\n");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn image_ids_name_images_everywhere() {
    if !common::can_sandbox("image_ids_name_images_everywhere") {
        return;
    }
    let root = common::store_with_base();
    let r = root.path();
    let ctx = common::context("FROM kiln.local/busybox\nRUN echo built > /x\n");
    let iid = r.join("iid");
    let (code, id, err) = kiln(
        r,
        &[
            "build",
            "-q",
            "--iidfile",
            iid.to_str().unwrap(),
            ctx.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    assert_eq!(std::fs::read_to_string(&iid).unwrap().trim(), id);
    let short = &id[7..19];
    // Untagged, and named by its full or short ID: run, inspect, history, tag, save.
    for name in [id.as_str(), short, &id[..15]] {
        let (code, out, err) = kiln(r, &["run", "--rm", name, "cat", "/x"]);
        assert_eq!((code, out.as_str()), (0, "built\n"), "{name}: {err}");
    }
    let (_, out, _) = kiln(r, &["inspect", short]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["Id"], id.as_str());
    assert_eq!(kiln(r, &["history", short]).0, 0);
    let archive = r.join("by-id.tar");
    assert_eq!(
        kiln(r, &["save", "-o", archive.to_str().unwrap(), short]).0,
        0
    );
    assert_eq!(kiln(r, &["tag", short, "app:1"]).0, 0);
    assert_eq!(kiln(r, &["tag", "app:1", "other:2"]).0, 0);
    // `images` shows the ID `inspect` gives.
    let (_, out, _) = kiln(r, &["images", "app"]);
    assert!(out.contains(short), "{out}");
    // A name wins over an ID prefix, as in docker: a repository named like the prefix.
    assert_eq!(kiln(r, &["tag", "kiln.local/busybox", short]).0, 0);
    let (_, out, _) = kiln(r, &["inspect", short]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_ne!(
        v[0]["Id"],
        id.as_str(),
        "the tag {short}:latest, not the ID"
    );
    assert_eq!(kiln(r, &["rmi", short]).0, 0);
    // rmi by ID: refused while two repositories name it, unless forced; then the ID is gone.
    let (code, _, err) = kiln(r, &["rmi", &id[..15]]);
    assert_eq!(code, 1);
    assert!(
        err.contains("must be forced") && err.contains("app, other"),
        "{err}"
    );
    let (code, out, err) = kiln(r, &["rmi", "-f", &id[..15]]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("Untagged: app:1\nUntagged: other:2\nDeleted: {id}\n")
    );
    let (code, _, err) = kiln(r, &["inspect", short]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn format_templates_print_what_docker_prints() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    assert_eq!(kiln(r, &["load", "-i", BASE]).0, 0);
    let ok = |args: &[&str]| {
        let (code, out, err) = kiln(r, args);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    };
    // What dockerd 20.10 printed for the same image (the base loaded into it); CreatedSince
    // as it is today.
    let since = ok(&["images", "--format", "{{.CreatedSince}}"]);
    assert_eq!(
        ok(&["images", "--format", "{{json .}}"]),
        "{\"Containers\":\"N/A\",\"CreatedAt\":\"2023-11-14 22:13:20 +0000 UTC\",\
         \"CreatedSince\":\"3 years ago\",\"Digest\":\"\\u003cnone\\u003e\",\"ID\":\"1696572d56f9\",\
         \"Repository\":\"kiln.local/busybox\",\"SharedSize\":\"N/A\",\"Size\":\"1.99MB\",\
         \"Tag\":\"latest\",\"UniqueSize\":\"N/A\",\"VirtualSize\":\"1.986MB\"}\n"
            .replace("3 years ago", since.trim())
    );
    // `\t` as a shell passes it through quotes, and `table` with docker's headers.
    assert_eq!(
        ok(&[
            "images",
            "--format",
            r"table {{.ID}}\t{{.Repository}}\t{{.Size}}"
        ]),
        "IMAGE ID       REPOSITORY           SIZE\n1696572d56f9   kiln.local/busybox   1.99MB\n"
    );
    assert_eq!(
        ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]),
        "kiln.local/busybox:latest\n"
    );
    assert_eq!(
        ok(&[
            "history",
            "--format",
            "{{.ID}}|{{.Size}}|{{.CreatedBy}}",
            "kiln.local/busybox"
        ]),
        "1696572d56f9|1.99MB|testdata/base/build-busybox.py (Debian busyb…\n"
    );
    assert_eq!(
        ok(&[
            "inspect",
            "--format",
            "{{.Id}} {{json .Config.Cmd}}",
            "kiln.local/busybox"
        ]),
        "sha256:1696572d56f990c613ff58e176f0e3ef86968dd7bed42300729e7b468d62d311 [\"sh\"]\n"
    );
    assert_eq!(
        ok(&[
            "inspect",
            "-f",
            "{{index .RepoTags 0}} {{len .RootFS.Layers}}",
            "kiln.local/busybox"
        ]),
        "kiln.local/busybox:latest 1\n"
    );
    // A template that does not parse, or names no function docker's has: an error.
    for bad in ["{{.Id", "{{nosuch .Id}}"] {
        let (code, out, err) = kiln(r, &["inspect", "-f", bad, "kiln.local/busybox"]);
        assert_eq!((code, out.as_str()), (1, ""), "{bad}");
        assert!(err.contains("invalid --format template"), "{bad}: {err}");
    }
}

#[test]
fn version_and_info_for_bug_reports() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (code, out, _) = kiln(r, &["version", "--format", "{{.Client.Version}}"]);
    assert_eq!(
        (code, out.as_str()),
        (0, format!("{}\n", env!("CARGO_PKG_VERSION")).as_str())
    );
    let (_, out, _) = kiln(r, &["version"]);
    assert!(
        out.contains(" Git commit:") && out.contains(" OS/Arch:     linux/"),
        "{out}"
    );
    assert_eq!(kiln(r, &["load", "-i", BASE]).0, 0);
    let (code, out, err) = kiln(r, &["info", "--format", "{{json .}}"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Images"], 1);
    assert_eq!(v["Containers"], 0);
    assert_eq!(v["KilnRootDir"], r.to_str().unwrap());
    assert_eq!(v["OSType"], "linux");
    assert!(v["NCPU"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        ["1", "2", "hybrid"].contains(&v["CgroupVersion"].as_str().unwrap()),
        "{v}"
    );
    let (_, out, _) = kiln(r, &["info"]);
    assert!(
        out.contains(" Images: 1\n") && out.contains(" Kernel Version: "),
        "{out}"
    );
}

#[test]
fn management_forms_and_prunes() {
    if !common::can_sandbox("management_forms_and_prunes") {
        return;
    }
    let root = common::store_with_base();
    let r = root.path();
    let ok = |args: &[&str]| {
        let (code, out, err) = kiln(r, args);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    };
    // docker's management forms name the same commands, flags and output.
    assert_eq!(ok(&["image", "ls", "-q"]), ok(&["images", "-q"]));
    assert_eq!(
        ok(&["image", "inspect", "-f", "{{.Id}}", "kiln.local/busybox"]),
        ok(&["inspect", "-f", "{{.Id}}", "kiln.local/busybox"])
    );
    ok(&[
        "container",
        "run",
        "--name",
        "c1",
        "kiln.local/busybox",
        "true",
    ]);
    assert!(ok(&["container", "ls", "-a", "--format", "{{.Names}}"]).contains("c1"));
    // -l: the latest container, whatever its state; --size as docker computes it (dockerd
    // printed `0B (virtual 1.99MB)` for a container of this image that wrote nothing).
    assert_eq!(
        ok(&["ps", "-l", "--size", "--format", "{{.Names}} {{.Size}}"]),
        "c1 0B (virtual 1.99MB)\n"
    );
    // image prune: an untagged build goes (its ID no longer names it), tagged images stay.
    let ctx = common::context("FROM kiln.local/busybox\nRUN echo x > /x\n");
    let id = ok(&["build", "-q", ctx.path().to_str().unwrap()]);
    let id = id.trim();
    assert_eq!(ok(&["run", "--rm", id, "cat", "/x"]), "x\n");
    let out = ok(&["image", "prune", "-f"]);
    assert!(out.contains(&format!("deleted: {id}")), "{out}");
    assert_eq!(kiln(r, &["inspect", id]).0, 1);
    assert!(ok(&["images"]).contains("kiln.local/busybox"));
    // Untagged images are listed as docker's `<none>` rows, newest first; filters as docker's.
    let ctx = common::context("FROM kiln.local/busybox\nLABEL tier=web\nRUN echo y > /y\n");
    ok(&["build", "-q", "-t", "web:1", ctx.path().to_str().unwrap()]);
    let ctx = common::context("FROM kiln.local/busybox\nRUN echo z > /z\n");
    let dangling = ok(&["build", "-q", ctx.path().to_str().unwrap()]);
    let short = &dangling.trim()[7..19];
    let rows = ok(&["images", "--format", "{{.Repository}}:{{.Tag}}:{{.ID}}"]);
    assert!(rows.contains(&format!("<none>:<none>:{short}")), "{rows}");
    assert_eq!(
        ok(&["images", "-q", "--filter", "dangling=true"]),
        format!("{short}\n")
    );
    assert_eq!(
        ok(&[
            "images",
            "--format",
            "{{.Repository}}",
            "--filter",
            "label=tier=web"
        ]),
        "web\n"
    );
    assert!(
        !ok(&["images", "-q", "--filter", "since=web:1"]).contains(&ok(&["images", "-q", "web"]))
    );
    assert!(ok(&["images", "-q", "--no-trunc", "web"]).starts_with("sha256:"));
    assert_eq!(
        ok(&["system", "df", "--format", "{{.Type}}"]),
        "Images\nContainers\nLocal Volumes\nBuild Cache\n"
    );
    // system prune: ended containers and the build cache no image uses.
    let out = ok(&["system", "prune", "-f"]);
    assert!(out.contains("Deleted Containers:"), "{out}");
    assert_eq!(kiln(r, &["inspect", "--type", "container", "c1"]).0, 1);
    assert!(ok(&["store", "verify"]).contains(" 0 problems"));
}
