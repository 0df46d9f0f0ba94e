//! `RUN --mount=` specifications (BuildKit `instructions/commands_runmount.go` rules): a CSV of
//! `key=value` fields; types bind (default), cache, tmpfs, secret, ssh.
//!
//! The typed layer checks a mount with [`Mount::check`] (values holding `$` are left for later);
//! the builder expands variables in the raw text and calls [`Mount::parse`] on the result.

use serde::Serialize;

use super::values::parse_ram_size;
use crate::suggest::with_suggestion;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// One `--mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountType,
    pub target: Option<String>,
    pub source: Option<String>,
    pub from: Option<String>,
    pub id: Option<String>,
    pub sharing: Option<Sharing>,
    pub readonly: bool,
    pub required: bool,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub env: Option<String>,
}

const KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// Splits one CSV record as Go's `encoding/csv` does (quoted fields, `""` inside quotes).
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    out.push(field);
                    return Ok(out);
                }
                Some(',') => out.push(field),
                Some(_) => return Err("extraneous or missing \" in quoted-field".into()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push(field);
                        return Ok(out);
                    }
                    Some(',') => break,
                    Some('"') => return Err("bare \" in non-quoted-field".into()),
                    Some(c) => field.push(c),
                }
            }
            out.push(field);
        }
    }
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid value for {key}: {v}")),
    }
}

impl Mount {
    /// Parses a fully expanded mount specification.
    pub fn parse(spec: &str) -> Result<Mount, String> {
        Self::parse_with(spec, false)
    }

    /// Validates a specification as written: values holding `$` are kept for build time.
    pub fn check(spec: &str) -> Result<Mount, String> {
        Self::parse_with(spec, true)
    }

    fn parse_with(spec: &str, defer_vars: bool) -> Result<Mount, String> {
        let fields = csv_fields(spec).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
        let mut m = Mount {
            kind: MountType::Bind,
            target: None,
            source: None,
            from: None,
            id: None,
            sharing: None,
            readonly: false,
            required: false,
            mode: None,
            uid: None,
            gid: None,
            size: None,
            env: None,
        };
        let mut ro_auto = true;
        for field in fields.iter().filter(|f| !f.is_empty()) {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
                None => (field.to_ascii_lowercase(), None),
            };
            let Some(value) = value else {
                match key.as_str() {
                    "readonly" | "ro" => {
                        m.readonly = true;
                        ro_auto = false;
                    }
                    "readwrite" | "rw" => {
                        m.readonly = false;
                        ro_auto = false;
                    }
                    "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                        m.required = true;
                    }
                    "required" => {
                        return Err(format!(
                            "unexpected key '{key}' for mount type '{}'",
                            m.kind.as_str()
                        ));
                    }
                    _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
                }
                continue;
            };
            if key == "from" && value.contains('$') {
                return Err(
                    "'from' doesn't support variable expansion, define alias stage instead".into(),
                );
            }
            if defer_vars && value.contains('$') {
                // Expanded by the builder; keep string values, validate typed ones later.
                match key.as_str() {
                    "target" | "dst" | "destination" => m.target = Some(value.to_string()),
                    "source" | "src" => m.source = Some(value.to_string()),
                    "id" => m.id = Some(value.to_string()),
                    "env" => m.env = Some(value.to_string()),
                    k if KEYS.contains(&k) => {}
                    _ => return Err(unexpected_key(&key, field)),
                }
                continue;
            }
            match key.as_str() {
                "type" => {
                    m.kind = match value.to_ascii_lowercase().as_str() {
                        "bind" => MountType::Bind,
                        "cache" => MountType::Cache,
                        "tmpfs" => MountType::Tmpfs,
                        "secret" => MountType::Secret,
                        "ssh" => MountType::Ssh,
                        _ => {
                            return Err(with_suggestion(
                                format!("unsupported mount type {value:?}"),
                                value,
                                &["bind", "cache", "tmpfs", "secret", "ssh"],
                            ));
                        }
                    }
                }
                "id" => m.id = Some(value.to_string()),
                "sharing" => {
                    m.sharing = match value.to_ascii_lowercase().as_str() {
                        "" => None,
                        "shared" => Some(Sharing::Shared),
                        "private" => Some(Sharing::Private),
                        "locked" => Some(Sharing::Locked),
                        _ => return Err(format!("unsupported sharing value {value:?}")),
                    }
                }
                "from" => m.from = Some(value.to_string()),
                "target" | "dst" | "destination" => m.target = Some(value.to_string()),
                "source" | "src" => m.source = Some(value.to_string()),
                "readonly" | "ro" => {
                    m.readonly = parse_bool(&key, value)?;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = !parse_bool(&key, value)?;
                    ro_auto = false;
                }
                "required" => {
                    if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                        return Err(format!(
                            "unexpected key '{key}' for mount type '{}'",
                            m.kind.as_str()
                        ));
                    }
                    m.required = parse_bool(&key, value)?;
                }
                "size" => {
                    if m.kind != MountType::Tmpfs {
                        return Err(format!(
                            "unexpected key '{key}' for mount type '{}'",
                            m.kind.as_str()
                        ));
                    }
                    m.size = Some(
                        parse_ram_size(value)
                            .ok_or_else(|| format!("invalid value for {key}: {value}"))?,
                    );
                }
                "mode" => {
                    m.mode = Some(
                        u32::from_str_radix(value, 8)
                            .map_err(|_| format!("invalid value {value} for mode"))?,
                    );
                }
                "uid" | "gid" => {
                    let id: u32 = value
                        .parse()
                        .map_err(|_| format!("invalid value {value} for {key}"))?;
                    if key == "uid" {
                        m.uid = Some(id);
                    } else {
                        m.gid = Some(id);
                    }
                }
                "env" => m.env = Some(value.to_string()),
                _ => return Err(unexpected_key(&key, field)),
            }
        }
        let file_info = matches!(
            m.kind,
            MountType::Secret | MountType::Ssh | MountType::Cache
        );
        if !file_info {
            for (set, what) in [
                (m.mode.is_some(), "mode"),
                (m.uid.is_some(), "uid"),
                (m.gid.is_some(), "gid"),
            ] {
                if set {
                    return Err(format!(
                        "{what} not allowed for {:?} type mounts",
                        m.kind.as_str()
                    ));
                }
            }
        }
        if ro_auto {
            m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
        }
        if m.sharing.is_some() && m.kind != MountType::Cache {
            return Err(format!(
                "invalid cache sharing set for {} mount",
                m.kind.as_str()
            ));
        }
        match m.kind {
            MountType::Secret => {
                if m.from.is_some() {
                    return Err("secret mount should not have a from".into());
                }
                if m.source.is_none() && m.target.is_none() && m.id.is_none() && m.env.is_none() {
                    return Err("one of source, target required".into());
                }
                if m.source.is_some() && m.id.is_some() {
                    return Err("both source and id can't be set".into());
                }
            }
            MountType::Ssh => {}
            // No target: the working directory, as BuildKit's `convert_runmount.go` resolves a
            // missing or relative one (a target that is then `/` is refused at build time).
            MountType::Bind | MountType::Cache | MountType::Tmpfs => {}
        }
        Ok(m)
    }
}

fn unexpected_key(key: &str, field: &str) -> String {
    with_suggestion(format!("unexpected key '{key}' in '{field}'"), key, &KEYS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_mount() {
        let m =
            Mount::parse("type=cache,target=/root/.cache,sharing=locked,id=pip,mode=0700").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.sharing, Some(Sharing::Locked));
        assert_eq!(m.mode, Some(0o700));
        assert!(!m.readonly);
    }

    #[test]
    fn bind_is_readonly_by_default_and_rw_flips_it() {
        assert!(Mount::parse("target=/src").unwrap().readonly);
        assert!(!Mount::parse("target=/src,rw").unwrap().readonly);
    }

    #[test]
    fn quoted_csv() {
        let m = Mount::parse(r#"type=bind,"target=/a,b",source=x"#).unwrap();
        assert_eq!(m.target.as_deref(), Some("/a,b"));
    }

    #[test]
    fn errors() {
        assert!(
            Mount::parse("type=cahce,target=/x")
                .unwrap_err()
                .contains("did you mean cache")
        );
        assert!(
            Mount::parse("type=bind,target=/x,uid=1")
                .unwrap_err()
                .contains("uid not allowed")
        );
        assert_eq!(Mount::parse("from=stage").unwrap().target, None);
        assert!(
            Mount::parse("type=secret,from=x,id=a")
                .unwrap_err()
                .contains("from")
        );
        assert!(
            Mount::parse("target=/x,trget=/y")
                .unwrap_err()
                .contains("unexpected key 'trget'")
        );
        assert!(Mount::check("type=cache,target=/x,from=$S").is_err());
        assert!(Mount::check("type=cache,target=$T,uid=$U").is_ok());
    }
}
