//! Multi-platform images: a two-platform build whose RUN steps execute natively and under QEMU
//! (Debian's qemu-user-static through binfmt_misc), a cross-compiling stage on the build
//! platform, the index pushed to a real registry and read back by kiln, skopeo and podman,
//! `kiln manifest create` joining two single-platform pushes without their layers, and the
//! checks that keep a wrong-platform image from being made.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;

use std::{path::Path, process::Command};

use common::{podman::Podman, registry::Env, registry::Registry};

/// The arm64 busybox image made from Debian's arm64 package (`testdata/base`).
const BASE_ARM64: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/base/busybox-arm64-oci"
);

/// A cross stage on the build platform writes what it was built for; the target stage copies
/// it, and records the machine its own RUN ran on.
const DOCKERFILE: &str = "\
FROM --platform=$BUILDPLATFORM kiln.local/busybox:multi AS cross
ARG TARGETPLATFORM
ARG TARGETARCH
RUN echo \"built on $(uname -m) for $TARGETARCH ($TARGETPLATFORM)\" > /cross
FROM kiln.local/busybox:multi
ARG BUILDPLATFORM
COPY --from=cross /cross /cross
COPY hello.txt /hello.txt
RUN uname -m > /arch && echo \"$BUILDPLATFORM\" > /build
CMD [\"cat\", \"/arch\", \"/cross\", \"/build\", \"/hello.txt\"]
";

/// Whether arm64 programs can run here: an amd64 machine with QEMU's arm64 emulator
/// installed (kiln registers it). CI installs it; elsewhere the test skips, loudly.
fn can_emulate(test: &str) -> bool {
    if !common::can_sandbox(test) {
        return false;
    }
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("skipped: {test}: the expectations are an amd64 machine's");
        return false;
    }
    let installed = Path::new("/usr/lib/binfmt.d/qemu-aarch64.conf").exists();
    if !installed {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: qemu-user-static is not installed, and CI must run this test"
        );
        eprintln!("skipped: {test}: qemu-user-static is not installed");
    }
    installed
}

/// A store with the amd64 and arm64 busybox images joined as `kiln.local/busybox:multi`.
fn store_with_multi_base(env: &Env) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    env.ok(r, &["load", "-i", common::BASE]);
    env.ok(r, &["load", "-i", BASE_ARM64]);
    env.ok(
        r,
        &[
            "manifest",
            "create",
            "kiln.local/busybox:multi",
            "kiln.local/busybox:latest",
            "kiln.local/busybox-arm64:latest",
        ],
    );
    root
}

fn context() -> tempfile::TempDir {
    let ctx = common::context(DOCKERFILE);
    std::fs::write(ctx.path().join("hello.txt"), "hello\n").unwrap();
    ctx
}

/// What the image prints for each platform.
fn expected(arch: &str, goarch: &str) -> String {
    format!("{arch}\nbuilt on x86_64 for {goarch} (linux/{goarch})\nlinux/amd64\nhello\n")
}

/// `skopeo inspect [--raw] SOURCE` (TLS unchecked: the registry is a test's on loopback), as
/// JSON; panics with skopeo's error when it fails.
fn skopeo(raw: bool, source: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .arg("inspect")
        .args(raw.then_some("--raw"))
        .arg("--tls-verify=false")
        .arg(source)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {source}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn platforms(env: &Env, root: &Path, image: &str) -> serde_json::Value {
    let out = env.ok(root, &["inspect", "--format", "{{json .Platforms}}", image]);
    serde_json::from_str(out.trim()).unwrap()
}

#[test]
fn a_two_platform_build_is_pushed_as_an_index_every_tool_reads() {
    const TEST: &str = "a_two_platform_build_is_pushed_as_an_index_every_tool_reads";
    if !can_emulate(TEST)
        || !common::have("docker-registry", TEST)
        || !common::have("skopeo", TEST)
        || !common::have("podman", TEST)
    {
        return;
    }
    let env = Env::plain();
    let root = store_with_multi_base(&env);
    let r = root.path();
    let reg = Registry::start_logged();
    let name = format!("{}/mp:1", reg.host());
    let ctx = context();
    let (code, _, err) = env.kiln(
        r,
        &[
            "build",
            "--progress",
            "plain",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &name,
            "--push",
            ctx.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    // Each platform's steps are named for it, as BuildKit names them.
    assert!(err.contains("[linux/arm64 stage-1 5/6] RUN"), "{err}");
    assert!(err.contains("[linux/amd64 cross 4/4] RUN"), "{err}");
    assert_eq!(
        platforms(&env, r, &name),
        serde_json::json!(["linux/amd64", "linux/arm64"])
    );
    // `images --tree` lists the platforms under the name.
    let tree = env.ok(r, &["images", "--tree", &name]);
    let lines: Vec<&str> = tree.lines().collect();
    assert_eq!(lines.len(), 4, "{tree}");
    assert!(lines[1].starts_with(&name), "{tree}");
    assert!(lines[2].starts_with("├─ linux/amd64"), "{tree}");
    assert!(lines[3].starts_with("└─ linux/arm64"), "{tree}");
    // Each image ran its RUN on its own platform (natively, and under QEMU), and got the
    // cross stage built for it on the build platform.
    for (platform, arch, goarch) in [
        ("linux/amd64", "x86_64", "amd64"),
        ("linux/arm64", "aarch64", "arm64"),
    ] {
        let out = env.ok(r, &["run", "--rm", "--platform", platform, &name]);
        assert_eq!(out, expected(arch, goarch), "{platform}");
    }
    // Without --platform: this machine's.
    assert_eq!(
        env.ok(r, &["run", "--rm", &name]),
        expected("x86_64", "amd64")
    );
    // The files of each platform, as BuildKit's local exporter writes them (from the cache).
    let out = tempfile::tempdir().unwrap();
    let dest = format!("type=local,dest={}", out.path().display());
    env.ok(
        r,
        &[
            "build",
            "-q",
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            &dest,
            ctx.path().to_str().unwrap(),
        ],
    );
    for (dir, arch) in [("linux_amd64", "x86_64\n"), ("linux_arm64", "aarch64\n")] {
        let got = std::fs::read_to_string(out.path().join(dir).join("arch")).unwrap();
        assert_eq!(got, arch, "{dir}");
    }

    // The registry serves an OCI index of the two.
    let index = skopeo(true, &format!("docker://{name}"));
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);

    // podman pulls and runs the arm64 image (through the same binfmt_misc handler).
    let p = Podman::new();
    let podman_name = format!("docker://{name}");
    p.ok(
        "podman",
        &[
            "pull",
            "--tls-verify=false",
            "--platform",
            "linux/arm64",
            &podman_name,
        ],
    );
    let out = p.ok(
        "podman",
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--platform",
            "linux/arm64",
            &name,
        ],
    );
    assert_eq!(out, expected("aarch64", "arm64"));

    // A fresh kiln pulls one platform, or all of them.
    let one = tempfile::tempdir().unwrap();
    env.ok(one.path(), &["pull", "--platform", "linux/arm64", &name]);
    assert_eq!(
        platforms(&env, one.path(), &name),
        serde_json::json!(["linux/arm64"])
    );
    assert_eq!(
        env.ok(one.path(), &["run", "--rm", &name]),
        expected("aarch64", "arm64")
    );
    let all = tempfile::tempdir().unwrap();
    env.ok(all.path(), &["pull", "--all-platforms", &name]);
    assert_eq!(
        platforms(&env, all.path(), &name),
        serde_json::json!(["linux/amd64", "linux/arm64"])
    );
    // The index pulled is the one pushed, byte for byte: pushed again, its digest stays.
    let pushed = skopeo(false, &format!("docker://{name}"));
    let pushed_digest = pushed["Digest"].as_str().unwrap();
    let again = format!("{}/mp:again", reg.host());
    env.ok(all.path(), &["tag", &name, &again]);
    let out = env.ok(all.path(), &["push", "-q", &again]);
    assert_eq!(out.trim(), pushed_digest);

    // `kiln save` writes the index; skopeo reads it, and another store loads both platforms.
    let archive = all.path().join("mp.tar");
    env.ok(
        all.path(),
        &["save", "-o", archive.to_str().unwrap(), &name],
    );
    let saved = skopeo(true, &format!("oci-archive:{}", archive.display()));
    assert_eq!(saved["manifests"].as_array().unwrap().len(), 2, "{saved}");
    let loaded = tempfile::tempdir().unwrap();
    env.ok(loaded.path(), &["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(
        platforms(&env, loaded.path(), &name),
        serde_json::json!(["linux/amd64", "linux/arm64"])
    );
    // One platform of it, saved and pushed alone (docker 28's `--platform`).
    let one_archive = all.path().join("arm64.tar");
    env.ok(
        all.path(),
        &[
            "save",
            "--platform",
            "linux/arm64",
            "-o",
            one_archive.to_str().unwrap(),
            &name,
        ],
    );
    let arm_only = format!("{}/mp:arm64-only", reg.host());
    env.ok(all.path(), &["tag", &name, &arm_only]);
    env.ok(
        all.path(),
        &["push", "-q", "--platform", "linux/arm64", &arm_only],
    );
    for source in [
        format!("oci-archive:{}", one_archive.display()),
        format!("docker://{arm_only}"),
    ] {
        assert_eq!(skopeo(false, &source)["Architecture"], "arm64", "{source}");
        let m = skopeo(true, &source);
        assert!(m.get("manifests").is_none(), "{source}: an index: {m}");
    }
    for root in [r, one.path(), all.path(), loaded.path()] {
        let out = env.ok(root, &["store", "verify"]);
        assert!(out.contains(" 0 problems"), "{out}");
    }
}

#[test]
fn manifest_create_joins_two_single_platform_pushes_without_their_layers() {
    const TEST: &str = "manifest_create_joins_two_single_platform_pushes_without_their_layers";
    if !can_emulate(TEST) || !common::have("docker-registry", TEST) {
        return;
    }
    let env = Env::plain();
    let runner = store_with_multi_base(&env);
    let reg = Registry::start_logged();
    let ctx = context();
    // Two runners' results: each platform built and pushed on its own.
    for arch in ["amd64", "arm64"] {
        let name = format!("{}/app:{arch}", reg.host());
        env.ok(
            runner.path(),
            &[
                "build",
                "-q",
                "--platform",
                &format!("linux/{arch}"),
                "-t",
                &name,
                "--push",
                ctx.path().to_str().unwrap(),
            ],
        );
    }
    // The layers as the registry has them (read by a store that has none of it).
    let empty = tempfile::tempdir().unwrap();
    let layers: Vec<String> = ["amd64", "arm64"]
        .iter()
        .flat_map(|arch| {
            let out = env.ok(
                empty.path(),
                &["manifest", "inspect", &format!("{}/app:{arch}", reg.host())],
            );
            let m: serde_json::Value = serde_json::from_str(&out).unwrap();
            m["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["digest"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(layers.len() >= 6, "{layers:?}");

    // A fresh store joins them and pushes the index.
    let joiner = tempfile::tempdir().unwrap();
    let before = reg.requests().len();
    let joined = format!("{}/app:latest", reg.host());
    env.ok(
        joiner.path(),
        &[
            "manifest",
            "create",
            &joined,
            &format!("{}/app:amd64", reg.host()),
            &format!("{}/app:arm64", reg.host()),
        ],
    );
    env.ok(joiner.path(), &["manifest", "push", &joined]);
    let fetched: Vec<String> = reg.requests()[before..]
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/blobs/"))
        .cloned()
        .collect();
    for l in &layers {
        assert!(
            !fetched.iter().any(|r| r.ends_with(l.as_str())),
            "layer {l} was downloaded: {fetched:?}"
        );
    }
    let index: serde_json::Value =
        serde_json::from_str(&env.ok(joiner.path(), &["manifest", "inspect", &joined])).unwrap();
    let archs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);
    // The store is consistent with images whose layers only the registry has.
    let out = env.ok(joiner.path(), &["store", "verify"]);
    assert!(out.contains(" 0 problems"), "{out}");

    // Anyone pulls the joined tag and gets each platform's image.
    let puller = tempfile::tempdir().unwrap();
    for (platform, arch, goarch) in [
        ("linux/amd64", "x86_64", "amd64"),
        ("linux/arm64", "aarch64", "arm64"),
    ] {
        let out = env.ok(
            puller.path(),
            &["run", "--rm", "--platform", platform, &joined],
        );
        assert_eq!(out, expected(arch, goarch), "{platform}");
    }
    // The same images joined twice are the same index: a rerun of a CI job changes nothing.
    let again = tempfile::tempdir().unwrap();
    let first = env.ok(joiner.path(), &["inspect", "--format", "{{.Id}}", &joined]);
    env.ok(
        again.path(),
        &[
            "manifest",
            "create",
            &joined,
            &format!("{}/app:amd64", reg.host()),
            &format!("{}/app:arm64", reg.host()),
        ],
    );
    let second = env.ok(again.path(), &["inspect", "--format", "{{.Id}}", &joined]);
    assert_eq!(first, second);
}

#[test]
fn no_wrong_platform_image_is_made() {
    const TEST: &str = "no_wrong_platform_image_is_made";
    if !can_emulate(TEST) {
        return;
    }
    let env = Env::plain();
    let root = store_with_multi_base(&env);
    let r = root.path();
    // A last stage on the build platform would put two amd64 images in the index.
    let ctx =
        common::context("FROM --platform=$BUILDPLATFORM kiln.local/busybox:multi\nRUN true\n");
    // A build for `platforms` that fails: its error.
    let refused = |platforms: &str, ctx: &tempfile::TempDir| {
        let (code, _, err) = env.kiln(
            r,
            &[
                "build",
                "--platform",
                platforms,
                ctx.path().to_str().unwrap(),
            ],
        );
        assert_eq!(code, 1, "{err}");
        err
    };
    let err = refused("linux/amd64,linux/arm64", &ctx);
    assert!(
        err.contains("linux/arm64") && err.contains("last stage runs on another platform"),
        "{err}"
    );
    // A platform no emulator serves: the error names it and the package, at its line.
    let ctx = common::context("FROM scratch\nCOPY x /x\nRUN true\n");
    std::fs::write(ctx.path().join("x"), "x").unwrap();
    let err = refused("linux/pdp11", &ctx);
    assert!(
        err.contains("linux/pdp11") && err.contains("qemu-user-static") && err.contains(":3:"),
        "{err}"
    );
    // A base with no image for the platform asked for: said, with what it has.
    let ctx = common::context("FROM kiln.local/busybox-arm64:latest\nRUN true\n");
    let err = refused("linux/riscv64", &ctx);
    assert!(
        err.contains("no image for linux/riscv64") && err.contains("only linux/arm64"),
        "{err}"
    );
    // Running another platform's image unasked works, with docker's warning.
    let (code, out, err) = env.kiln(
        r,
        &["run", "--rm", "kiln.local/busybox-arm64", "uname", "-m"],
    );
    assert_eq!((code, out.as_str()), (0, "aarch64\n"), "{err}");
    assert!(
        err.contains("does not match the detected host platform"),
        "{err}"
    );
    // The image config says what the RUN steps ran as: `kiln inspect` of a one-platform build.
    let ctx = common::context("FROM kiln.local/busybox:multi\nRUN uname -m > /arch\n");
    env.ok(
        r,
        &[
            "build",
            "--platform",
            "linux/arm64",
            "-t",
            "one:arm",
            ctx.path().to_str().unwrap(),
        ],
    );
    let out = env.ok(
        r,
        &[
            "inspect",
            "--format",
            "{{.Os}}/{{.Architecture}}",
            "one:arm",
        ],
    );
    assert_eq!(out.trim(), "linux/arm64");
    let out = env.ok(r, &["run", "--rm", "one:arm", "cat", "/arch"]);
    assert_eq!(out, "aarch64\n");
}

/// `kiln rmi` of a multi-platform image says it deleted the image's ID, its index's digest
/// (as `kiln inspect` shows it), once no other name has it; the host's image another name still
/// has is untouched.
#[test]
fn rmi_of_a_multi_platform_image_deletes_its_index() {
    if !common::can_sandbox("rmi_of_a_multi_platform_image_deletes_its_index") {
        return;
    }
    let env = Env::plain();
    let root = store_with_multi_base(&env);
    let r = root.path();
    let multi = "kiln.local/busybox:multi";
    let id = env.ok(r, &["inspect", "--format", "{{.Id}}", multi]);
    assert!(id.starts_with("sha256:"), "{id}");
    env.ok(r, &["tag", multi, "kiln.local/busybox:again"]);
    assert_eq!(env.ok(r, &["rmi", multi]), format!("Untagged: {multi}\n"));
    assert_eq!(
        env.ok(r, &["rmi", "kiln.local/busybox:again"]),
        format!(
            "Untagged: kiln.local/busybox:again\nDeleted: {}\n",
            id.trim()
        )
    );
    let host = env.ok(
        r,
        &[
            "inspect",
            "--format",
            "{{.Id}}",
            "kiln.local/busybox:latest",
        ],
    );
    assert_ne!(host.trim(), id.trim());
}
