//! Real registries for the tests: Debian's `docker-registry` (distribution 2.8) started on
//! 127.0.0.1 with a fresh storage directory, plain HTTP or TLS with a CA made here, htpasswd
//! Basic auth or Bearer tokens from [`TokenServer`] (a small Python server issuing the JWTs the
//! registry trusts, signed with `openssl`, as Docker Hub's and GHCR's token services do).

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed certificate for `subject` and its key (`openssl req -x509`).
fn self_signed(subject: &str, key: &Path, cert: &Path) {
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", subject,
        ])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert));
}

/// A CA and a server certificate it signed for 127.0.0.1 and localhost.
#[derive(Debug)]
pub struct Tls {
    pub dir: tempfile::TempDir,
}

impl Tls {
    pub fn make() -> Tls {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let p = |n: &str| d.join(n);
        self_signed("/CN=kiln test CA", &p("ca.key"), &p("ca.crt"));
        std::fs::write(
            p("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
            ])
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr")));
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.crt"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .args(["-CAcreateserial", "-extfile"])
            .arg(p("san.ext"))
            .arg("-out")
            .arg(p("server.crt")));
        Tls { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A docker `certs.d` tree trusting this CA for `host`.
    pub fn certs_d(&self, host: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let h = d.path().join(host);
        std::fs::create_dir_all(&h).unwrap();
        std::fs::copy(self.path("ca.crt"), h.join("ca.crt")).unwrap();
        d
    }
}

/// How the registry authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    /// htpasswd Basic auth with this user and password.
    Basic(String, String),
    /// Bearer tokens from the server at this realm, signed by the key of `cert`.
    Token {
        realm: String,
        cert: PathBuf,
    },
}

/// A running `docker-registry`; killed when dropped.
#[derive(Debug)]
pub struct Registry {
    pub port: u16,
    child: Child,
    pub dir: tempfile::TempDir,
    config: PathBuf,
}

impl Registry {
    pub fn start(tls: Option<&Tls>, auth: Auth) -> Registry {
        Self::start_with(tls, auth, false)
    }

    /// A plain registry that logs every request it serves ([`Registry::requests`]).
    pub fn start_logged() -> Registry {
        Self::start_with(None, Auth::None, true)
    }

    fn start_with(tls: Option<&Tls>, auth: Auth, logged: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: {}\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            !logged,
            dir.path().join("data").display()
        );
        if let Some(t) = tls {
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                t.path("server.crt").display(),
                t.path("server.key").display()
            ));
        }
        match &auth {
            Auth::None => {}
            Auth::Basic(user, pass) => {
                let file = dir.path().join("htpasswd");
                run(Command::new("htpasswd")
                    .args(["-Bbc"])
                    .arg(&file)
                    .args([user, pass]));
                cfg.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                    file.display()
                ));
            }
            Auth::Token { realm, cert } => cfg.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: kiln-test\n    issuer: kiln-test-issuer\n    rootcertbundle: {}\n",
                cert.display()
            )),
        }
        let config = dir.path().join("config.yml");
        std::fs::write(&config, cfg).unwrap();
        let child = Self::spawn(&config, port);
        Registry {
            port,
            child,
            dir,
            config,
        }
    }

    fn spawn(config: &Path, port: u16) -> Child {
        // The access log (when on) goes to stdout, kept beside the config.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.with_file_name("access.log"))
            .unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(config)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_listening(port, &mut child, "docker-registry");
        child
    }

    /// The requests served so far (`GET /v2/app/blobs/sha256:...`), from the access log of a
    /// registry started with [`Registry::start_logged`].
    pub fn requests(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| {
                let start = l.find('"')? + 1;
                let end = start + l[start..].find(" HTTP/")?;
                Some(l[start..end].to_string())
            })
            .collect()
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the registry (as a crash would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(&self.config, self.port);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The token server: `GET /token?service=&scope=` with Basic credentials of `user`/`pass`
/// gets a JWT granting what was asked; anyone else is refused (401).
#[derive(Debug)]
pub struct TokenServer {
    pub port: u16,
    /// Killed when the server is dropped.
    _child: Reaped,
    /// Its signing certificate, which the registry trusts.
    pub cert: PathBuf,
    pub dir: tempfile::TempDir,
}

impl TokenServer {
    pub fn start(user: &str, pass: &str) -> TokenServer {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("token.key");
        let cert = dir.path().join("token.crt");
        self_signed("/CN=kiln token issuer", &key, &cert);
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/token_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(&key)
            .arg(&cert)
            .args([user, pass])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_listening(port, &mut child, "the token server");
        TokenServer {
            port,
            _child: Reaped(Some(child)),
            cert,
            dir,
        }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }
}

/// A kiln command isolated from the machine's registry settings and credentials: its own
/// `DOCKER_CONFIG`, settings file and no podman auth file.
pub fn isolated(cmd: &mut Command, docker_config: &Path, settings: &Path) {
    cmd.env("DOCKER_CONFIG", docker_config)
        .env("KILN_REGISTRIES_CONF", settings)
        .env("REGISTRY_AUTH_FILE", docker_config.join("no-auth.json"));
}

/// A helper process killed when dropped (also when the test fails first).
#[derive(Debug)]
pub struct Reaped(pub Option<Child>);

impl Reaped {
    /// Starts `cmd` and waits until it listens on `port` of 127.0.0.1.
    pub fn listening(cmd: &mut Command, port: u16, what: &str) -> Reaped {
        let mut child = cmd.spawn().unwrap();
        wait_listening(port, &mut child, what);
        Reaped(Some(child))
    }

    /// Kills it and returns what it printed.
    pub fn finish(mut self) -> std::process::Output {
        let mut child = self.0.take().unwrap();
        let _ = child.kill();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Where a test's kiln keeps registry settings and credentials.
pub struct Env {
    pub docker_config: tempfile::TempDir,
    pub settings: PathBuf,
    pub path: Option<String>,
}

impl Env {
    pub fn new(settings: serde_json::Value) -> Env {
        let docker_config = tempfile::tempdir().unwrap();
        let path = docker_config.path().join("registries.json");
        std::fs::write(&path, settings.to_string()).unwrap();
        Env {
            docker_config,
            settings: path,
            path: None,
        }
    }

    pub fn plain() -> Env {
        Env::new(serde_json::json!({}))
    }

    pub fn cmd(&self, root: &Path, args: &[&str]) -> Command {
        let mut c = super::kiln_cmd(root, args);
        isolated(&mut c, self.docker_config.path(), &self.settings);
        if let Some(p) = &self.path {
            c.env("PATH", p);
        }
        c
    }

    pub fn kiln(&self, root: &Path, args: &[&str]) -> (i32, String, String) {
        self.kiln_in(root, args, "")
    }

    pub fn kiln_in(&self, root: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
        let mut child = self
            .cmd(root, args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // kiln may refuse before reading stdin; EPIPE is then expected, the output tells.
        let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes());
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn ok(&self, root: &Path, args: &[&str]) -> String {
        let (code, out, err) = self.kiln(root, args);
        assert_eq!(code, 0, "kiln {args:?}\nstdout: {out}\nstderr: {err}");
        out
    }

    pub fn config_json(&self) -> PathBuf {
        self.docker_config.path().join("config.json")
    }
}
