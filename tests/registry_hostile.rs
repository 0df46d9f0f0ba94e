//! Registries that attack: each test starts a hostile registry on 127.0.0.1
//! (`common/hostile_registry.py`, which logs every request it gets with its `Authorization`)
//! and checks what kiln gave away, unpacked or waited for. Each failed before its fix:
//! - credentials go only to the origin they were given for: an upload location on another
//!   host gets none; a registry reached over https that points to plain http (an upload
//!   location, a token realm) is refused before anything is sent there;
//! - a pull pinned by digest checks a blob's digest before any byte is decompressed; a pull by
//!   tag bounds what a layer may expand to (`max-layer-expansion`), and the bound can be raised;
//! - a registry that trickles its bytes meets a deadline, and a prune waiting behind that pull
//!   says what it waits for;
//! - a pull whose stdout reader went away (`kiln pull IMAGE | head -0`) still pulls;
//! - a manifest refused as DIGEST_INVALID while another client's upload rewrites a blob's link
//!   (distribution's race) is sent again, a few times, not forever.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::{BufRead, Read},
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::registry::{Env, Reaped, Tls, free_port};
use sha2::Digest as _;

fn have_python(test: &str) -> bool {
    common::have("python3", test)
}

/// Starts the hostile registry `mode ARG` on a free port, over TLS with `tls`.
fn hostile(mode: &str, arg: &str, tls: Option<&Tls>) -> (Reaped, u16) {
    let port = free_port();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/common/hostile_registry.py"
    );
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args([&port.to_string(), mode, arg])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(t) = tls {
        cmd.env("HOSTILE_TLS_CERT", t.path("server.crt"))
            .env("HOSTILE_TLS_KEY", t.path("server.key"));
    }
    (Reaped::listening(&mut cmd, port, mode), port)
}

/// The requests a hostile registry logged.
fn requests(server: Reaped) -> Vec<String> {
    let out = server.finish();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// A directory the `serve` registry serves: `blobs/sha256_HEX`, `manifests/REF`.
struct Served {
    dir: tempfile::TempDir,
}

impl Served {
    fn new() -> Served {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs")).unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        Served { dir }
    }

    fn blob_at(&self, digest: &str, data: &[u8]) {
        let name = digest.replace(':', "_");
        std::fs::write(self.dir.path().join("blobs").join(name), data).unwrap();
    }

    fn blob(&self, data: &[u8]) -> String {
        let d = sha(data);
        self.blob_at(&d, data);
        d
    }

    /// An image of one layer (`layer` as served, `size` in its descriptor, `diff_id` in the
    /// config), as the tag `tag` and by its digest; returns the manifest's digest.
    fn image(&self, tag: &str, layer: (&str, u64, &str)) -> String {
        let (digest, size, diff_id) = layer;
        let config = serde_json::json!({
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        })
        .to_string();
        let config_digest = self.blob(config.as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest,
                "size": size,
            }],
        })
        .to_string();
        let m = sha(manifest.as_bytes());
        let dir = self.dir.path().join("manifests");
        std::fs::write(dir.join(tag), &manifest).unwrap();
        std::fs::write(dir.join(m.replace(':', "_")), &manifest).unwrap();
        m
    }

    /// The bundled busybox image as `tag`.
    fn busybox(&self, tag: &str) {
        let base = Path::new(common::BASE);
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(base.join("index.json")).unwrap()).unwrap();
        let m = index["manifests"][0]["digest"].as_str().unwrap();
        for e in std::fs::read_dir(base.join("blobs/sha256"))
            .unwrap()
            .flatten()
        {
            let name = format!("sha256:{}", e.file_name().to_string_lossy());
            self.blob_at(&name, &std::fs::read(e.path()).unwrap());
        }
        let manifest = std::fs::read(base.join("blobs/sha256").join(&m[7..])).unwrap();
        std::fs::write(self.dir.path().join("manifests").join(tag), manifest).unwrap();
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }
}

/// A gzip layer of one file of `mib` MiB of zeros, made of one gzip member per MiB (a
/// compression bomb about a thousand times smaller than what it expands to): its bytes and
/// its diff_id.
fn zero_bomb(mib: usize) -> (Vec<u8>, String) {
    let gz = |data: &[u8]| common::hostile::gzip(data);
    let mut h = tar::Header::new_ustar();
    h.set_path("zeros").unwrap();
    h.set_size((mib as u64) << 20);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mib_of_zeros = vec![0u8; 1 << 20];
    let member = gz(&mib_of_zeros);
    let mut bytes = gz(h.as_bytes());
    let mut diff = sha2::Sha256::new();
    diff.update(h.as_bytes());
    for _ in 0..mib {
        bytes.extend_from_slice(&member);
        diff.update(&mib_of_zeros);
    }
    // The tar's end: two zero blocks.
    bytes.extend(gz(&[0u8; 1024]));
    diff.update([0u8; 1024]);
    (bytes, format!("sha256:{}", hex::encode(diff.finalize())))
}

/// Runs `cmd` to its end, killing it (and failing) if it is still running after 120 s: a
/// guard against a hang, no claim about speed. Exit code (-1 for a signal), stdout, stderr.
fn bounded(mut cmd: Command) -> (i32, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("{cmd:?} still ran after 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn nothing_left(root: &Path) {
    let count = |d: &str| std::fs::read_dir(root.join(d)).map_or(0, |d| d.count());
    assert_eq!(count("layers"), 0, "nothing unpacked stays");
    assert_eq!(count("tmp"), 0, "nothing half-written stays");
}

#[test]
fn credentials_go_only_to_their_registry() {
    if !have_python("credentials_go_only_to_their_registry") {
        return;
    }
    let base = common::store_with_base();
    let r = base.path();
    // A registry whose upload sessions are on another host, which logs what it gets.
    let (thief, thief_port) = hostile("listen", "", None);
    let (reg, port) = hostile("upload-to", &format!("http://127.0.0.1:{thief_port}"), None);
    let env = Env::plain();
    let host = format!("127.0.0.1:{port}");
    let (code, _, err) = env.kiln_in(
        r,
        &["login", "-u", "alice", "--password-stdin", &host],
        "s3cret\n",
    );
    assert_eq!(code, 0, "{err}");
    let name = format!("{host}/app:1");
    env.ok(r, &["tag", "kiln.local/busybox", &name]);
    env.ok(r, &["push", &name]);
    let stolen = requests(thief);
    let got = requests(reg);
    assert!(
        got.iter().any(|l| l.contains("auth=Basic ")),
        "the registry itself gets the credentials: {got:?}"
    );
    assert!(
        stolen.iter().any(|l| l.starts_with("PUT /upload/1")),
        "the uploads went where the registry said: {stolen:?}"
    );
    assert!(
        stolen.iter().all(|l| l.ends_with("auth=-")),
        "the other host got credentials: {stolen:?}"
    );

    // Over TLS: an upload location or a token realm on plain http is refused, and nothing
    // reaches it.
    let tls = Tls::make();
    for mode in ["upload-to", "realm"] {
        let (thief, thief_port) = hostile("listen", "", None);
        let (reg, port) = hostile(
            mode,
            &format!("http://127.0.0.1:{thief_port}/token"),
            Some(&tls),
        );
        let host = format!("127.0.0.1:{port}");
        let certs = tls.certs_d(&host);
        let env = Env::new(serde_json::json!({
            "insecure-registries": [],
            "certs-d": [certs.path()],
        }));
        if mode == "upload-to" {
            let (code, _, err) = env.kiln_in(
                r,
                &["login", "-u", "alice", "--password-stdin", &host],
                "s3cret\n",
            );
            assert_eq!(code, 0, "{err}");
            let name = format!("{host}/app:1");
            env.ok(r, &["tag", "kiln.local/busybox", &name]);
            let (code, _, err) = env.kiln(r, &["push", &name]);
            assert_eq!(code, 1, "{mode}: {err}");
            assert!(err.contains("from https to plain http"), "{mode}: {err}");
        } else {
            let auth = serde_json::json!({"auths": {host.clone(): {"auth": "YWxpY2U6czNjcmV0"}}});
            std::fs::write(env.config_json(), auth.to_string()).unwrap();
            let (code, _, err) = env.kiln(r, &["pull", &format!("{host}/app:1")]);
            assert_eq!(code, 1, "{mode}: {err}");
            assert!(err.contains("from https to plain http"), "{mode}: {err}");
        }
        assert!(!requests(reg).is_empty(), "{mode}: the registry was asked");
        let stolen = requests(thief);
        assert!(
            stolen.is_empty(),
            "{mode}: the http host was reached: {stolen:?}"
        );
    }
}

#[test]
fn layers_are_verified_or_bounded_before_they_expand() {
    if !have_python("layers_are_verified_or_bounded_before_they_expand") {
        return;
    }
    let served = Served::new();
    let (bomb, diff_id) = zero_bomb(100);
    let bomb_digest = served.blob(&bomb);
    served.image("tagged", (&bomb_digest, bomb.len() as u64, &diff_id));
    // Pinned: the manifest names a small blob, the registry sends the bomb in its place.
    let decoy = common::hostile::gzip(&common::hostile::tar_layer("decoy", b"decoy\n"));
    let decoy_digest = sha(&decoy);
    served.blob_at(&decoy_digest, &bomb);
    let pinned = served.image("pinned", (&decoy_digest, bomb.len() as u64, &diff_id));
    let (server, port) = hostile("serve", served.path(), None);
    let host = format!("127.0.0.1:{port}");

    // By digest: the blob's digest is checked before one byte is decompressed. Files are
    // limited to 32 MiB: a 100 MiB file unpacked on the way in would end kiln (SIGXFSZ).
    let root = tempfile::tempdir().unwrap();
    let env = Env::plain();
    let mut cmd = env.cmd(root.path(), &["pull", &format!("{host}/bomb@{pinned}")]);
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = rustix::process::Rlimit {
                current: Some(32 << 20),
                maximum: Some(32 << 20),
            };
            rustix::process::setrlimit(rustix::process::Resource::Fsize, limit)
                .map_err(std::io::Error::from)
        });
    }
    let (code, _, err) = bounded(cmd);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("its content has digest {bomb_digest}")),
        "{err}"
    );
    nothing_left(root.path());

    // By tag: streamed, but never past 100 times the blob's size (at least 64 MiB).
    let (code, _, err) = env.kiln(root.path(), &["pull", &format!("{host}/bomb:tagged")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("it expands to more than"), "{err}");
    assert!(err.contains("max-layer-expansion"), "{err}");
    nothing_left(root.path());
    // An image the user trusts: the bound raised in the settings file.
    let trusting = Env::new(serde_json::json!({"max-layer-expansion": 5000}));
    trusting.ok(root.path(), &["pull", &format!("{host}/bomb:tagged")]);
    let out = trusting.ok(root.path(), &["store", "verify"]);
    assert!(out.contains(" 0 problems"), "{out}");
    drop(server);
}

#[test]
fn a_trickling_registry_meets_a_deadline_and_a_prune_says_it_waits() {
    if !have_python("a_trickling_registry_meets_a_deadline_and_a_prune_says_it_waits") {
        return;
    }
    let served = Served::new();
    served.busybox("1");
    let (server, port) = hostile("trickle", served.path(), None);
    let name = format!("127.0.0.1:{port}/busybox:1");
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // A request deadline of 2 s: the config (hundreds of bytes at one a second) misses it.
    let env = Env::new(serde_json::json!({"timeouts": {"request": 2}}));
    let (code, _, err) = bounded(env.cmd(r, &["pull", &name]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no answer within the deadline"), "{err}");
    nothing_left(r);

    drop(server);

    // With a longer deadline the pull holds the store's build lock while it trickles: a prune
    // waits for it, and says so. A registry of its own, so its log holds this pull's requests.
    let (server, port) = hostile("trickle", served.path(), None);
    let name = format!("127.0.0.1:{port}/busybox:1");
    let env = Env::new(serde_json::json!({"timeouts": {"request": 600}}));
    let mut pull = env
        .cmd(r, &["pull", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The pull has the lock once it asks for a blob.
    let mut server = server;
    let log = server.0.as_mut().unwrap().stdout.take().unwrap();
    let asked = std::io::BufReader::new(log)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("GET /v2/busybox/blobs/"));
    assert!(asked, "the pull never asked for a blob");
    let mut prune = env
        .cmd(r, &["cache", "prune", "-f"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(prune.stderr.take().unwrap());
    let mut line = String::new();
    // The first line the prune writes: bounded by the pull's end (then the prune ends too).
    stderr.read_line(&mut line).unwrap();
    let _ = pull.kill();
    let _ = pull.wait();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let status = prune.wait().unwrap();
    assert!(status.success(), "{line}{rest}");
    assert!(
        line.contains("waiting for pid") && line.contains("pull") && line.contains("build.lock"),
        "{line}"
    );
    drop(server);
}

#[test]
fn a_pull_whose_reader_went_away_still_pulls() {
    if !have_python("a_pull_whose_reader_went_away_still_pulls") {
        return;
    }
    let served = Served::new();
    served.busybox("1");
    let (_server, port) = hostile("serve", served.path(), None);
    let name = format!("127.0.0.1:{port}/busybox:1");
    let root = tempfile::tempdir().unwrap();
    let env = Env::plain();
    // `kiln pull NAME | head -0`: the pipe's reader is gone before kiln writes.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = env
        .cmd(root.path(), &["pull", &name])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let images = env.ok(root.path(), &["images"]);
    assert!(
        images.contains(&format!("127.0.0.1:{port}/busybox")),
        "{images}"
    );
}

#[test]
fn a_manifest_refused_by_a_racing_link_is_sent_again() {
    if !have_python("a_manifest_refused_by_a_racing_link_is_sent_again") {
        return;
    }
    let root = common::store_with_base();
    let r = root.path();
    for (refusals, pushed) in [(2, true), (9, false)] {
        let (server, port) = hostile("racing-link", &refusals.to_string(), None);
        let name = format!("127.0.0.1:{port}/app:1");
        let (code, _, err) = common::kiln(r, &["tag", "kiln.local/busybox", &name]);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = common::kiln(r, &["push", &name]);
        let puts = requests(server)
            .iter()
            .filter(|l| l.starts_with("PUT /v2/app/manifests/"))
            .count();
        if pushed {
            assert_eq!(code, 0, "{err}");
            assert_eq!(puts, refusals + 1, "sent again after each refusal");
        } else {
            assert_ne!(code, 0);
            assert!(err.contains("digest invalid"), "{err}");
            assert_eq!(puts, 4, "one send and three more, then the refusal stands");
        }
    }
}
