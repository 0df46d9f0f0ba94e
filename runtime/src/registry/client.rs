//! One registry, spoken to over HTTP(S) (ureq, synchronous: kiln's parallelism is threads).
//!
//! [`Client::connect`] pings `/v2/` once: that picks the scheme (HTTPS; plain HTTP only for a
//! registry that is insecure-allowed, after HTTPS failed, as docker does) and learns the auth
//! challenge, so later requests carry credentials from the start instead of paying a 401 each.
//! TLS trusts the system's roots plus the registry's own CA in docker's
//! `certs.d/HOST[:PORT]/*.crt`, and presents the client certificate `*.cert` + `*.key` found
//! there. Transient failures (connection errors, 500/502/503/504) are retried with backoff;
//! 429 is reported with the server's `Retry-After`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use base64::Engine as _;
use ureq::{
    Agent,
    http::{Method, Response},
    tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig},
};

use super::{
    Options, RegistryError,
    auth::{self, Challenge, Token},
    credentials::Credential,
};

/// What a request sends.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    None,
    Bytes(&'a [u8]),
    /// A file, opened again for every attempt (an upload can be retried whole).
    File(&'a Path),
}

/// How many times a transient failure is tried again.
const RETRIES: u32 = 3;

/// A connection to one registry.
#[derive(Debug)]
pub struct Client {
    /// The registry as references name it: `docker.io`, `localhost:5000`.
    pub registry: String,
    /// `https://registry-1.docker.io`.
    base: String,
    agent: Agent,
    credential: Option<Credential>,
    challenge: Mutex<Challenge>,
    /// Bearer tokens by scope set.
    tokens: Mutex<BTreeMap<String, Token>>,
    /// Which roots verify the server, for TLS errors.
    trust: String,
    timeouts: super::Timeouts,
}

/// The host the API of `registry` is served from.
fn api_host(registry: &str) -> &str {
    if super::credentials::is_docker_hub(registry) {
        "registry-1.docker.io"
    } else {
        registry
    }
}

fn read_pem_certs(path: &Path) -> Result<Vec<Certificate<'static>>, RegistryError> {
    let bytes = std::fs::read(path).map_err(|e| RegistryError::Tls {
        registry: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(&bytes) {
        if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
            out.push(c);
        }
    }
    Ok(out)
}

/// The system's CA bundle (Debian's, Fedora's, Alpine's paths).
fn system_roots() -> Option<(Vec<Certificate<'static>>, PathBuf)> {
    for p in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ] {
        let p = Path::new(p);
        if let Ok(certs) = read_pem_certs(p) {
            if !certs.is_empty() {
                return Some((certs, p.to_path_buf()));
            }
        }
    }
    None
}

/// The TLS configuration for `host`: roots, its certs.d CA and client certificate.
fn tls_for(host: &str, opts: &Options, verify: bool) -> Result<(TlsConfig, String), RegistryError> {
    let mut roots = Vec::new();
    let mut trust = Vec::new();
    match system_roots() {
        Some((certs, path)) => {
            roots.extend(certs);
            trust.push(format!("system roots {}", path.display()));
        }
        None => trust.push("no system CA bundle found".to_string()),
    }
    let mut client = None;
    for dir in &opts.certs_dirs {
        let dir = dir.join(host.replace(['[', ']'], ""));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for p in names {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
            match ext {
                "crt" => {
                    roots.extend(read_pem_certs(&p)?);
                    trust.push(format!("CA {}", p.display()));
                }
                "cert" => {
                    let key = p.with_extension("key");
                    let tls_err = |reason: String| RegistryError::Tls {
                        registry: host.to_string(),
                        reason,
                    };
                    let chain = read_pem_certs(&p)?;
                    let key_pem = std::fs::read(&key).map_err(|e| {
                        tls_err(format!(
                            "client certificate {}: key {}: {e}",
                            p.display(),
                            key.display()
                        ))
                    })?;
                    let key = PrivateKey::from_pem(&key_pem)
                        .map_err(|e| tls_err(format!("key {}: {e}", key.display())))?;
                    client = Some(ClientCert::new_with_certs(&chain, key));
                }
                _ => {}
            }
        }
    }
    let roots = if roots.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::new_with_certs(&roots)
    };
    let tls = TlsConfig::builder()
        .root_certs(roots)
        .client_cert(client)
        .disable_verification(!verify)
        .build();
    let trust = if verify {
        trust.join(", ")
    } else {
        "none: the registry is insecure-allowed, its certificate is not verified".to_string()
    };
    Ok((tls, trust))
}

fn agent(tls: TlsConfig, timeouts: &super::Timeouts) -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        // Blobs are hashed as they arrive: never a transparently decoded body.
        .accept_encoding("identity")
        .timeout_connect(Some(timeouts.connect))
        .timeout_per_read(Some(timeouts.request))
        .timeout_per_write(Some(timeouts.request))
        .max_idle_connections_per_host(8)
        .build()
        .new_agent()
}

/// A ureq failure as kiln reports it.
fn transport_error(registry: &str, trust: &str, e: ureq::Error) -> RegistryError {
    let text = e.to_string();
    let tls = matches!(e, ureq::Error::Tls(_) | ureq::Error::Rustls(_))
        || text.contains("certificate")
        || text.contains("tls");
    if tls {
        RegistryError::Tls {
            registry: registry.to_string(),
            reason: format!("{text} (trusted: {trust})"),
        }
    } else {
        RegistryError::Network {
            registry: registry.to_string(),
            reason: text,
        }
    }
}

fn is_transient_status(s: u16) -> bool {
    matches!(s, 500 | 502 | 503 | 504)
}

/// The origin (scheme, host, port) of an absolute `http`/`https` URL: where credentials given
/// for a registry may go. `None` for anything else.
fn origin(url: &str) -> Option<(String, String, u16)> {
    let uri: ureq::http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let host = uri.host()?.to_ascii_lowercase();
    Some((scheme, host, uri.port_u16().unwrap_or(default)))
}

/// A response header as text.
pub(super) fn header(resp: &Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl Client {
    /// Connects to `registry` with the credentials kiln finds for it.
    pub fn connect(registry: &str, opts: &Options) -> Result<Client, RegistryError> {
        let credential = super::credentials::lookup(registry)?;
        Self::connect_with(registry, opts, credential)
    }

    /// Connects to `registry` (pinging `/v2/`) with `credential`.
    pub fn connect_with(
        registry: &str,
        opts: &Options,
        credential: Option<Credential>,
    ) -> Result<Client, RegistryError> {
        let host = api_host(registry);
        let insecure = opts.is_insecure(registry);
        let (tls, trust) = tls_for(registry, opts, !insecure)?;
        let mut client = Client {
            registry: registry.to_string(),
            base: format!("https://{host}"),
            agent: agent(tls, &opts.timeouts),
            credential,
            challenge: Mutex::new(Challenge::None),
            tokens: Mutex::new(BTreeMap::new()),
            trust,
            timeouts: opts.timeouts,
        };
        let challenge = match client.ping() {
            Ok(c) => c,
            Err(e) if insecure && !matches!(e, RegistryError::Status { .. }) => {
                // docker's order for an insecure registry: HTTPS first, then plain HTTP.
                client.base = format!("http://{host}");
                client.ping()?
            }
            Err(e) => return Err(e),
        };
        *client.challenge.lock().unwrap_or_else(|p| p.into_inner()) = challenge;
        Ok(client)
    }

    /// `GET /v2/`: the challenge the registry answers with.
    fn ping(&self) -> Result<Challenge, RegistryError> {
        let url = format!("{}/v2/", self.base);
        let resp = self.attempt(&Method::GET, &url, None, &[], (Payload::None, 0))?;
        match resp.status().as_u16() {
            401 => Ok(header(&resp, "www-authenticate")
                .map(|h| auth::parse_challenge(&h))
                .unwrap_or(Challenge::Basic)),
            _ => Ok(Challenge::None),
        }
    }

    /// The credential's source, for messages.
    pub fn credential_source(&self) -> String {
        match &self.credential {
            Some(c) => format!("credentials for {:?} from {}", c.username, c.source),
            None => "no credentials (anonymous)".to_string(),
        }
    }

    /// `{base}/v2/{repo}/{rest}`.
    pub fn url(&self, repo: &str, rest: &str) -> String {
        format!("{}/v2/{repo}/{rest}", self.base)
    }

    /// A location a registry returned (relative or absolute) as an absolute URL.
    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/{location}", self.base)
        }
    }

    /// Whether `url` (taken from a registry's answer: an upload location, a token realm) is
    /// on the registry's own origin, where its credentials may go. A URL that would take kiln
    /// from `https` to plain `http`, or to another scheme, is refused outright: a registry
    /// cannot downgrade the transport it was reached over.
    fn same_origin(&self, url: &str) -> Result<bool, RegistryError> {
        let ours = origin(&self.base);
        let theirs = origin(url).ok_or_else(|| RegistryError::Refused {
            what: format!("registry {}", self.registry),
            reason: format!("it sent kiln to {url:?}, which is not an http(s) URL"),
        })?;
        if ours.as_ref().is_some_and(|o| o.0 == "https") && theirs.0 != "https" {
            return Err(RegistryError::Refused {
                what: format!("registry {}", self.registry),
                reason: format!(
                    "it sent kiln from https to plain http ({url}); refused, credentials and \
                     content would travel in clear"
                ),
            });
        }
        Ok(ours.as_ref() == Some(&theirs))
    }

    fn basic_header(&self) -> Option<String> {
        let c = self.credential.as_ref().filter(|c| !c.identity_token)?;
        let raw = format!("{}:{}", c.username, c.secret);
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
    }

    /// A token for `scopes` from the Bearer challenge's realm (for `service`), cached until it
    /// expires unless `fresh`.
    fn token(
        &self,
        (realm, service): (String, Option<String>),
        scopes: &[String],
        fresh: bool,
    ) -> Result<String, RegistryError> {
        // The realm is the registry's token server and may be another host (docker.io's is
        // auth.docker.io): it receives the Basic credentials, as docker and containerd send
        // them, but never over a transport weaker than the registry's.
        self.same_origin(&realm)?;
        let key = scopes.join(" ");
        if !fresh {
            let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = tokens.get(&key) {
                if t.until > std::time::Instant::now() {
                    return Ok(t.value.clone());
                }
            }
        }
        let mut query = Vec::new();
        if let Some(s) = &service {
            query.push(format!("service={}", auth::query_escape(s)));
        }
        for s in scopes {
            query.push(format!("scope={}", auth::query_escape(s)));
        }
        let resp = match &self.credential {
            // An identity token is an OAuth2 refresh token: POST it to the realm.
            Some(c) if c.identity_token => {
                let mut form = vec![
                    "grant_type=refresh_token".to_string(),
                    format!("refresh_token={}", auth::query_escape(&c.secret)),
                    "client_id=kiln".to_string(),
                ];
                form.extend(query);
                let body = form.join("&");
                self.attempt_with_retry(
                    &Method::POST,
                    &realm,
                    None,
                    &[("content-type", "application/x-www-form-urlencoded")],
                    (Payload::Bytes(body.as_bytes()), 0),
                )?
            }
            _ => {
                let sep = if realm.contains('?') { '&' } else { '?' };
                let url = if query.is_empty() {
                    realm.clone()
                } else {
                    format!("{realm}{sep}{}", query.join("&"))
                };
                let auth = self.basic_header();
                self.attempt_with_retry(
                    &Method::GET,
                    &url,
                    auth.as_deref(),
                    &[],
                    (Payload::None, 0),
                )?
            }
        };
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(RegistryError::Denied {
                registry: self.registry.clone(),
                what: format!("the token server {realm} refused the credentials"),
                credentials: self.credential_source(),
            });
        }
        if status != 200 {
            return Err(RegistryError::Status {
                url: realm,
                status,
                message: "the token server did not issue a token".into(),
            });
        }
        let body = read_small(resp, &realm)?;
        let token = auth::parse_token(&body).ok_or_else(|| RegistryError::Status {
            url: realm.clone(),
            status,
            message: "the token server's answer has no token".into(),
        })?;
        let value = token.value.clone();
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, token);
        Ok(value)
    }

    /// The `Authorization` header for `scopes`, per the registry's challenge.
    fn authorization(
        &self,
        scopes: &[String],
        fresh: bool,
    ) -> Result<Option<String>, RegistryError> {
        let challenge = self
            .challenge
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(match challenge {
            Challenge::None => None,
            Challenge::Basic => self.basic_header(),
            Challenge::Bearer { realm, service } => Some(format!(
                "Bearer {}",
                self.token((realm, service), scopes, fresh)?
            )),
        })
    }

    /// One request, no retry, with its whole-request deadline: [`super::Timeouts::deadline`]
    /// of `body` bytes (what the answer's body is expected to hold) plus what is sent.
    fn attempt(
        &self,
        method: &Method,
        url: &str,
        authorization: Option<&str>,
        headers: &[(&str, &str)],
        (payload, body): (Payload<'_>, u64),
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let mut b = ureq::http::Request::builder()
            .method(method.clone())
            .uri(url);
        if let Some(a) = authorization {
            b = b.header("authorization", a);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let bad = |e: ureq::http::Error| RegistryError::Network {
            registry: self.registry.clone(),
            reason: format!("{url}: {e}"),
        };
        let deadline = |sent: u64| Some(self.timeouts.deadline(body.saturating_add(sent)));
        let result = match payload {
            Payload::None => {
                let r = self.agent.configure_request(b.body(()).map_err(bad)?);
                self.agent.run(r.timeout_global(deadline(0)).build())
            }
            Payload::Bytes(bytes) => {
                let r = self.agent.configure_request(b.body(bytes).map_err(bad)?);
                self.agent
                    .run(r.timeout_global(deadline(bytes.len() as u64)).build())
            }
            Payload::File(path) => {
                let f = std::fs::File::open(path).map_err(|e| RegistryError::Local {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
                let len = f.metadata().map_or(0, |m| m.len());
                let r = self.agent.configure_request(b.body(f).map_err(bad)?);
                self.agent.run(r.timeout_global(deadline(len)).build())
            }
        };
        result.map_err(|e| match e {
            ureq::Error::Timeout(_) => self.timed_out(url),
            e => transport_error(&self.registry, &self.trust, e),
        })
    }

    /// A request that ran past its deadline.
    pub fn timed_out(&self, url: &str) -> RegistryError {
        RegistryError::Timeout {
            registry: self.registry.clone(),
            url: url.to_string(),
        }
    }

    /// [`Client::attempt`], tried again on transient failures with backoff.
    fn attempt_with_retry(
        &self,
        method: &Method,
        url: &str,
        authorization: Option<&str>,
        headers: &[(&str, &str)],
        payload: (Payload<'_>, u64),
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let mut n = 0;
        loop {
            let result = self.attempt(method, url, authorization, headers, payload);
            let transient = match &result {
                Ok(r) => is_transient_status(r.status().as_u16()),
                Err(RegistryError::Network { .. }) => true,
                Err(_) => false,
            };
            if !transient || n == RETRIES {
                return result;
            }
            std::thread::sleep(Duration::from_millis(250 << n));
            n += 1;
        }
    }

    /// A request with the credentials `scopes` need; a 401 fetches a fresh token (the
    /// registry's challenge may name a scope kiln did not ask for) and tries once more.
    pub fn call(
        &self,
        method: Method,
        url: &str,
        scopes: &[String],
        headers: &[(&str, &str)],
        payload: Payload<'_>,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        self.call_expecting(method, url, scopes, headers, payload, 0)
    }

    /// [`Client::call`] for an answer whose body holds `body` bytes (a blob): its deadline
    /// grows with them.
    pub fn call_expecting(
        &self,
        method: Method,
        url: &str,
        scopes: &[String],
        headers: &[(&str, &str)],
        payload: Payload<'_>,
        body: u64,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let payload = (payload, body);
        // Credentials (Basic or a token) go only to the origin they were given for; a URL a
        // registry named elsewhere (an upload location on another host) gets none, and its
        // 401 changes nothing here (distribution's and docker's rule: a token's scope is its
        // registry).
        if !self.same_origin(url)? {
            return self.attempt_with_retry(&method, url, None, headers, payload);
        }
        let auth = self.authorization(scopes, false)?;
        let resp = self.attempt_with_retry(&method, url, auth.as_deref(), headers, payload)?;
        if resp.status().as_u16() != 401 {
            return Ok(resp);
        }
        if let Some(h) = header(&resp, "www-authenticate") {
            let c = auth::parse_challenge(&h);
            *self.challenge.lock().unwrap_or_else(|p| p.into_inner()) = c;
        }
        let auth = self.authorization(scopes, true)?;
        self.attempt_with_retry(&method, url, auth.as_deref(), headers, payload)
    }

    /// The failure a non-success answer means, for `what` (`manifest x`, `blob y`).
    pub fn failure(&self, resp: Response<ureq::Body>, url: &str, what: &str) -> RegistryError {
        let status = resp.status().as_u16();
        let retry_after = header(&resp, "retry-after");
        let body = read_small(resp, url).unwrap_or_default();
        let message = registry_message(&body);
        match status {
            401 | 403 => RegistryError::Denied {
                registry: self.registry.clone(),
                what: format!("{what}: {}", message.as_deref().unwrap_or("access denied")),
                credentials: self.credential_source(),
            },
            404 => RegistryError::NotFound {
                what: what.to_string(),
                message: message.unwrap_or_else(|| "not found".into()),
            },
            429 => RegistryError::RateLimited {
                registry: self.registry.clone(),
                retry_after,
            },
            _ => RegistryError::Status {
                url: url.to_string(),
                status,
                message: message.unwrap_or_default(),
            },
        }
    }

    /// Checks the credentials: the ping's challenge answered with them.
    pub fn check_login(&self) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.base);
        let resp = self.call(Method::GET, &url, &[], &[], Payload::None)?;
        match resp.status().as_u16() {
            200 => Ok(()),
            _ => Err(self.failure(resp, &url, "login")),
        }
    }
}

/// Reads a small body (a manifest, an error, a token) whole, at most 4 MiB.
pub fn read_small(resp: Response<ureq::Body>, url: &str) -> Result<Vec<u8>, RegistryError> {
    resp.into_body()
        .into_with_config()
        .limit(4 << 20)
        .read_to_vec()
        .map_err(|e| RegistryError::Status {
            url: url.to_string(),
            status: 0,
            message: format!("cannot read the answer: {e}"),
        })
}

/// The first message of a distribution error body (`{"errors":[{"code","message"}]}`).
fn registry_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let e = v["errors"].as_array()?.first()?;
    let code = e["code"].as_str().unwrap_or_default().to_ascii_lowercase();
    let msg = e["message"].as_str().unwrap_or_default();
    Some(if code.is_empty() {
        msg.to_string()
    } else {
        format!("{}: {msg}", code.replace('_', " "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Client {
        Client {
            registry: "reg.example".into(),
            base: base.into(),
            agent: agent(TlsConfig::default(), &super::super::Timeouts::default()),
            credential: None,
            challenge: Mutex::new(Challenge::None),
            tokens: Mutex::new(BTreeMap::new()),
            trust: String::new(),
            timeouts: super::super::Timeouts::default(),
        }
    }

    #[test]
    fn credentials_stay_on_their_origin() {
        let c = client("https://reg.example");
        assert!(
            c.same_origin("https://reg.example/v2/x/blobs/uploads/1")
                .unwrap()
        );
        assert!(c.same_origin("https://REG.example:443/v2/").unwrap());
        // Another host or port: allowed, but without credentials.
        assert!(!c.same_origin("https://uploads.example/v2/").unwrap());
        assert!(!c.same_origin("https://reg.example:8443/v2/").unwrap());
        // A downgrade, or not http(s): refused.
        for bad in [
            "http://reg.example/v2/",
            "http://other/x",
            "ftp://reg.example/",
            "/rel",
        ] {
            assert!(c.same_origin(bad).is_err(), "{bad}");
        }
        // A plain-http registry (insecure-allowed) may name http or https on its origin only.
        let c = client("http://127.0.0.1:5000");
        assert!(c.same_origin("http://127.0.0.1:5000/upload").unwrap());
        assert!(!c.same_origin("http://127.0.0.1:5001/upload").unwrap());
        assert!(!c.same_origin("https://127.0.0.1:5000/upload").unwrap());
    }

    #[test]
    fn deadlines_grow_with_what_is_moved() {
        let t = super::super::Timeouts::default();
        assert_eq!(t.deadline(0), Duration::from_secs(60));
        assert_eq!(t.deadline(16 << 20), Duration::from_secs(60 + 1024));
    }
}
