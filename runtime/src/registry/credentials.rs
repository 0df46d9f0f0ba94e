//! Registry credentials where docker and podman keep them:
//! `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`), looked up as the docker CLI
//! does: `credHelpers[host]`, then `credsStore`, then `auths[host]`; then podman's auth file
//! (`$REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json`, else
//! `~/.config/containers/auth.json`). Helpers speak docker's credential-helper protocol:
//! `docker-credential-<name> get|store|erase`, the server on stdin, JSON on stdout; so ECR works
//! through `ecr-login`, GCR and ACR through theirs.
//!
//! `kiln login` stores where docker would: in the helper when one is configured for the host,
//! else base64 in `auths` of config.json, written whole to a temporary file of mode 0600 and
//! renamed over the old one. A secret never appears in an error message.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::RegistryError;

/// Docker Hub's key in config.json (what `docker login` writes).
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A user name and secret for one registry, and where they came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub secret: String,
    /// The secret is an OAuth2 refresh token (`identitytoken`, or a helper's `<token>` user).
    pub identity_token: bool,
    /// Where it was found, for messages: `credential helper "docker-credential-x"`, a file.
    pub source: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The key a registry's credentials are filed under: docker's for Docker Hub, else the host.
pub fn key_for(registry: &str) -> String {
    if is_docker_hub(registry) {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    }
}

pub(super) fn is_docker_hub(registry: &str) -> bool {
    matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// A config key as a host (`https://host/v1/` → `host`), as docker's `ConvertToHostname`.
fn hostname(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

fn same_registry(key: &str, registry: &str) -> bool {
    let h = hostname(key);
    h == registry || (is_docker_hub(registry) && is_docker_hub(h))
}

/// Where docker's config.json is.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    home().map(|h| h.join(".docker/config.json"))
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// podman's auth files, in its order.
fn podman_auth_paths() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    let mut out = Vec::new();
    if let Some(r) = std::env::var_os("XDG_RUNTIME_DIR").filter(|r| !r.is_empty()) {
        out.push(PathBuf::from(r).join("containers/auth.json"));
    }
    if let Some(h) = home() {
        out.push(h.join(".config/containers/auth.json"));
    }
    out
}

fn cred_err(path: &Path, reason: impl Into<String>) -> RegistryError {
    RegistryError::Credentials {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_json(path: &Path) -> Result<Option<Map<String, Value>>, RegistryError> {
    match std::fs::read(path) {
        Ok(b) => match serde_json::from_slice::<Value>(&b) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            Ok(_) => Err(cred_err(path, "not a JSON object")),
            Err(e) => Err(cred_err(path, format!("not valid JSON: {e}"))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(cred_err(path, e.to_string())),
    }
}

/// The helper config.json names for `registry`, if any: `credHelpers[host]`, else `credsStore`.
fn helper_for(config: &Map<String, Value>, registry: &str) -> Option<String> {
    if let Some(Value::Object(helpers)) = config.get("credHelpers") {
        for (k, v) in helpers {
            if same_registry(k, registry) {
                return v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
            }
        }
    }
    config
        .get("credsStore")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// An `auths` entry: `auth` (base64 `user:password`) or `identitytoken`.
fn from_auths(
    file: &Path,
    config: &Map<String, Value>,
    registry: &str,
) -> Result<Option<Credential>, RegistryError> {
    let Some(Value::Object(auths)) = config.get("auths") else {
        return Ok(None);
    };
    for (k, v) in auths {
        if !same_registry(k, registry) {
            continue;
        }
        let source = file.display().to_string();
        let (mut username, mut secret) = (String::new(), String::new());
        if let Some(a) = v
            .get("auth")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.trim())
                .map_err(|_| cred_err(file, format!("auths[{k:?}].auth is not base64")))?;
            let s = String::from_utf8(raw)
                .map_err(|_| cred_err(file, format!("auths[{k:?}].auth is not UTF-8")))?;
            let (u, p) = s
                .split_once(':')
                .ok_or_else(|| cred_err(file, format!("auths[{k:?}].auth is not user:password")))?;
            (username, secret) = (u.to_string(), p.to_string());
        }
        if let Some(t) = v
            .get("identitytoken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            return Ok(Some(Credential {
                username,
                secret: t.to_string(),
                identity_token: true,
                source,
            }));
        }
        if !username.is_empty() {
            return Ok(Some(Credential {
                username,
                secret,
                identity_token: false,
                source,
            }));
        }
    }
    Ok(None)
}

/// Whether `name` may complete `docker-credential-NAME`: a file name (no `/`), not `.` or
/// `..` parts, nothing a shell or PATH lookup could read otherwise.
fn valid_helper_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Runs `docker-credential-<helper> <verb>` with `input` on stdin.
fn run_helper(helper: &str, verb: &str, input: &[u8]) -> Result<Vec<u8>, RegistryError> {
    let program = format!("docker-credential-{helper}");
    let fail = |reason: String| RegistryError::Helper {
        helper: program.clone(),
        reason,
    };
    // A plain program name, looked up on PATH only: a name with `/` (`../../tmp/x`) would be
    // run relative to the current directory, which a config.json must not be able to choose.
    if !valid_helper_name(helper) {
        return Err(fail(
            "not a plain program name (only letters, digits, `.`, `_` and `-`; no `/`): \
             refused"
                .into(),
        ));
    }
    let mut child = Command::new(&program)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is reported by its status below.
        let _ = stdin.write_all(input);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    // Helpers print their error on stdout (the protocol) or stderr.
    let msg = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    })
    .trim()
    .to_string();
    Err(fail(format!("`{verb}` failed ({}): {msg}", out.status)))
}

/// The helper's answer to `get`; `None` when it has nothing for the server.
fn helper_get(helper: &str, registry: &str) -> Result<Option<Credential>, RegistryError> {
    let server = key_for(registry);
    let out = match run_helper(helper, "get", server.as_bytes()) {
        Ok(o) => o,
        // The protocol's answer for "nothing stored".
        Err(RegistryError::Helper { reason, .. })
            if reason.contains("credentials not found in native keychain") =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let v: Value = serde_json::from_slice(&out).map_err(|e| RegistryError::Helper {
        helper: format!("docker-credential-{helper}"),
        reason: format!("`get` printed no valid JSON: {e}"),
    })?;
    let username = v["Username"].as_str().unwrap_or_default().to_string();
    let secret = v["Secret"].as_str().unwrap_or_default().to_string();
    if username.is_empty() && secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credential {
        identity_token: username == "<token>",
        username,
        secret,
        source: format!("credential helper docker-credential-{helper}"),
    }))
}

/// The credentials for `registry`, from the first source that has some; `None`: anonymous.
pub fn lookup(registry: &str) -> Result<Option<Credential>, RegistryError> {
    if let Some(path) = docker_config_path() {
        if let Some(config) = read_json(&path)? {
            if let Some(helper) = helper_for(&config, registry) {
                if let Some(c) = helper_get(&helper, registry)? {
                    return Ok(Some(c));
                }
            }
            if let Some(c) = from_auths(&path, &config, registry)? {
                return Ok(Some(c));
            }
        }
    }
    for path in podman_auth_paths() {
        if let Some(config) = read_json(&path)? {
            if let Some(c) = from_auths(&path, &config, registry)? {
                return Ok(Some(c));
            }
        }
    }
    Ok(None)
}

/// Writes `config` to `path` as docker does: whole, mode 0600, renamed into place.
fn write_config(path: &Path, config: &Map<String, Value>) -> Result<(), RegistryError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| cred_err(dir, e.to_string()))?;
    let tmp = dir.join(format!(".config.json.kiln-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut text = serde_json::to_vec_pretty(&Value::Object(config.clone()))?;
        text.push(b'\n');
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| cred_err(path, e.to_string()))
}

/// Stores credentials for `registry` where docker would; returns where they went.
pub fn store(registry: &str, username: &str, secret: &str) -> Result<String, RegistryError> {
    let path = docker_config_path().ok_or_else(|| {
        cred_err(
            Path::new("~/.docker/config.json"),
            "neither $DOCKER_CONFIG nor $HOME is set",
        )
    })?;
    let mut config = read_json(&path)?.unwrap_or_default();
    let key = key_for(registry);
    if let Some(helper) = helper_for(&config, registry) {
        let input = serde_json::json!({"ServerURL": key, "Username": username, "Secret": secret});
        run_helper(&helper, "store", input.to_string().as_bytes())?;
        return Ok(format!("credential helper docker-credential-{helper}"));
    }
    let auths = config
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if !auths.is_object() {
        *auths = Value::Object(Map::new());
    }
    if let Value::Object(auths) = auths {
        auths.retain(|k, _| !same_registry(k, registry));
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{secret}"));
        auths.insert(key, serde_json::json!({ "auth": auth }));
    }
    write_config(&path, &config)?;
    Ok(path.display().to_string())
}

/// Removes stored credentials for `registry`; false when there were none.
pub fn erase(registry: &str) -> Result<bool, RegistryError> {
    let Some(path) = docker_config_path() else {
        return Ok(false);
    };
    let Some(mut config) = read_json(&path)? else {
        return Ok(false);
    };
    let mut removed = false;
    if let Some(helper) = helper_for(&config, registry) {
        removed |= run_helper(&helper, "erase", key_for(registry).as_bytes()).is_ok();
    }
    if let Some(Value::Object(auths)) = config.get_mut("auths") {
        let before = auths.len();
        auths.retain(|k, _| !same_registry(k, registry));
        if auths.len() != before {
            removed = true;
            write_config(&path, &config)?;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_as_docker_converts_them() {
        assert!(same_registry("https://index.docker.io/v1/", "docker.io"));
        assert!(same_registry("registry-1.docker.io", "docker.io"));
        assert!(same_registry(
            "https://localhost:5000/v2/",
            "localhost:5000"
        ));
        assert!(same_registry("localhost:5000", "localhost:5000"));
        assert!(!same_registry("localhost:5001", "localhost:5000"));
        assert_eq!(key_for("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(key_for("r.example:5000"), "r.example:5000");
    }

    #[test]
    fn auths_entries() {
        let file = Path::new("/x/config.json");
        let config: Map<String, Value> = serde_json::from_str(
            r#"{"auths": {"https://r.example/v1/": {"auth": "dXNlcjpwYTpzcw=="},
                          "t.example": {"identitytoken": "tok"},
                          "bad.example": {"auth": "!!"}}}"#,
        )
        .unwrap();
        let c = from_auths(file, &config, "r.example").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.secret.as_str()), ("user", "pa:ss"));
        assert!(!c.identity_token);
        let t = from_auths(file, &config, "t.example").unwrap().unwrap();
        assert!(t.identity_token && t.secret == "tok");
        assert!(from_auths(file, &config, "none.example").unwrap().is_none());
        let e = from_auths(file, &config, "bad.example")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not base64") && !e.contains("!!"), "{e}");
        // The secret never shows in Debug output.
        assert!(!format!("{c:?}").contains("pa:ss"));
    }

    #[test]
    fn helper_names_are_plain_program_names() {
        for good in [
            "ecr-login",
            "desktop",
            "pass",
            "osxkeychain",
            "gcloud",
            "acr_env.1",
        ] {
            assert!(valid_helper_name(good), "{good}");
        }
        for bad in ["", "../../tmp/x", "a/b", "..", ".hidden", "x y", "x;rm"] {
            assert!(!valid_helper_name(bad), "{bad}");
        }
        let e = run_helper("../../../tmp/evil", "get", b"").unwrap_err();
        assert!(e.to_string().contains("not a plain program name"), "{e}");
    }

    #[test]
    fn helper_order() {
        let config: Map<String, Value> = serde_json::from_str(
            r#"{"credsStore": "desktop", "credHelpers": {"1.dkr.ecr.us-east-1.amazonaws.com": "ecr-login"}}"#,
        )
        .unwrap();
        assert_eq!(
            helper_for(&config, "1.dkr.ecr.us-east-1.amazonaws.com").as_deref(),
            Some("ecr-login")
        );
        assert_eq!(helper_for(&config, "docker.io").as_deref(), Some("desktop"));
    }
}
