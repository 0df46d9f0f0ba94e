//! What the other tools really produce, kiln reads: an image dockerd 20.10's BuildKit built
//! (`testdata/interop/docker-buildkit`, recorded by `bench/record-docker-image.sh`: its config
//! has `"OnBuild": null`), loaded from its `docker save` archive and pulled from a registry it
//! was copied to; and images podman and buildah build here, saved as archives and pushed. Each
//! is loaded or pulled, run, and built `FROM`.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::{
    podman::Podman,
    registry::{Auth, Env, Registry},
};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/interop/docker-buildkit"
);

/// The `docker save` archive of the recorded image, its base layer put back from
/// testdata/base (the same bytes: the base's diff_id).
fn docker_archive(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    let status = Command::new("cp")
        .args(["-a", FIXTURE])
        .arg(&tree)
        .status()
        .unwrap();
    assert!(status.success());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tree.join("manifest.json")).unwrap()).unwrap();
    let base_layer = manifest[0]["Layers"][0].as_str().unwrap();
    let gz = std::fs::File::open(
        Path::new(common::BASE)
            .join("blobs/sha256/9e7a09cf42268f109e8beafe5635290f27ec71b24bd453cd8db01162ac09571a"),
    )
    .unwrap();
    let mut out = std::fs::File::create(tree.join(base_layer)).unwrap();
    std::io::copy(&mut flate2::read::GzDecoder::new(gz), &mut out).unwrap();
    let archive = dir.join("docker-built.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    b.append_dir_all(".", &tree).unwrap();
    b.finish().unwrap();
    archive
}

/// Runs `image` and builds an image `FROM` it whose RUN reads what the image holds; `want` is
/// what its default command prints.
fn run_and_build_from(env: &Env, root: &Path, image: &str, file: &str, want: &str) {
    let out = env.ok(root, &["run", "--rm", image]);
    assert_eq!(out, want, "{image}");
    let ctx = common::context(&format!(
        "FROM {image}\nRUN cat {file} > /copied && echo \"$GREETING\" >> /copied\nCMD [\"cat\", \"/copied\"]\n"
    ));
    let tag = format!("from-{}", image.replace(['/', ':', '.'], "-"));
    env.ok(
        root,
        &["build", "-q", "-t", &tag, ctx.path().to_str().unwrap()],
    );
    let out = env.ok(root, &["run", "--rm", &tag]);
    assert_eq!(out, format!("{want}hello\n"), "FROM {image}");
}

#[test]
fn a_docker_built_image_loads_pulls_runs_and_builds_from() {
    if !common::can_sandbox("a_docker_built_image_loads_pulls_runs_and_builds_from") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = docker_archive(dir.path());
    let env = Env::plain();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let out = env.ok(r, &["load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains("kiln-interop/docker-built:1"), "{out}");
    run_and_build_from(
        &env,
        r,
        "kiln-interop/docker-built:1",
        "/from-docker",
        "docker-built\n",
    );
    // As docker pushes it (schema 2, gzip layers), through a registry.
    if !common::have("docker-registry", "a_docker_built_image (registry)")
        || !common::have("skopeo", "a_docker_built_image (registry)")
    {
        return;
    }
    let reg = Registry::start(None, Auth::None);
    let name = format!("{}/docker-built:1", reg.host());
    let copy = Command::new("skopeo")
        .args(["copy", "--format", "v2s2", "--dest-tls-verify=false"])
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let fresh = tempfile::tempdir().unwrap();
    env.ok(fresh.path(), &["pull", &name]);
    run_and_build_from(&env, fresh.path(), &name, "/from-docker", "docker-built\n");
    let out = env.ok(fresh.path(), &["store", "verify"]);
    assert!(out.contains(" 0 problems"), "{out}");
}

#[test]
fn podman_and_buildah_built_images_load_pull_run_and_build_from() {
    if !common::can_sandbox("podman_and_buildah_built_images_load_pull_run_and_build_from")
        || !common::have("podman", "podman_and_buildah_built_images")
        || !common::have("buildah", "podman_and_buildah_built_images")
        || !common::have("docker-registry", "podman_and_buildah_built_images")
    {
        return;
    }
    let p = Podman::new();
    p.ok("podman", &["pull", &format!("oci:{}", common::BASE)]);
    let ids = p.ok("podman", &["images", "-q"]);
    let base_id = ids.lines().next().unwrap().trim().to_string();
    p.ok("podman", &["tag", &base_id, "localhost/base:1"]);
    let ctx = common::context(
        "FROM localhost/base:1\nENV GREETING=hello\nRUN echo peer-built > /from-peer\nCMD [\"cat\", \"/from-peer\"]\n",
    );
    let c = ctx.path().to_str().unwrap();
    // podman build (OCI format) and buildah bud (docker format), as each writes them.
    p.ok(
        "podman",
        &[
            "build",
            "--isolation",
            "chroot",
            "-t",
            "localhost/by-podman:1",
            c,
        ],
    );
    p.ok(
        "buildah",
        &[
            "bud",
            "--isolation",
            "chroot",
            "--format",
            "docker",
            "-t",
            "localhost/by-buildah:1",
            c,
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let env = Env::plain();
    let reg = Registry::start(None, Auth::None);
    for (image, saved_as) in [
        ("localhost/by-podman:1", "oci-archive"),
        ("localhost/by-buildah:1", "docker-archive"),
    ] {
        let archive = dir.path().join(format!("{saved_as}.tar"));
        p.ok(
            "podman",
            &[
                "save",
                "--format",
                saved_as,
                "-o",
                archive.to_str().unwrap(),
                image,
            ],
        );
        let root = tempfile::tempdir().unwrap();
        env.ok(root.path(), &["load", "-i", archive.to_str().unwrap()]);
        let loaded = env.ok(root.path(), &["images"]);
        let name = if loaded.contains("by-podman") || loaded.contains("by-buildah") {
            image.to_string()
        } else {
            panic!("{image} from {saved_as} is not named as it was saved: {loaded}");
        };
        run_and_build_from(&env, root.path(), &name, "/from-peer", "peer-built\n");
        // Pushed by the peer itself, pulled by kiln.
        let remote = format!("{}/{}", reg.host(), image.trim_start_matches("localhost/"));
        p.ok(
            "podman",
            &[
                "push",
                "--tls-verify=false",
                image,
                &format!("docker://{remote}"),
            ],
        );
        let fresh = tempfile::tempdir().unwrap();
        env.ok(fresh.path(), &["pull", &remote]);
        run_and_build_from(&env, fresh.path(), &remote, "/from-peer", "peer-built\n");
    }
}
