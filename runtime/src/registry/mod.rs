//! The OCI distribution protocol: pull images from a registry into the store
//! and push them out, with docker's reference rules, credentials, TLS and insecure-registry
//! settings.
//!
//! - [`Target`]: where a reference lives (`alpine` = `docker.io/library/alpine:latest`).
//! - [`client`]: one registry over HTTP(S): the auth challenge, tokens, retries, TLS.
//! - [`credentials`]: docker's config.json and helpers, podman's auth.json; `kiln login`.
//! - [`pull`] and [`push`]: the image flows, layers in parallel, every byte verified.
//!
//! Everything a registry sends is untrusted: a manifest is refused unless its bytes have the
//! digest that names it, a blob unless its bytes have its descriptor's digest and size, and an
//! image unless [`crate::store`]'s integrity check passes, before any tag or ChainID refers
//! to it.

mod auth;
mod blob;
pub mod client;
pub mod credentials;
pub mod fetch;
pub mod pull;
pub mod push;

use std::path::PathBuf;

pub use client::Client;
pub use fetch::install_fetcher;
pub use pull::{PullEvent, PullOptions, Pulled, fetch_images, fetch_raw, pull};
pub use push::{PushOptions, Pushed, push};

use crate::{reference::ReferenceError, store::StoreError};

/// Registry failures; each names the registry or reference, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {registry}: {reason}")]
    Network { registry: String, reason: String },
    #[error(
        "registry {registry}: {url}: no answer within the deadline (raise `timeouts` in the \
         registry settings file for a slow link)"
    )]
    Timeout { registry: String, url: String },
    #[error("registry {registry}: TLS: {reason}")]
    Tls { registry: String, reason: String },
    #[error(
        "registry {registry} denied access: {what} (used {credentials}); log in with \
         `kiln login {registry}`"
    )]
    Denied {
        registry: String,
        what: String,
        credentials: String,
    },
    #[error("{what}: {message}")]
    NotFound { what: String, message: String },
    #[error(
        "registry {registry}: too many requests (HTTP 429){}",
        retry_after.as_deref().map(|r| format!("; retry after {r} seconds")).unwrap_or_default()
    )]
    RateLimited {
        registry: String,
        retry_after: Option<String>,
    },
    #[error("{url}: HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    /// What the registry sent cannot be used (a wrong digest, a lying size, schema 1...).
    #[error("{what}: {reason}")]
    Refused { what: String, reason: String },
    #[error("credentials {path}: {reason}")]
    Credentials { path: PathBuf, reason: String },
    #[error("credential helper {helper}: {reason}")]
    Helper { helper: String, reason: String },
    #[error("registry configuration {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Local { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

/// What a registry sent that cannot be used, and why.
pub(super) fn refused(what: impl Into<String>, reason: impl Into<String>) -> RegistryError {
    RegistryError::Refused {
        what: what.into(),
        reason: reason.into(),
    }
}

/// Where an image reference lives on a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `docker.io`, `localhost:5000`, `ghcr.io`.
    pub registry: String,
    /// The repository on it: `library/alpine`, `team/app`.
    pub repo: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Target {
    /// docker's rules: no registry host means Docker Hub, where a one-component name is in
    /// `library/`; no tag and no digest means `latest`.
    pub fn parse(s: &str) -> Result<Target, ReferenceError> {
        let r = crate::reference::parse(s)?;
        let registry = match r.host.as_deref() {
            None | Some("index.docker.io") => "docker.io".to_string(),
            Some(h) => h.to_string(),
        };
        let repo = if registry == "docker.io" && !r.path.contains('/') {
            format!("library/{}", r.path)
        } else {
            r.path.clone()
        };
        let tag = match (&r.tag, &r.digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.clone(),
        };
        Ok(Target {
            registry,
            repo,
            tag,
            digest: r.digest,
        })
    }

    /// What the manifest is fetched by: the digest when pinned, else the tag.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// `repository:pull` (and `,push`) scope for the token server.
    pub fn scope(&self, push: bool) -> String {
        format!(
            "repository:{}:{}",
            self.repo,
            if push { "pull,push" } else { "pull" }
        )
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repo)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Registry settings: which registries may be spoken to without verified TLS, docker.io
/// mirrors, where per-registry certificates live.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hosts (`host`, `host:port`) or IPv4 networks (`10.0.0.0/8`) allowed plain HTTP or an
    /// unverified certificate: [`DEFAULT_INSECURE`] unless the settings file names its own
    /// list (docker always allows loopback; kiln lets a strict list verify it too).
    pub insecure: Vec<String>,
    /// Mirrors of docker.io (`https://mirror.example`), tried first, in order.
    pub mirrors: Vec<String>,
    /// docker's `certs.d` directories.
    pub certs_dirs: Vec<PathBuf>,
    /// How far a layer pulled by tag may expand: at most this many times its compressed
    /// size, or [`EXPANSION_FLOOR`] bytes if that is more (`max-layer-expansion`; 0: no
    /// bound). A layer pulled by digest is verified before it is decompressed instead.
    pub max_expansion: u64,
    pub timeouts: Timeouts,
}

/// Deadlines on registry I/O (`timeouts` in the settings file, in seconds; `min-speed` in
/// bytes a second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To open a connection (docker's dialer: 30 s).
    pub connect: std::time::Duration,
    /// A whole request with a small body (a ping, a manifest, a token), and the longest wait
    /// for any one read.
    pub request: std::time::Duration,
    /// A transfer of N bytes may take `request` plus N / `min_speed` seconds in all, so a
    /// registry that trickles a byte now and then cannot hold kiln forever.
    pub min_speed: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: std::time::Duration::from_secs(30),
            request: std::time::Duration::from_secs(60),
            min_speed: 16 << 10,
        }
    }
}

impl Timeouts {
    /// The deadline of a request that moves `bytes` bytes.
    pub fn deadline(&self, bytes: u64) -> std::time::Duration {
        self.request + std::time::Duration::from_secs(bytes / self.min_speed.max(1))
    }
}

/// Layers up to this size always unpack, whatever their compression ratio (64 MiB).
pub const EXPANSION_FLOOR: u64 = 64 << 20;

/// The default of [`Options::max_expansion`]: 100×, the bound zip-bomb guards commonly use
/// (Apache POI's minimum inflate ratio of 0.01).
pub const DEFAULT_MAX_EXPANSION: u64 = 100;

/// Registries allowed without verified TLS unless the settings file says otherwise: loopback,
/// as docker allows it.
pub const DEFAULT_INSECURE: [&str; 3] = ["localhost", "127.0.0.0/8", "::1"];

impl Default for Options {
    fn default() -> Self {
        Options {
            insecure: DEFAULT_INSECURE.iter().map(|s| s.to_string()).collect(),
            mirrors: Vec::new(),
            certs_dirs: Vec::new(),
            max_expansion: DEFAULT_MAX_EXPANSION,
            timeouts: Timeouts::default(),
        }
    }
}

/// The settings file: `$KILN_REGISTRIES_CONF`, else `/etc/kiln/registries.json`.
pub fn config_path() -> PathBuf {
    std::env::var_os("KILN_REGISTRIES_CONF")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/kiln/registries.json"))
}

impl Options {
    /// The settings file's (docker's `daemon.json` keys: `insecure-registries`,
    /// `registry-mirrors`, and `certs-d` for extra certificate directories), plus docker's and
    /// podman's certificate directories.
    pub fn load() -> Result<Options, RegistryError> {
        let path = config_path();
        let mut opts = Options::default();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let bad = |reason: String| RegistryError::Config {
                    path: path.clone(),
                    reason,
                };
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
                let list = |key: &str| -> Result<Vec<String>, RegistryError> {
                    match &v[key] {
                        serde_json::Value::Null => Ok(Vec::new()),
                        serde_json::Value::Array(a) => a
                            .iter()
                            .map(|x| {
                                x.as_str()
                                    .map(str::to_string)
                                    .ok_or_else(|| bad(format!("{key}: expected strings")))
                            })
                            .collect(),
                        _ => Err(bad(format!("{key}: expected a list of strings"))),
                    }
                };
                if !v["insecure-registries"].is_null() {
                    opts.insecure = list("insecure-registries")?;
                }
                opts.mirrors = list("registry-mirrors")?;
                opts.certs_dirs = list("certs-d")?.into_iter().map(PathBuf::from).collect();
                let number =
                    |v: &serde_json::Value, key: &str| -> Result<Option<u64>, RegistryError> {
                        match v {
                            serde_json::Value::Null => Ok(None),
                            v => v
                                .as_u64()
                                .map(Some)
                                .ok_or_else(|| bad(format!("{key}: expected a whole number"))),
                        }
                    };
                if let Some(n) = number(&v["max-layer-expansion"], "max-layer-expansion")? {
                    opts.max_expansion = n;
                }
                let t = &v["timeouts"];
                if !t.is_null() && !t.is_object() {
                    return Err(bad("timeouts: expected an object".into()));
                }
                let secs = |key: &str| -> Result<Option<std::time::Duration>, RegistryError> {
                    let name = format!("timeouts.{key}");
                    Ok(match number(&t[key], &name)? {
                        Some(0) => return Err(bad(format!("{name}: must be at least 1 second"))),
                        n => n.map(std::time::Duration::from_secs),
                    })
                };
                if let Some(d) = secs("connect")? {
                    opts.timeouts.connect = d;
                }
                if let Some(d) = secs("request")? {
                    opts.timeouts.request = d;
                }
                if let Some(n) = number(&t["min-speed"], "timeouts.min-speed")? {
                    opts.timeouts.min_speed = n.max(1);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(RegistryError::Config {
                    path,
                    reason: e.to_string(),
                });
            }
        }
        opts.certs_dirs.push(PathBuf::from("/etc/docker/certs.d"));
        opts.certs_dirs
            .push(PathBuf::from("/etc/containers/certs.d"));
        if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            opts.certs_dirs
                .push(PathBuf::from(h).join(".config/containers/certs.d"));
        }
        Ok(opts)
    }

    /// Whether `registry` (`host[:port]`) may be used without verified TLS.
    pub fn is_insecure(&self, registry: &str) -> bool {
        let host = match registry.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => registry,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: Option<std::net::Ipv4Addr> = host.parse().ok();
        self.insecure.iter().any(|entry| {
            if entry == registry || entry == host {
                return true;
            }
            match (entry.split_once('/'), ip) {
                (Some((net, bits)), Some(ip)) => {
                    let (Ok(net), Ok(bits)) =
                        (net.parse::<std::net::Ipv4Addr>(), bits.parse::<u32>())
                    else {
                        return false;
                    };
                    let mask = if bits == 0 {
                        0
                    } else {
                        u32::MAX << (32 - bits.min(32))
                    };
                    u32::from(ip) & mask == u32::from(net) & mask
                }
                _ => false,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_reference_rules() {
        let t = Target::parse("alpine").unwrap();
        assert_eq!(t.to_string(), "docker.io/library/alpine:latest");
        let t = Target::parse("team/app:1").unwrap();
        assert_eq!(
            (t.registry.as_str(), t.repo.as_str()),
            ("docker.io", "team/app")
        );
        let t = Target::parse("localhost:5000/busybox").unwrap();
        assert_eq!(t.to_string(), "localhost:5000/busybox:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let t = Target::parse(&format!("ghcr.io/o/r:v1@{d}")).unwrap();
        assert_eq!(t.reference(), d);
        assert_eq!(t.tag.as_deref(), Some("v1"));
        let t = Target::parse(&format!("r@{d}")).unwrap();
        assert_eq!(t.tag, None);
        assert_eq!(t.scope(true), "repository:library/r:pull,push");
    }

    #[test]
    fn insecure_registries() {
        let mut o = Options::default();
        o.insecure
            .extend(["reg.example:5000".into(), "10.1.0.0/16".into()]);
        assert!(o.is_insecure("localhost:5000"));
        assert!(o.is_insecure("127.0.0.1:41234"));
        assert!(o.is_insecure("[::1]:5000"));
        assert!(o.is_insecure("reg.example:5000"));
        assert!(!o.is_insecure("reg.example:5001"));
        assert!(o.is_insecure("10.1.2.3:80"));
        assert!(!o.is_insecure("10.2.0.1"));
        assert!(!o.is_insecure("docker.io"));
        // A list of its own replaces the loopback default.
        let strict = Options {
            insecure: vec![],
            ..Options::default()
        };
        assert!(!strict.is_insecure("127.0.0.1:5000"));
        assert!(!strict.is_insecure("localhost:5000"));
    }
}
