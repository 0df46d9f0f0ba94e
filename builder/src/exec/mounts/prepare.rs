//! Making the mounts of a RUN step that runs: binds of the context, a stage or an image (on
//! an overlay with a throw-away upper directory), cache directories with their locks, tmpfs,
//! secrets and relayed ssh agents; held in [`Prepared`] while the step runs.

use std::path::{Path, PathBuf};

use kiln_parser::instruction::mount::Sharing;
use kiln_runtime::{
    digest::Digest,
    layer::view::as_path,
    sandbox::{
        agent::AgentRelay,
        mounts::{self, Mount},
        overlay,
    },
};

use super::{BindFrom, Plan, SecretSource};
use crate::exec::{
    BuildError, Ctx,
    copy::{self, SrcKind},
};

/// What the prepared mounts need to stay alive while the step runs; dropped afterwards.
#[derive(Default)]
pub(in crate::exec) struct Prepared {
    pub mounts: Vec<Mount>,
    /// `KEY=value` for the step's environment only (secrets as `env=`, `SSH_AUTH_SOCK`).
    pub env: Vec<String>,
    /// Every mount target, to drop the stubs the sandbox creates for them from the layer.
    targets: Vec<String>,
    /// Cache-mount locks held for the step.
    locks: Vec<std::fs::File>,
    relays: Vec<AgentRelay>,
}

impl Prepared {
    /// Adds `tree` at `target` (read-only when asked); `what` names it in an error.
    fn add(
        &mut self,
        tree: mounts::Detached,
        target: &str,
        read_only: bool,
        what: &str,
    ) -> Result<(), BuildError> {
        let tree = if read_only {
            tree.read_only()
                .map_err(|e| BuildError::Other(format!("{what} {target}: {e}")))?
        } else {
            tree
        };
        self.mounts.push(tree.at(target));
        self.targets.push(target.to_string());
        Ok(())
    }

    /// The mount targets (for dropping stubs from the layer); everything else (locks, relays,
    /// mount descriptors) is released now.
    pub(in crate::exec) fn into_targets(self) -> Vec<String> {
        self.targets
    }
}

/// Makes the planned mounts, using `dir` (the step's private directory) for scratch space.
pub(in crate::exec) fn prepare(
    ctx: &Ctx<'_>,
    plans: &[Plan],
    dir: &Path,
) -> Result<Prepared, BuildError> {
    let mut out = Prepared::default();
    let err = |what: String| BuildError::Other(what);
    let mut secrets = Vec::new();
    for (n, p) in plans.iter().enumerate() {
        match p {
            Plan::Bind {
                target,
                source,
                from,
                rw,
            } => {
                let mnt = mount_from(ctx, from, source, &dir.join(format!("bind-{n}")))
                    .map_err(|e| err(format!("bind mount {target}: {e}")))?;
                // The clone keeps the overlay alive; the attached copy leaves the host's mount
                // table at once.
                let tree = mounts::bind_in(&mnt, source);
                let detached = overlay::unmount(&mnt);
                let tree = tree.map_err(|e| err(format!("bind mount {target}: {e}")))?;
                detached.map_err(|e| err(format!("bind mount {target}: {e}")))?;
                out.add(tree, target, !rw, "bind mount")?;
            }
            Plan::Cache {
                target,
                seed,
                id,
                sharing,
                readonly,
                mode,
                uid,
                gid,
            } => {
                let base = dir.join(format!("cache-{n}"));
                let fill = |dst: &Path| -> std::io::Result<()> {
                    let Some((from, source)) = seed else {
                        return Ok(());
                    };
                    let mnt =
                        mount_from(ctx, from, source, &base).map_err(std::io::Error::other)?;
                    let copied = mounts::open_in(&mnt, source)
                        .map_err(std::io::Error::other)
                        .and_then(|at| {
                            let src =
                                format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&at));
                            kiln_runtime::sandbox::copyroot::copy_tree(Path::new(&src), dst)
                        });
                    let unmounted = overlay::unmount(&mnt);
                    copied?;
                    unmounted.map_err(std::io::Error::other)
                };
                let (path, lock) = cache_dir(ctx, id, *sharing, (*mode, *uid, *gid), &fill)
                    .map_err(|e| err(format!("cache mount {target} (id {id}): {e}")))?;
                out.locks.push(lock);
                let tree =
                    mounts::bind(&path).map_err(|e| err(format!("cache mount {target}: {e}")))?;
                out.add(tree, target, *readonly, "cache mount")?;
            }
            Plan::Tmpfs { target, size } => {
                let tree = mounts::tmpfs(*size, None)
                    .map_err(|e| err(format!("tmpfs mount {target}: {e}")))?;
                out.add(tree, target, false, "tmpfs mount")?;
            }
            Plan::Secret {
                id,
                target,
                env,
                mode,
                uid,
                gid,
            } => {
                // The error names the secret and where it was to come from, never its value.
                let data = match ctx.opts.secrets.get(id) {
                    Some(SecretSource::File(f)) => kiln_runtime::bounded::read(
                        f,
                        kiln_runtime::bounded::SECRET_LIMIT,
                        "a secret",
                    )
                    .map_err(|e| err(format!("secret {id}: {e}")))?,
                    Some(SecretSource::Env(v)) => std::env::var_os(v)
                        .map(|v| v.into_encoded_bytes())
                        .ok_or_else(|| err(format!("secret {id}: ${v} is not set")))?,
                    None => continue,
                };
                if let Some(name) = env {
                    out.env
                        .push(format!("{name}={}", String::from_utf8_lossy(&data)));
                }
                if let Some(t) = target {
                    secrets.push((
                        t.clone(),
                        mounts::MemFile {
                            name: format!("secret-{n}"),
                            data,
                            mode: *mode,
                            uid: *uid,
                            gid: *gid,
                        },
                    ));
                }
            }
            Plan::Ssh {
                id,
                target,
                mode,
                uid,
                gid,
                first,
            } => {
                let Some(upstream) = ctx.opts.ssh.get(id) else {
                    continue;
                };
                let sock = dir.join(format!("ssh-{n}.sock"));
                let relay = AgentRelay::start(&sock, upstream, (*uid, *gid, *mode))
                    .map_err(|e| err(format!("ssh mount {target} (id {id}): {e}")))?;
                let tree =
                    mounts::bind(&sock).map_err(|e| err(format!("ssh mount {target}: {e}")))?;
                out.relays.push(relay);
                out.add(tree, target, false, "ssh mount")?;
                if *first {
                    out.env.push(format!("SSH_AUTH_SOCK={target}"));
                }
            }
        }
    }
    if !secrets.is_empty() {
        let scratch = dir.join("secrets");
        std::fs::create_dir(&scratch).map_err(|e| err(format!("secrets: {e}")))?;
        let files: Vec<mounts::MemFile> = secrets.iter().map(|(_, f)| f.clone()).collect();
        let trees =
            mounts::memory_files(&scratch, &files).map_err(|e| err(format!("secrets: {e}")))?;
        for ((target, _), tree) in secrets.into_iter().zip(trees) {
            out.add(tree, &target, false, "secret mount")?;
        }
    }
    Ok(out)
}

/// Mounts what `from` shows (`source` inside it for a context's files) on `base/mnt`: an
/// overlay with a throw-away upper directory in `base`. The caller unmounts it.
pub(super) fn mount_from(
    ctx: &Ctx<'_>,
    from: &BindFrom,
    source: &str,
    base: &Path,
) -> Result<PathBuf, String> {
    let sub = |s: &str| {
        let p = base.join(s);
        std::fs::create_dir_all(&p)
            .map(|()| p)
            .map_err(|e| e.to_string())
    };
    let (upper, work, mnt) = (sub("upper")?, sub("work")?, sub("mnt")?);
    let lower = match from {
        BindFrom::Files(files) => {
            let tree = sub("tree")?;
            let inner = tree.join(as_path(&copy::context_path(source)));
            materialize(files, &inner).map_err(|e| e.to_string())?;
            vec![tree]
        }
        BindFrom::State(s) => {
            let mut l = crate::exec::run::lower_dirs(ctx, s).map_err(|e| e.to_string())?;
            if l.is_empty() {
                l.push(sub("empty")?);
            }
            l
        }
    };
    overlay::mount_scratch(
        overlay::Overlay {
            lower: &lower,
            upper: &upper,
            work: &work,
        },
        &mnt,
    )
    .map_err(|e| e.to_string())?;
    Ok(mnt)
}

/// Recreates `files` (relative paths, `""` for the source itself) under `dest`: directories and
/// symlinks made anew, files hard-linked from the context (copied across filesystems). The tree
/// is only ever an overlay's lower layer, so the context's files are never written through it.
pub(super) fn materialize(files: &[copy::SrcEntry], dest: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    for f in files {
        let p = if f.path.is_empty() {
            dest.to_path_buf()
        } else {
            dest.join(as_path(&f.path))
        };
        match &f.kind {
            SrcKind::Dir => {
                match std::fs::create_dir(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode & 0o7777))?;
            }
            SrcKind::File { host, .. } => {
                if std::fs::hard_link(host, &p).is_err() {
                    std::fs::copy(host, &p)?;
                }
            }
            SrcKind::Symlink(t) => std::os::unix::fs::symlink(as_path(t), &p)?,
            SrcKind::StageFile { .. } => {}
        }
    }
    Ok(())
}

/// The directory of cache mount `id` for one step, and the lock that keeps it the step's as
/// `sharing` says: shared (a shared lock: others use it at once), locked (an exclusive lock:
/// others wait), private (the first instance nobody holds, else a new one). The lock also tells
/// a prune that the directory is in use. Created with `mode`, `uid` and `gid` on first use,
/// filled by `fill` (a cache mount's `from=`).
/// The name of the first instance of cache mount `id` in the store's `cache-mounts/` (others
/// of a `sharing=private` mount add `-N`).
pub(crate) fn cache_mount_name(id: &str) -> String {
    Digest::of(id.as_bytes()).hex()[..32].to_string()
}

/// Makes cache mount directory `base/inst` (for mount `id`) filled by `fill`: under a
/// temporary name, renamed without replacing, so no step sees it before it is whole, and two
/// first makers agree on one directory (the other's is dropped: the first one's contents win).
pub(crate) fn make_cache_mount(
    base: &Path,
    inst: &str,
    id: &str,
    fill: &dyn Fn(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = tempfile::Builder::new().prefix(".new-").tempdir_in(base)?;
    fill(tmp.path())?;
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        tmp.path(),
        rustix::fs::CWD,
        base.join(inst),
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Ok(()) => {
            std::fs::write(base.join(format!("{inst}.id")), id)?;
            let _ = tmp.keep();
            Ok(())
        }
        Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn cache_dir(
    ctx: &Ctx<'_>,
    id: &str,
    sharing: Sharing,
    (mode, uid, gid): (u32, u32, u32),
    fill: &dyn Fn(&Path) -> std::io::Result<()>,
) -> std::io::Result<(PathBuf, std::fs::File)> {
    use rustix::fs::FlockOperation as Op;
    let base = ctx.store.root().join("cache-mounts");
    std::fs::create_dir_all(&base)?;
    let name = cache_mount_name(id);
    let mut instance = 0usize;
    loop {
        let inst = if instance == 0 {
            name.clone()
        } else {
            format!("{name}-{instance}")
        };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(base.join(format!("{inst}.lock")))?;
        let got = match sharing {
            Sharing::Shared => rustix::fs::flock(&lock, Op::LockShared).map(|()| true),
            Sharing::Locked => rustix::fs::flock(&lock, Op::LockExclusive).map(|()| true),
            Sharing::Private => match rustix::fs::flock(&lock, Op::NonBlockingLockExclusive) {
                Ok(()) => Ok(true),
                Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
                Err(e) => Err(e),
            },
        }?;
        if !got {
            instance += 1;
            continue;
        }
        // The lock file's mtime is the cache mount's last use (`kiln cache ls`).
        let _ = lock.set_modified(std::time::SystemTime::now());
        let dir = base.join(&inst);
        if std::fs::symlink_metadata(&dir).is_err() {
            make_cache_mount(&base, &inst, id, &|tmp| {
                fill(tmp)?;
                std::os::unix::fs::chown(tmp, Some(uid), Some(gid))?;
                std::fs::set_permissions(
                    tmp,
                    std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
                )
            })?;
        }
        return Ok((dir, lock));
    }
}
