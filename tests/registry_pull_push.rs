//! `kiln pull`, `push`, `login`, `logout` and pulls during builds, against real registries
//! (Debian's `docker-registry`) started by each test on 127.0.0.1: plain HTTP, TLS with a CA
//! made here, htpasswd Basic auth, Bearer tokens from a token server, a credential helper.
//! Results are checked with skopeo and podman, which read what kiln pushed.
#![allow(clippy::unwrap_used)]

mod common;

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

use common::registry::{Auth, Env, Registry, Tls, TokenServer};

/// htpasswd answers neither --version nor --help with success: probe it with a hash.
fn have_htpasswd(test: &str) -> bool {
    common::have_with("htpasswd", &[&["-nbB", "probe", "probe"]], test)
}

fn have_registry(test: &str) -> bool {
    common::have("docker-registry", test) && common::have("skopeo", test)
}

/// A fresh store with the base pushed to `reg` as `busybox:1`.
fn pushed_base(env: &Env, reg: &str) -> tempfile::TempDir {
    let root = common::store_with_base();
    let name = format!("{reg}/busybox:1");
    env.ok(root.path(), &["tag", "kiln.local/busybox", &name]);
    env.ok(root.path(), &["push", &name]);
    root
}

fn skopeo_digest(reference: &str, extra: &[&str]) -> String {
    let out = Command::new("skopeo")
        .arg("inspect")
        .args(extra)
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["Digest"].as_str().unwrap().to_string()
}

fn verify_clean(env: &Env, root: &Path) {
    let out = env.ok(root, &["store", "verify"]);
    assert!(out.contains(" 0 problems"), "{out}");
}

#[test]
fn push_then_pull_round_trip() {
    if !have_registry("push_then_pull_round_trip") {
        return;
    }
    let reg = Registry::start(None, Auth::None);
    let env = Env::plain();
    let host = reg.host();
    let root = common::store_with_base();
    let name = format!("{host}/busybox:1");
    env.ok(root.path(), &["tag", "kiln.local/busybox", &name]);
    let out = env.ok(root.path(), &["push", &name]);
    assert!(
        out.contains(&format!("The push refers to repository [{host}/busybox]")),
        "{out}"
    );
    assert_eq!(
        out.matches(": Pushed").count(),
        2,
        "layer and config: {out}"
    );
    let line = out.lines().last().unwrap();
    let digest = line
        .split("digest: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    // What the registry has is what kiln pushed, byte for byte (the local manifest digest).
    assert_eq!(skopeo_digest(&name, &["--tls-verify=false"]), digest);
    let local = env.ok(root.path(), &["inspect", &name]);
    assert!(local.contains(digest), "{local}");
    // Pushing again sends nothing.
    let again = env.ok(root.path(), &["push", &name]);
    assert_eq!(again.matches("Layer already exists").count(), 2, "{again}");

    let fresh = tempfile::tempdir().unwrap();
    let out = env.ok(fresh.path(), &["pull", &name]);
    assert!(out.contains("Pull complete"), "{out}");
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert!(
        out.contains(&format!("Status: Downloaded newer image for {name}")),
        "{out}"
    );
    let images = env.ok(fresh.path(), &["images"]);
    assert!(images.contains(&format!("{host}/busybox")), "{images}");
    verify_clean(&env, fresh.path());
    // The layer was unpacked as it arrived (one pass), and nothing is left in tmp/.
    assert_eq!(
        std::fs::read_dir(fresh.path().join("layers"))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(
        std::fs::read_dir(fresh.path().join("tmp")).unwrap().count(),
        0
    );
    let out = env.ok(fresh.path(), &["pull", &name]);
    assert!(
        out.contains("Already exists") && out.contains("Image is up to date"),
        "{out}"
    );
    // Pinned by digest: no tag is set, the image resolves by that digest.
    let pinned = format!("{host}/busybox@{digest}");
    let other = tempfile::tempdir().unwrap();
    env.ok(other.path(), &["pull", &pinned]);
    assert!(!env.ok(other.path(), &["images"]).contains("busybox"));
    env.ok(other.path(), &["inspect", &pinned]);
    if common::can_sandbox("push_then_pull_round_trip") {
        let (code, out, err) = env.kiln(
            fresh.path(),
            &["run", "--rm", "--pull", "never", &name, "echo", "pulled"],
        );
        assert_eq!((code, out.trim()), (0, "pulled"), "{err}");
    }
}

#[test]
fn missing_images_and_unreachable_registries_are_clear() {
    if !have_registry("missing_images_and_unreachable_registries_are_clear") {
        return;
    }
    let reg = Registry::start(None, Auth::None);
    let env = Env::plain();
    let _base = pushed_base(&env, &reg.host());
    let root = tempfile::tempdir().unwrap();
    let missing = format!("{}/busybox:nope", reg.host());
    let (code, _, err) = env.kiln(root.path(), &["pull", &missing]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "manifest for {missing} not found: manifest unknown"
        )),
        "{err}"
    );
    let (code, _, err) = env.kiln(root.path(), &["pull", &format!("{}/nothing:1", reg.host())]);
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
    let closed = format!("127.0.0.1:{}", common::registry::free_port());
    let (code, _, err) = env.kiln(root.path(), &["pull", &format!("{closed}/busybox")]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("cannot reach registry {closed}")),
        "{err}"
    );
    // A build names the line and the registry's answer.
    let ctx = common::context(&format!("FROM {missing}\nRUN true\n"));
    let (code, _, err) = env.kiln(root.path(), &["build", ctx.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Dockerfile:1") && err.contains("manifest unknown"),
        "{err}"
    );
    let (code, _, err) = env.kiln(root.path(), &["run", "--rm", &missing]);
    assert_eq!(code, 125, "{err}");
    assert!(
        err.contains("Unable to find image") && err.contains("manifest unknown"),
        "{err}"
    );
}

#[test]
fn build_pulls_its_base_then_pushes_with_a_cross_repository_mount() {
    if !have_registry("build_pulls_its_base") || !common::can_sandbox("build_pulls_its_base") {
        return;
    }
    let reg = Registry::start(None, Auth::None);
    let env = Env::plain();
    let host = reg.host();
    let base_store = pushed_base(&env, &host);
    let root = tempfile::tempdir().unwrap();
    let ctx = common::context(&format!(
        "FROM {host}/busybox:1\nRUN echo built > /built\nCMD [\"cat\", \"/built\"]\n"
    ));
    let app = format!("{host}/team/app:v1");
    let meta = root.path().join("meta.json");
    let (code, out, err) = env.kiln(
        root.path(),
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            &app,
            "--push",
            "--metadata-file",
            meta.to_str().unwrap(),
            ctx.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains(&format!("pulling {host}/busybox:1")), "{err}");
    // The base layer came from busybox on the same registry: mounted, not uploaded again.
    assert!(out.contains("Mounted from busybox"), "{out}");
    assert!(out.contains("v1: digest: sha256:"), "{out}");
    // One digest wherever it is reported: the registry's, the push line's, the metadata
    // file's and the build's own line.
    let served = skopeo_digest(&app, &["--tls-verify=false"]);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(m["containerimage.digest"], served.as_str());
    assert!(out.contains(&format!("v1: digest: {served}")), "{out}");
    assert!(err.contains(&format!("manifest {served}")), "{err}");
    // docker's RepoDigests: what deploy-by-digest scripts read after a push, and after a pull.
    let repo_digest = format!("{host}/team/app@{served}");
    let out = env.ok(
        root.path(),
        &["inspect", "-f", "{{index .RepoDigests 0}}", &app],
    );
    assert_eq!(out.trim(), repo_digest);
    let out = env.ok(
        root.path(),
        &["images", "--digests", "--format", "{{.Digest}}", &app],
    );
    assert_eq!(out.trim(), served);
    let fresh = tempfile::tempdir().unwrap();
    env.ok(fresh.path(), &["pull", &app]);
    let out = env.ok(
        fresh.path(),
        &["inspect", "-f", "{{json .RepoDigests}}", &app],
    );
    assert_eq!(out.trim(), format!("[\"{repo_digest}\"]"));
    // podman (daemonless, a peer) pulls and runs what kiln pushed.
    if common::have("podman", "build_pulls_its_base (podman)") {
        let storage = tempfile::tempdir().unwrap();
        // podman's settings of its own, so the test does not depend on the machine's: runc
        // (Debian's crun refuses hybrid cgroups), cgroupfs (no systemd), rlimits within the
        // hard ones (no CAP_SYS_RESOURCE in CI containers).
        let conf = storage.path().join("containers.conf");
        let hard = |flag: &str| {
            let out = Command::new("sh")
                .args(["-c", &format!("ulimit -H{flag}")])
                .output()
                .unwrap();
            let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
            match v.parse::<u64>() {
                Ok(n) => n.min(32768),
                Err(_) => 32768,
            }
        };
        std::fs::write(
            &conf,
            format!(
                "[containers]\ndefault_ulimits = [\"nofile={n}:{n}\", \"nproc={u}:{u}\"]\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
                n = hard("n"),
                u = hard("u")
            ),
        )
        .unwrap();
        let podman = |args: &[&str]| {
            Command::new("podman")
                .env("CONTAINERS_CONF", &conf)
                .args(["--storage-driver", "vfs"])
                .arg("--root")
                .arg(storage.path().join("root"))
                .arg("--runroot")
                .arg(storage.path().join("run"))
                .args(args)
                .output()
                .unwrap()
        };
        let pulled = podman(&["pull", "--tls-verify=false", &app]);
        assert!(
            pulled.status.success(),
            "{}",
            String::from_utf8_lossy(&pulled.stderr)
        );
        let ran = podman(&["run", "--rm", "--network", "none", &app]);
        assert!(
            ran.status.success(),
            "{}",
            String::from_utf8_lossy(&ran.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&ran.stdout).trim(), "built");
    }
    // The tag moves on the registry: a plain rebuild keeps the stored base (all cached);
    // `--pull` fetches the new one, and the RUN step misses.
    let ctx2 = common::context("FROM kiln.local/busybox\nRUN echo moved > /moved\n");
    env.ok(
        base_store.path(),
        &[
            "build",
            "-t",
            &format!("{host}/busybox:1"),
            "--push",
            ctx2.path().to_str().unwrap(),
        ],
    );
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "--progress", "plain", "-t", "again"];
        args.extend_from_slice(extra);
        args.push(ctx.path().to_str().unwrap());
        let (code, _, err) = env.kiln(root.path(), &args);
        assert_eq!(code, 0, "{err}");
        err
    };
    let cached = build(&[]);
    assert!(
        cached.contains("CACHED") && !cached.contains("pulling"),
        "{cached}"
    );
    let pulled = build(&["--pull"]);
    assert!(
        pulled.contains(&format!("pulling {host}/busybox:1")),
        "{pulled}"
    );
    assert!(
        !pulled.contains("CACHED"),
        "the moved base must miss: {pulled}"
    );
    verify_clean(&env, root.path());
}

#[test]
fn index_picks_this_platform_and_docker_schema2_pulls() {
    if !have_registry("index_picks_this_platform") {
        return;
    }
    let reg = Registry::start(None, Auth::None);
    let env = Env::plain();
    let host = reg.host();
    // A two-platform index: the bundled base for this machine, and an arm64 twin (same layer,
    // its config saying arm64), copied to the registry with skopeo.
    let layout = tempfile::tempdir().unwrap();
    let dir = layout.path();
    let copy = Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", common::BASE))
        .arg(dir)
        .status()
        .unwrap();
    assert!(copy.success());
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let write = |data: &[u8]| -> String {
        let d = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data))
        );
        std::fs::write(blob(&d), data).unwrap();
        d
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mut host_desc = index["manifests"][0].clone();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(host_desc["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let host_arch = config["architecture"].as_str().unwrap().to_string();
    let other_arch = if host_arch == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    config["architecture"] = other_arch.into();
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let mut other = manifest.clone();
    other["config"]["digest"] = write(&config_bytes).into();
    other["config"]["size"] = config_bytes.len().into();
    let other_bytes = serde_json::to_vec(&other).unwrap();
    let other_digest = write(&other_bytes);
    host_desc["platform"] = serde_json::json!({"os": "linux", "architecture": host_arch});
    host_desc.as_object_mut().unwrap().remove("annotations");
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            host_desc,
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other_digest,
             "size": other_bytes.len(), "platform": {"os": "linux", "architecture": other_arch}},
        ],
    });
    let nested_bytes = serde_json::to_vec(&nested).unwrap();
    let nested_digest = write(&nested_bytes);
    std::fs::write(dir.join("index.json"), serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": nested_digest,
                        "size": nested_bytes.len(), "annotations": {"org.opencontainers.image.ref.name": "multi"}}],
    }).to_string()).unwrap();
    let multi = format!("{host}/multi:1");
    let status = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:multi", dir.display()))
        .arg(format!("docker://{multi}"))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    let root = tempfile::tempdir().unwrap();
    let out = env.ok(root.path(), &["pull", &multi]);
    // The digest shown is the index's; the image stored is this machine's.
    assert!(out.contains(&format!("Digest: {nested_digest}")), "{out}");
    let inspect = env.ok(root.path(), &["inspect", &multi]);
    assert!(
        inspect.contains(&format!("\"Architecture\": \"{host_arch}\"")),
        "{inspect}"
    );
    let other_root = tempfile::tempdir().unwrap();
    env.ok(
        other_root.path(),
        &["pull", "--platform", &format!("linux/{other_arch}"), &multi],
    );
    let inspect = env.ok(other_root.path(), &["inspect", &multi]);
    assert!(
        inspect.contains(&format!("\"Architecture\": \"{other_arch}\"")),
        "{inspect}"
    );
    let (code, _, err) = env.kiln(
        other_root.path(),
        &["pull", "--platform", "linux/s390x", &multi],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("no image for linux/s390x") && err.contains(&format!("linux/{other_arch}")),
        "{err}"
    );
    // Running the other platform's image unasked is allowed, with docker's warning (its
    // programs would run under QEMU; this twin's are this machine's, so they run natively).
    let (code, _, err) = env.kiln(
        other_root.path(),
        &["run", "--rm", "--pull", "never", &multi, "true"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "The requested image's platform (linux/{other_arch}) does not match the detected host platform"
        )),
        "{err}"
    );
    // Building on it for its platform, the RUN's program is found to be another
    // architecture's than the config says: refused, never an image of the wrong programs.
    let ctx = common::context(&format!("FROM {multi}\nRUN true\n"));
    let (code, _, err) = env.kiln(
        other_root.path(),
        &[
            "build",
            "--platform",
            &format!("linux/{other_arch}"),
            ctx.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("Dockerfile:2")
            && err.contains(&format!(
                "is a program for {host_arch}, but the stage is for linux/{other_arch}"
            )),
        "{err}"
    );

    // Docker's schema 2 manifest (what `docker push` sends).
    let v2 = format!("{host}/schema2:1");
    let status = Command::new("skopeo")
        .args(["copy", "--format", "v2s2", "--dest-tls-verify=false"])
        .arg(format!("oci:{}", common::BASE))
        .arg(format!("docker://{v2}"))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    env.ok(root.path(), &["pull", &v2]);
    let inspect = env.ok(root.path(), &["inspect", &v2]);
    assert!(inspect.contains("\"RootFS\""), "{inspect}");
    verify_clean(&env, root.path());
}

#[test]
fn hostile_images_from_a_registry_are_refused() {
    if !have_registry("hostile_images_from_a_registry_are_refused") {
        return;
    }
    let reg = Registry::start(None, Auth::None);
    let env = Env::plain();
    let root = tempfile::tempdir().unwrap();
    for (kind, says) in [
        (common::hostile::Hostile::PoisonedDiffId, "diff_id"),
        (
            common::hostile::Hostile::TruncatedGzip,
            "gzip stream is damaged",
        ),
        (
            common::hostile::Hostile::GzipCalledTar,
            "the content is gzip",
        ),
        (common::hostile::Hostile::DiffIdCount, "diff_ids"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let tag = common::hostile::write_layout(dir.path(), &kind);
        let name = format!("{}/{}", reg.host(), tag);
        let copy = Command::new("skopeo")
            .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{tag}", dir.path().display()))
            .arg(format!("docker://{name}"))
            .output()
            .unwrap();
        assert!(
            copy.status.success(),
            "{kind:?}: {}",
            String::from_utf8_lossy(&copy.stderr)
        );
        let (code, _, err) = env.kiln(root.path(), &["pull", &name]);
        assert_eq!(code, 1, "{kind:?} was pulled");
        assert!(err.contains(says), "{kind:?}: {err}");
        assert!(
            !env.ok(root.path(), &["images"]).contains("hostile"),
            "{kind:?}"
        );
    }
    verify_clean(&env, root.path());
    // What was unpacked on the way in was dropped with the layer.
    let unpacked = std::fs::read_dir(root.path().join("layers")).map_or(0, |d| d.count());
    assert_eq!(unpacked, 0);
    assert_eq!(
        std::fs::read_dir(root.path().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn tls_and_basic_auth_with_login_and_logout() {
    if !have_registry("tls_and_basic_auth") || !have_htpasswd("tls_and_basic_auth") {
        return;
    }
    let tls = Tls::make();
    let reg = Registry::start(Some(&tls), Auth::Basic("kiln".into(), "s3cret-pw".into()));
    let host = reg.host();
    // A strict settings file: loopback gets verified TLS too, against the CA in certs.d.
    let certs = tls.certs_d(&host);
    let env = Env::new(serde_json::json!({"insecure-registries": [], "certs-d": [certs.path()]}));
    let untrusting = Env::new(serde_json::json!({"insecure-registries": []}));
    let root = common::store_with_base();
    let name = format!("{host}/busybox:1");
    env.ok(root.path(), &["tag", "kiln.local/busybox", &name]);
    // Without the CA: a TLS error that says what was trusted.
    let (code, _, err) = untrusting.kiln(root.path(), &["push", &name]);
    assert_eq!(code, 1);
    assert!(
        err.contains("TLS") && err.contains("trusted: system roots"),
        "{err}"
    );
    // Anonymous: denied, with the way out.
    let (code, _, err) = env.kiln(root.path(), &["push", &name]);
    assert_eq!(code, 1);
    assert!(
        err.contains("denied")
            && err.contains("anonymous")
            && err.contains(&format!("kiln login {host}")),
        "{err}"
    );
    // A wrong password: refused, nothing stored, the password never printed.
    let (code, out, err) = env.kiln_in(
        root.path(),
        &["login", "-u", "kiln", "--password-stdin", &host],
        "wrong-pw\n",
    );
    assert_eq!(code, 1, "{out}");
    // As docker says it; not "log in with `kiln login`", the command that just failed.
    assert!(
        err.contains("unauthorized: incorrect username or password"),
        "{err}"
    );
    assert!(!err.contains("kiln login"), "{err}");
    assert!(!err.contains("wrong-pw"), "{err}");
    assert!(!env.config_json().exists());
    let (code, out, err) = env.kiln_in(
        root.path(),
        &["login", "-u", "kiln", "--password-stdin", &host],
        "s3cret-pw\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Login Succeeded"));
    let meta = std::fs::metadata(env.config_json()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(env.config_json()).unwrap();
    assert!(
        text.contains(&host) && !text.contains("s3cret-pw"),
        "{text}"
    );
    env.ok(root.path(), &["push", &name]);
    let fresh = tempfile::tempdir().unwrap();
    env.ok(fresh.path(), &["pull", &name]);
    // The password is in no file of the store.
    let grep = Command::new("grep")
        .args(["-r", "-l", "s3cret-pw"])
        .arg(fresh.path())
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&grep.stdout)
    );
    let out = env.ok(root.path(), &["logout", &host]);
    assert!(
        out.contains(&format!("Removing login credentials for {host}")),
        "{out}"
    );
    let (code, _, err) = env.kiln(tempfile::tempdir().unwrap().path(), &["pull", &name]);
    assert_eq!(code, 1);
    assert!(err.contains("denied"), "{err}");
}

#[test]
fn bearer_tokens_from_a_token_server() {
    if !have_registry("bearer_tokens_from_a_token_server")
        || !common::have("python3", "bearer_tokens")
    {
        return;
    }
    let tokens = TokenServer::start("tok-user", "tok-pass");
    let reg = Registry::start(
        None,
        Auth::Token {
            realm: tokens.realm(),
            cert: tokens.cert.clone(),
        },
    );
    let host = reg.host();
    let env = Env::plain();
    let root = common::store_with_base();
    let name = format!("{host}/busybox:1");
    env.ok(root.path(), &["tag", "kiln.local/busybox", &name]);
    let (code, _, err) = env.kiln(root.path(), &["push", &name]);
    assert_eq!(code, 1);
    assert!(
        err.contains("refused the credentials") && err.contains("anonymous"),
        "{err}"
    );
    let (code, _, err) = env.kiln_in(
        root.path(),
        &["login", "-u", "tok-user", "--password-stdin", &host],
        "nope\n",
    );
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = env.kiln_in(
        root.path(),
        &["login", "-u", "tok-user", "--password-stdin", &host],
        "tok-pass\n",
    );
    assert_eq!(code, 0, "{err}");
    env.ok(root.path(), &["push", &name]);
    // A second repository: the layer is mounted across repositories under a token that grants
    // pull on the source.
    let other = format!("{host}/other/busybox:2");
    env.ok(root.path(), &["tag", &name, &other]);
    let out = env.ok(root.path(), &["push", &other]);
    assert!(out.contains("Mounted from busybox"), "{out}");
    let fresh = tempfile::tempdir().unwrap();
    env.ok(fresh.path(), &["pull", &other]);
    verify_clean(&env, fresh.path());
}

#[test]
fn credential_helper_protocol() {
    if !have_registry("credential_helper_protocol") || !have_htpasswd("credential_helper_protocol")
    {
        return;
    }
    let reg = Registry::start(None, Auth::Basic("helper-user".into(), "helper-pw".into()));
    let host = reg.host();
    let mut env = Env::plain();
    // docker-credential-test: the real protocol, secrets kept in a file beside it.
    let bin = tempfile::tempdir().unwrap();
    let store_file = bin.path().join("secrets.json");
    let helper = bin.path().join("docker-credential-test");
    std::fs::write(
        &helper,
        format!(
            r#"#!/usr/bin/env python3
import json, os, sys
f = "{}"
db = json.load(open(f)) if os.path.exists(f) else {{}}
verb = sys.argv[1]
data = sys.stdin.read()
if verb == "store":
    v = json.loads(data); db[v["ServerURL"]] = v
    json.dump(db, open(f, "w"))
elif verb == "get":
    key = data.strip()
    if key not in db:
        print("credentials not found in native keychain"); sys.exit(1)
    print(json.dumps(db[key]))
elif verb == "erase":
    db.pop(data.strip(), None); json.dump(db, open(f, "w"))
"#,
            store_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.path = Some(format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    ));
    std::fs::write(env.config_json(), r#"{"credsStore": "test"}"#).unwrap();
    let root = common::store_with_base();
    let (code, out, err) = env.kiln_in(
        root.path(),
        &["login", "-u", "helper-user", "--password-stdin", &host],
        "helper-pw\n",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("credential helper docker-credential-test"),
        "{err}"
    );
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&store_file).unwrap()).unwrap();
    assert_eq!(kept[&host]["Username"], "helper-user");
    // config.json got no secret: the helper has it.
    assert!(
        !std::fs::read_to_string(env.config_json())
            .unwrap()
            .contains("auths")
    );
    let name = format!("{host}/busybox:1");
    env.ok(root.path(), &["tag", "kiln.local/busybox", &name]);
    env.ok(root.path(), &["push", &name]);
    env.ok(tempfile::tempdir().unwrap().path(), &["pull", &name]);
    env.ok(root.path(), &["logout", &host]);
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&store_file).unwrap()).unwrap();
    assert!(kept.get(&host).is_none(), "{kept}");
    let (code, _, err) = env.kiln(tempfile::tempdir().unwrap().path(), &["pull", &name]);
    assert_eq!(code, 1);
    assert!(err.contains("denied"), "{err}");
}

#[test]
fn a_registry_that_dies_and_a_killed_pull_leave_the_store_clean() {
    if !have_registry("a_registry_that_dies") || !common::can_sandbox("a_registry_that_dies") {
        return;
    }
    let mut reg = Registry::start(None, Auth::None);
    let env = Env::plain();
    let host = reg.host();
    // An image with a few larger layers, so a pull takes long enough to be killed midway.
    let root = common::store_with_base();
    let ctx = common::context(
        "FROM kiln.local/busybox\nRUN head -c 24000000 /dev/urandom > /a\nRUN head -c 24000000 /dev/urandom > /b\nRUN head -c 24000000 /dev/urandom > /c\n",
    );
    let big = format!("{host}/big:1");
    env.ok(
        root.path(),
        &["build", "-t", &big, "--push", ctx.path().to_str().unwrap()],
    );

    // SIGKILL during the pull, at several moments: the store is consistent each time and
    // the next pull finishes from what is complete.
    let fresh = tempfile::tempdir().unwrap();
    for delay_ms in [30u64, 120, 400] {
        let mut child = env
            .cmd(fresh.path(), &["pull", "-q", &big])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        verify_clean(&env, fresh.path());
    }
    env.ok(fresh.path(), &["pull", &big]);
    verify_clean(&env, fresh.path());

    // The registry dies: the pull fails naming it, and nothing partial is visible.
    let second = tempfile::tempdir().unwrap();
    reg.kill();
    let (code, _, err) = env.kiln(second.path(), &["pull", &big]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("cannot reach registry {host}")),
        "{err}"
    );
    verify_clean(&env, second.path());
    reg.restart();
    let out = env.ok(second.path(), &["pull", &big]);
    assert!(out.contains("Status: Downloaded newer image"), "{out}");
    let (code, out, err) = env.kiln(
        second.path(),
        &["run", "--rm", &big, "sh", "-c", "wc -c < /c"],
    );
    assert_eq!((code, out.trim()), (0, "24000000"), "{err}");
}

#[test]
fn zstd_layers_pull_and_run() {
    if !have_registry("zstd_layers_pull_and_run") {
        return;
    }
    let reg = Registry::start(None, Auth::None);
    let env = Env::plain();
    // skopeo recompresses the base's layer to zstd on the way into an OCI layout.
    let layout = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}:z", layout.path().join("z").display());
    let out = Command::new("skopeo")
        .args(["copy", "--dest-compress", "--dest-compress-format", "zstd"])
        .arg(format!("oci:{}", common::BASE))
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = format!("{}/zbox:1", reg.host());
    let out = Command::new("skopeo")
        .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
        .arg(&dest)
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = tempfile::tempdir().unwrap();
    env.ok(root.path(), &["pull", &name]);
    let m: serde_json::Value = serde_json::from_slice(&common::blob(
        root.path(),
        &common::manifest_of(root.path(), &name),
    ))
    .unwrap();
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    verify_clean(&env, root.path());
    if common::can_sandbox("zstd_layers_pull_and_run") {
        let ctx = common::context(&format!("FROM {name}\nRUN echo on-zstd > /z\n"));
        env.ok(
            root.path(),
            &["build", "-t", "onz", ctx.path().to_str().unwrap()],
        );
        let (code, out, err) = env.kiln(root.path(), &["run", "--rm", "onz", "cat", "/z"]);
        assert_eq!((code, out.trim()), (0, "on-zstd"), "{err}");
    }
}

#[test]
fn push_and_save_with_zstd_compression() {
    if !have_registry("push_and_save_with_zstd_compression")
        || !common::can_sandbox("push_and_save_with_zstd_compression")
    {
        return;
    }
    let reg = Registry::start(None, Auth::None);
    let env = Env::plain();
    let root = common::store_with_base();
    let name = format!("{}/zpush:1", reg.host());
    let ctx = common::context("FROM kiln.local/busybox\nRUN echo zstd > /z\n");
    env.ok(
        root.path(),
        &["build", "-q", "-t", &name, ctx.path().to_str().unwrap()],
    );
    env.ok(root.path(), &["push", "--compression", "zstd", &name]);
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    // The layer kiln built leaves as zstd; the base's, pulled gzip, stays as it came.
    let types: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd"
        ]
    );
    let fresh = tempfile::tempdir().unwrap();
    env.ok(fresh.path(), &["pull", &name]);
    let (code, out, err) = env.kiln(fresh.path(), &["run", "--rm", &name, "cat", "/z"]);
    assert_eq!((code, out.trim()), (0, "zstd"), "{err}");
    // The zstd form is remembered with the image: verify and prune keep it.
    env.ok(root.path(), &["cache", "prune", "-a", "-f"]);
    verify_clean(&env, root.path());
    let layout = tempfile::tempdir().unwrap();
    let dest = layout.path().join("z.tar");
    env.ok(
        root.path(),
        &[
            "save",
            "--compression",
            "zstd",
            "-o",
            dest.to_str().unwrap(),
            &name,
        ],
    );
    let other = tempfile::tempdir().unwrap();
    env.ok(other.path(), &["load", "-i", dest.to_str().unwrap()]);
    verify_clean(&env, other.path());
    let (code, _, err) = env.kiln(root.path(), &["push", "--compression", "lz4", &name]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn docker_hub_names_go_to_the_configured_mirror() {
    if !have_registry("docker_hub_names_go_to_the_configured_mirror") {
        return;
    }
    // No internet here: a local registry stands in for a docker.io mirror. `busybox:1` is
    // docker.io/library/busybox:1, asked of the mirror first.
    let mirror = Registry::start(None, Auth::None);
    let env =
        Env::new(serde_json::json!({"registry-mirrors": [format!("http://{}", mirror.host())]}));
    let root = common::store_with_base();
    let on_mirror = format!("{}/library/busybox:1", mirror.host());
    env.ok(root.path(), &["tag", "kiln.local/busybox", &on_mirror]);
    env.ok(root.path(), &["push", &on_mirror]);
    let fresh = tempfile::tempdir().unwrap();
    let out = env.ok(fresh.path(), &["pull", "busybox:1"]);
    assert!(out.contains("docker.io/library/busybox:1"), "{out}");
    let images = env.ok(fresh.path(), &["images"]);
    assert!(
        images.lines().any(|l| l.starts_with("busybox ")),
        "{images}"
    );
    // docker's long and short spellings name the same image.
    env.ok(fresh.path(), &["inspect", "docker.io/library/busybox:1"]);
}

#[test]
fn transfers_that_break_off_are_retried() {
    if !have_registry("transfers_that_break_off_are_retried")
        || !common::have("python3", "transfers_that_break_off_are_retried")
    {
        return;
    }
    let reg = Registry::start(None, Auth::None);
    let env = Env::plain();
    let _base = pushed_base(&env, &reg.host());
    // Between kiln and the registry: a proxy that closes the first two connections after
    // 300 kB have come back (the base's layer is about 1 MB: cut mid-blob).
    let port = common::registry::free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/flaky_proxy.py");
    let proxy = common::registry::Reaped::listening(
        Command::new("python3")
            .arg(script)
            .args([
                port.to_string(),
                reg.port.to_string(),
                "300000".into(),
                "2".into(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null()),
        port,
        "the proxy",
    );
    let root = tempfile::tempdir().unwrap();
    let out = env.ok(
        root.path(),
        &["pull", &format!("127.0.0.1:{port}/busybox:1")],
    );
    let log = proxy.finish();
    let cuts = String::from_utf8_lossy(&log.stdout);
    assert!(cuts.contains("cut 1"), "the proxy cut nothing: {cuts}");
    assert!(out.contains("Pull complete"), "{out}");
    verify_clean(&env, root.path());
    assert_eq!(
        std::fs::read_dir(root.path().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn server_errors_are_retried_and_rate_limits_reported() {
    if !common::have(
        "python3",
        "server_errors_are_retried_and_rate_limits_reported",
    ) {
        return;
    }
    // A registry that answers 503 twice, then 429 with a Retry-After; it prints each request.
    let port = common::registry::free_port();
    let server = common::registry::Reaped::listening(
        Command::new("python3")
            .arg("-c")
            .arg(
                r#"
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
seen = {"n": 0}
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/v2/":
            self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
            self.wfile.write(b"{}"); return
        seen["n"] += 1
        print("request", seen["n"], flush=True)
        code = 503 if seen["n"] <= 2 else 429
        body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}'
        self.send_response(code); self.send_header("Retry-After", "30")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#,
            )
            .arg(port.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null()),
        port,
        "the server",
    );
    let env = Env::plain();
    let root = tempfile::tempdir().unwrap();
    let (code, _, err) = env.kiln(root.path(), &["pull", &format!("127.0.0.1:{port}/app:1")]);
    let log = server.finish();
    assert_eq!(code, 1);
    assert!(
        err.contains("too many requests (HTTP 429); retry after 30 seconds"),
        "{err}"
    );
    let requests = String::from_utf8_lossy(&log.stdout).lines().count();
    assert_eq!(requests, 3, "two 503s retried, the 429 not");
}

#[test]
fn concurrent_pulls_and_a_prune_leave_the_store_clean() {
    if !have_registry("concurrent_pulls_and_a_prune")
        || !common::can_sandbox("concurrent_pulls_and_a_prune")
    {
        return;
    }
    let reg = Registry::start(None, Auth::None);
    let env = Env::plain();
    let src = common::store_with_base();
    let name = format!("{}/pair:1", reg.host());
    let ctx = common::context(
        "FROM kiln.local/busybox\nRUN head -c 8000000 /dev/urandom > /a\nRUN head -c 8000000 /dev/urandom > /b\n",
    );
    env.ok(
        src.path(),
        &[
            "build",
            "-q",
            "-t",
            &name,
            "--push",
            ctx.path().to_str().unwrap(),
        ],
    );
    for round in 0..2 {
        let root = tempfile::tempdir().unwrap();
        // Two pulls of the same image into one store, and a prune of everything, at once.
        let pulls: Vec<_> = (0..2)
            .map(|_| {
                env.cmd(root.path(), &["pull", "-q", &name])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let prune = env
            .cmd(root.path(), &["cache", "prune", "-a", "-f"])
            .output()
            .unwrap();
        assert!(
            prune.status.success(),
            "{}",
            String::from_utf8_lossy(&prune.stderr)
        );
        for p in pulls {
            let out = p.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        verify_clean(&env, root.path());
        let (code, out, err) = env.kiln(
            root.path(),
            &["run", "--rm", &name, "sh", "-c", "wc -c < /b"],
        );
        assert_eq!((code, out.trim()), (0, "8000000"), "round {round}: {err}");
    }
}
