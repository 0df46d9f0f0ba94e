//! `RUN --mount`: what each mount adds to the step's cache key
//! ([`plan`]) and the mounts themselves ([`prepare`], only when the step runs).
//!
//! - bind: a path of the context, a stage, an image or a named context, on an overlay with a
//!   throw-away upper directory (read-only unless `rw`; writes are discarded). The key sees the
//!   selected files' content digests (context) or the source stage's key.
//! - cache: a directory of the store (`cache-mounts/`) kept across builds; `sharing` decides
//!   what concurrent steps see (shared, locked, private). Never part of a key beyond its options.
//! - tmpfs: a fresh tmpfs.
//! - secret: `kiln build --secret`'s value as a file on a memory-only tmpfs, or as an
//!   environment variable: never in a layer, the key, the history or the logs.
//! - ssh: `kiln build --ssh`'s agent socket, relayed through a socket of the step's own;
//!   `SSH_AUTH_SOCK` names the first.

mod prepare;

pub(super) use prepare::prepare;
pub(crate) use prepare::{cache_mount_name, make_cache_mount};

use std::{collections::BTreeMap, path::PathBuf};

use kiln_parser::instruction::{
    Instruction, Run,
    mount::{Mount as Spec, MountType, Sharing},
};
use kiln_runtime::digest::Digest;

use super::{
    BuildError, Ctx, StageState,
    copy::{self},
    short,
};

/// Where `kiln build --secret` takes a secret's value from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// Parses `kiln build --secret` (buildx's syntax): `id=ID,src=FILE` (also `source=`),
/// `id=ID,env=VAR`, `type=file|env`; `id=ID` alone takes the environment variable `ID` when
/// it is set, else the file `ID`.
pub fn parse_secret(spec: &str) -> Result<(String, SecretSource), String> {
    let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(v.to_string()),
            Some(("env", v)) => env = Some(v.to_string()),
            Some(("type", v @ ("file" | "env"))) => kind = Some(v.to_string()),
            _ => {
                return Err(format!(
                    "--secret {spec}: unexpected {part:?} (expected id=, src=, env= or type=file|env)"
                ));
            }
        }
    }
    let id = id
        .or_else(|| env.clone())
        .or_else(|| {
            src.as_deref()
                .map(|s| s.rsplit('/').next().unwrap_or(s).to_string())
        })
        .filter(|i| !i.is_empty())
        .ok_or_else(|| format!("--secret {spec}: no id"))?;
    let source = match (kind.as_deref(), src, env) {
        (_, Some(_), Some(_)) => return Err(format!("--secret {spec}: both src= and env=")),
        (Some("env"), Some(v), None) | (_, None, Some(v)) => SecretSource::Env(v),
        (_, Some(f), None) => SecretSource::File(PathBuf::from(f)),
        (Some("env"), None, None) => SecretSource::Env(id.clone()),
        (Some(_), None, None) => SecretSource::File(PathBuf::from(&id)),
        (None, None, None) if std::env::var_os(&id).is_some() => SecretSource::Env(id.clone()),
        (None, None, None) => SecretSource::File(PathBuf::from(&id)),
    };
    // Up front, as BuildKit does: a secret file that is not there fails the build before
    // anything runs, whether a step uses it or not.
    if let SecretSource::File(f) = &source {
        std::fs::metadata(f).map_err(|e| format!("--secret {spec}: {}: {e}", f.display()))?;
    }
    Ok((id, source))
}

/// Parses `kiln build --ssh`: `ID` (or `default`) takes `$SSH_AUTH_SOCK`, `ID=SOCKET` names
/// an agent's socket. Key files are refused: kiln forwards agents, it is not one.
pub fn parse_ssh(spec: &str) -> Result<(String, PathBuf), String> {
    use std::os::unix::fs::FileTypeExt;
    let (id, path) = match spec.split_once('=') {
        Some((id, p)) => (id.to_string(), PathBuf::from(p)),
        None => match std::env::var_os("SSH_AUTH_SOCK") {
            Some(p) => (spec.to_string(), PathBuf::from(p)),
            None => return Err(format!("--ssh {spec}: SSH_AUTH_SOCK is not set")),
        },
    };
    if id.is_empty() || path.as_os_str().is_empty() || path.to_string_lossy().contains(',') {
        return Err(format!("--ssh {spec}: expected ID or ID=SOCKET"));
    }
    match std::fs::metadata(&path) {
        Ok(m) if m.file_type().is_socket() => Ok((id, path)),
        Ok(_) => Err(format!(
            "--ssh {spec}: {} is not a socket (key files are not supported: add the key to an \
             ssh-agent and pass its socket)",
            path.display()
        )),
        Err(e) => Err(format!("--ssh {spec}: {}: {e}", path.display())),
    }
}

/// One planned mount: what [`prepare`] needs.
#[derive(Debug, Clone)]
pub(super) enum Plan {
    Bind {
        target: String,
        source: String,
        from: BindFrom,
        rw: bool,
    },
    Cache {
        target: String,
        /// What a new cache directory starts with: a path of a stage, image or context.
        seed: Option<(BindFrom, String)>,
        id: String,
        sharing: Sharing,
        readonly: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    Secret {
        id: String,
        target: Option<String>,
        env: Option<String>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Ssh {
        id: String,
        target: String,
        mode: u32,
        uid: u32,
        gid: u32,
        /// The first ssh mount sets `SSH_AUTH_SOCK`.
        first: bool,
    },
}

/// The files a bind mount shows.
#[derive(Debug, Clone)]
pub(super) enum BindFrom {
    /// Entries of the context (or a named directory context) under the source path, with
    /// their host files.
    Files(Vec<copy::SrcEntry>),
    /// A stage or an image: its layers.
    State(Box<StageState>),
}

/// The mounts of one RUN, in order, and what each adds to the cache key.
pub(super) fn plan(
    ctx: &Ctx<'_>,
    st: &StageState,
    stage: usize,
    ins: &Instruction,
    r: &Run,
    done: &BTreeMap<usize, StageState>,
) -> Result<(Vec<Plan>, Vec<String>), BuildError> {
    let mut p = Planner {
        ctx,
        stage,
        ins,
        done,
        nth_from: 0,
        ssh_n: 0,
        cache_ns: ctx
            .opts
            .build_args
            .get("BUILDKIT_CACHE_MOUNT_NS")
            .cloned()
            .unwrap_or_default(),
    };
    let mut plans = Vec::new();
    let mut keys = Vec::new();
    for raw in &r.mount_specs {
        let expanded = ctx.expand(st, raw, ins.span)?;
        let m = Spec::parse(&expanded)
            .map_err(|e| error_at(ins, format!("--mount={expanded}: {e}")))?;
        let target = |default: &str| {
            let t = m.target.clone().unwrap_or_else(|| default.to_string());
            let abs = super::fsutil::absolute(&st.workdir(), &t);
            if abs == "/" {
                return Err(error_at(
                    ins,
                    format!("--mount={expanded}: the target cannot be /"),
                ));
            }
            Ok(abs)
        };
        let (plan, key) = match m.kind {
            MountType::Bind => {
                let target = target("")?;
                p.bind(&m, target)?
            }
            MountType::Cache => p.cache(&m, &target)?,
            MountType::Tmpfs => {
                let target = target("")?;
                let key = format!("tmpfs target={target} size={:?}", m.size);
                (
                    Some(Plan::Tmpfs {
                        target,
                        size: m.size,
                    }),
                    key,
                )
            }
            MountType::Secret => p.secret(&m, &target)?,
            MountType::Ssh => {
                let first = !plans.iter().any(|p| matches!(p, Plan::Ssh { .. }));
                p.ssh(&m, &target, first)?
            }
        };
        match plan {
            Some(plan) => {
                plans.push(plan);
                keys.push(key);
            }
            // An optional secret or agent that was not given: skipped, as BuildKit skips it.
            None => keys.push(format!("{key} (absent)")),
        }
    }
    Ok((plans, keys))
}

/// A mount's `mode`, `uid` and `gid`, `mode` defaulting to `default_mode` and the owner to root.
fn ownership(m: &Spec, default_mode: u32) -> (u32, u32, u32) {
    (
        m.mode.unwrap_or(default_mode),
        m.uid.unwrap_or(0),
        m.gid.unwrap_or(0),
    )
}

/// An error at the RUN's location, naming it.
fn error_at(ins: &Instruction, m: String) -> BuildError {
    BuildError::at(ins.span, format!("{}: {m}", short(&ins.text)))
}

/// What planning one RUN's mounts carries from one mount to the next.
struct Planner<'a, 'c> {
    ctx: &'a Ctx<'c>,
    stage: usize,
    ins: &'a Instruction,
    done: &'a BTreeMap<usize, StageState>,
    /// The `from=` mounts seen so far: the graph numbers them in order.
    nth_from: usize,
    /// The ssh mounts seen so far: each gets a default target of its own.
    ssh_n: usize,
    /// `BUILDKIT_CACHE_MOUNT_NS`: the cache ids' namespace.
    cache_ns: String,
}

/// A mount's target: as given (or `default`), absolute in the step's working directory.
type Target<'t> = dyn Fn(&str) -> Result<String, BuildError> + 't;

impl Planner<'_, '_> {
    fn at(&self, m: String) -> BuildError {
        error_at(self.ins, m)
    }

    /// The next `from=`: what it shows and what the key sees of it.
    fn from(&mut self, f: &str, source: &str) -> Result<(BindFrom, String), BuildError> {
        self.nth_from += 1;
        let at = |m: String| self.at(m);
        resolve_from(
            self.ctx,
            (self.stage, self.ins, self.nth_from - 1),
            f,
            source,
            self.done,
            &at,
        )
    }

    /// `type=bind`: a path of the context, or of a stage, image or named context (`from=`).
    fn bind(&mut self, m: &Spec, target: String) -> Result<(Option<Plan>, String), BuildError> {
        let source = m.source.clone().unwrap_or_default();
        let (from, origin) = match &m.from {
            Some(f) => self.from(f, &source)?,
            None => {
                let files = context_files(&copy::context_entries(self.ctx.snapshot()?), &source)
                    .map_err(|e| self.at(e))?;
                let key = content_key(&files);
                (BindFrom::Files(files), format!("context {key}"))
            }
        };
        let rw = !m.readonly;
        let key = format!("bind target={target} source={source} rw={rw} from={origin}");
        let plan = Plan::Bind {
            target,
            source,
            from,
            rw,
        };
        Ok((Some(plan), key))
    }

    /// `type=cache`: a directory of the store by id; `from` (and `source` in it) seeds it when
    /// it is first made. BuildKit leaves the id and the sharing mode out of the key.
    fn cache(
        &mut self,
        m: &Spec,
        target: &Target<'_>,
    ) -> Result<(Option<Plan>, String), BuildError> {
        let seed = match &m.from {
            Some(f) => {
                let source = m.source.clone().unwrap_or_default();
                let (from, origin) = self.from(f, &source)?;
                Some((from, source, origin))
            }
            None => None,
        };
        let target = target("")?;
        // Without an id, the target as written, cleaned (BuildKit's `path.Clean`): a relative
        // target names the same cache in every working directory.
        let id = m
            .id
            .clone()
            .unwrap_or_else(|| crate::context::ignore::clean(m.target.as_deref().unwrap_or("")));
        let id = if self.cache_ns.is_empty() {
            id
        } else {
            format!("{}/{id}", self.cache_ns)
        };
        // Named whether the step runs or hits: a cache export with `mounts=true` carries it.
        self.ctx
            .cache_mounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone());
        let (mode, uid, gid) = ownership(m, 0o755);
        let key = format!(
            "cache target={target} ro={} mode={mode:o} uid={uid} gid={gid} from={:?}",
            m.readonly,
            seed.as_ref()
                .map(|(_, source, origin)| format!("{origin} {source}"))
        );
        let plan = Plan::Cache {
            target,
            seed: seed.map(|(from, source, _)| (from, source)),
            id,
            sharing: m.sharing.unwrap_or(Sharing::Shared),
            readonly: m.readonly,
            mode,
            uid,
            gid,
        };
        Ok((Some(plan), key))
    }

    /// `type=secret`: `--secret`'s value as a file (unless only `env=` is asked for) or an
    /// environment variable; `None` when an optional one was not given.
    fn secret(&self, m: &Spec, target: &Target<'_>) -> Result<(Option<Plan>, String), BuildError> {
        let id = match (&m.id, &m.target) {
            (Some(id), _) => id.clone(),
            (None, Some(t)) => t.rsplit('/').next().unwrap_or_default().to_string(),
            (None, None) => m.env.clone().unwrap_or_default(),
        };
        let target = if m.target.is_some() || m.env.is_none() {
            Some(target(&format!("/run/secrets/{id}"))?)
        } else {
            None
        };
        let (mode, uid, gid) = ownership(m, 0o400);
        let key = format!(
            "secret id={id} target={target:?} env={:?} required={} mode={mode:o} uid={uid} gid={gid}",
            m.env, m.required
        );
        if !self.ctx.opts.secrets.contains_key(&id) {
            if m.required {
                return Err(self.at(format!(
                    "secret {id:?} is required: pass it with --secret id={id},src=FILE \
                     (or env=VAR)"
                )));
            }
            return Ok((None, key));
        }
        let plan = Plan::Secret {
            id,
            target,
            env: m.env.clone(),
            mode,
            uid,
            gid,
        };
        Ok((Some(plan), key))
    }

    /// `type=ssh`: `--ssh`'s agent, relayed; `first` sets `SSH_AUTH_SOCK`. `None` when an
    /// optional one was not given.
    fn ssh(
        &mut self,
        m: &Spec,
        target: &Target<'_>,
        first: bool,
    ) -> Result<(Option<Plan>, String), BuildError> {
        let id = m.id.clone().unwrap_or_else(|| "default".into());
        let target = target(&format!("/run/buildkit/ssh_agent.{}", self.ssh_n))?;
        self.ssh_n += 1;
        let (mode, uid, gid) = ownership(m, 0o600);
        let key = format!("ssh id={id} target={target} mode={mode:o} uid={uid} gid={gid}");
        if !self.ctx.opts.ssh.contains_key(&id) {
            if m.required {
                return Err(self.at(format!(
                    "ssh agent {id:?} is required: pass it with --ssh {id}[=SOCKET]"
                )));
            }
            return Ok((None, key));
        }
        let plan = Plan::Ssh {
            id,
            target,
            mode,
            uid,
            gid,
            first,
        };
        Ok((Some(plan), key))
    }
}

/// A `from=` of a mount: a stage or image (its layers), or a named directory context (its
/// files under `source`), and what the key sees of it.
fn resolve_from(
    ctx: &Ctx<'_>,
    (stage, ins, nth): (usize, &Instruction, usize),
    f: &str,
    source: &str,
    done: &BTreeMap<usize, StageState>,
    at: &dyn Fn(String) -> BuildError,
) -> Result<(BindFrom, String), BuildError> {
    let what = format!("{} --mount from", short(&ins.text));
    Ok(
        match copy::from_source(ctx, stage, ins, nth, f, done, &what)? {
            copy::From::State(s) => {
                let key = s.key.to_string();
                (BindFrom::State(s), format!("stage {key}"))
            }
            copy::From::Dir(snap) => {
                let files = context_files(&copy::context_entries(&snap), source).map_err(at)?;
                let key = content_key(&files);
                (BindFrom::Files(files), format!("context {key}"))
            }
        },
    )
}

/// The context entries under `source` (the source itself included), paths made relative to it;
/// an error naming `source` when nothing is there.
fn context_files(entries: &[copy::SrcEntry], source: &str) -> Result<Vec<copy::SrcEntry>, String> {
    let src = copy::context_path(source);
    let mut out = Vec::new();
    for e in entries {
        let rel = if src.is_empty() {
            Some(e.path.as_slice())
        } else if e.path == src {
            Some(&b""[..])
        } else {
            e.path
                .strip_prefix(src.as_slice())
                .and_then(|r| r.strip_prefix(b"/"))
        };
        if let Some(rel) = rel {
            let mut e = e.clone();
            e.path = rel.into();
            out.push(e);
        }
    }
    if out.is_empty() && !src.is_empty() {
        return Err(format!(
            "bind source {source:?} is not in the build context (after .dockerignore)"
        ));
    }
    Ok(out)
}

/// One digest over the selected paths and what the key sees of each.
fn content_key(files: &[copy::SrcEntry]) -> Digest {
    let mut text = Vec::new();
    for f in files {
        text.extend_from_slice(&f.path);
        text.push(0);
        text.extend_from_slice(f.fingerprint.as_bytes());
        text.push(b'\n');
    }
    Digest::of(&text)
}
