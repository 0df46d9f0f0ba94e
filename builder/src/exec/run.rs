//! RUN: the command runs in the sandbox on an overlay of the stage's layers; the overlay's upper
//! directory becomes the new layer.
//!
//! The cache key chains from the filesystem so far and holds what the command sees: argv,
//! environment (ENV and in-scope ARGs), user, working directory and network mode.

use std::collections::BTreeMap;

use kiln_parser::instruction::{self, Instruction, Network as NetworkFlag, Run};
use kiln_runtime::{
    container::user,
    digest::Digest,
    layer::view::View,
    sandbox::process::{DEFAULT_PATH, Network, Spec},
    store::CacheEntry,
};

use super::{BuildError, Ctx, Event, RunJob, StageState, copy, mounts, shell_wrap, short};
use crate::{cache::key::Step, image::layer::LayerWriter};

/// BuildKit's predefined ARGs: passed to RUN from `--build-arg` without an ARG instruction, never
/// part of the cache key or the history.
const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];
/// How many lines of a failed command's output the error shows.
const TAIL_LINES: usize = 20;

/// Runs one RUN step through the build's [`super::StepRunner`]. Returns whether the layer came from the cache.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    ctx: &Ctx<'_>,
    st: &mut StageState,
    (stage_index, stage): (usize, &str),
    ins: &Instruction,
    r: &Run,
    name: &str,
    done: &BTreeMap<usize, StageState>,
) -> Result<bool, BuildError> {
    if !r.devices.is_empty() {
        return Err(BuildError::at(
            ins.span,
            format!(
                "{}: RUN --device is not supported: kiln gives RUN steps no host devices",
                short(&ins.text)
            ),
        ));
    }
    let unsupported = if r.security.is_some() {
        Some("RUN --security")
    } else if !r.heredocs.is_empty() && !matches!(r.command, instruction::Command::Shell(_)) {
        Some("a heredoc in exec-form RUN")
    } else {
        None
    };
    if let Some(what) = unsupported {
        return Err(BuildError::at(
            ins.span,
            format!("{}: {what} is not supported yet", short(&ins.text)),
        ));
    }
    let (command, pipes) = with_heredocs(r);
    let argv = shell_wrap(st, &command);
    let mut env: BTreeMap<String, String> = st.vars().clone();
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.to_string());
    // The cache key sees the environment without the proxy variables (BuildKit's predefined
    // ARGs): a different proxy does not change what a step builds.
    let keyed: Vec<String> = env
        .iter()
        .filter(|(k, _)| !PROXY_ARGS.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for (k, v) in &ctx.opts.build_args {
        if PROXY_ARGS.contains(&k.as_str()) {
            env.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    // USER as the runtime resolves it (docker's rules: a bare uid not in passwd runs with
    // gid 0, supplementary groups from /etc/group), not as COPY --chown does.
    let user = st.config.config.user.clone();
    let who = if user.is_empty() {
        user::Who {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            home: "/root".into(),
        }
    } else {
        st.sync_view(ctx.store)?;
        let passwd = copy::image_file(ctx, st, "/etc/passwd")?.unwrap_or_default();
        let group = copy::image_file(ctx, st, "/etc/group")?.unwrap_or_default();
        user::resolve_from(&passwd, &group, &user)
            .map_err(|e| BuildError::at(ins.span, format!("{}: {e}", short(&ins.text))))?
    };
    let (uid, gid) = (who.uid, who.gid);
    let workdir = st.workdir();
    let network = match r.network.or(ctx.opts.network) {
        Some(NetworkFlag::None) => Network::None,
        Some(NetworkFlag::Host) => Network::Host,
        // `RUN --network=default` is the build's `--network`, as BuildKit's; and the build's
        // default is the host's network (as BuildKit without CNI): `apt-get update` works.
        Some(NetworkFlag::Default) => match ctx.opts.network {
            Some(NetworkFlag::None) => Network::None,
            _ => Network::Host,
        },
        None => Network::Host,
    };
    let (plans, mount_keys) = mounts::plan(ctx, st, stage_index, ins, r, done)?;
    let mut step = Step::new("RUN")
        .field("argv", serde_json::to_string(&argv).unwrap_or_default())
        .field("env", keyed.join("\n"))
        .field("user", format!("{uid}:{gid}:{:?}", who.groups))
        .field("workdir", workdir.clone())
        .field("network", format!("{network:?}"))
        // The same command gives another layer on another platform (BuildKit keys an exec
        // by its platform too).
        .field("platform", st.platform().to_string());
    for (i, k) in mount_keys.iter().enumerate() {
        step = step.field(&format!("mount {i}"), k.clone());
    }
    // `--add-host` changes what the step sees, so its key (BuildKit keys an exec by its extra
    // hosts too); without any, the key is as it always was.
    if !ctx.opts.add_hosts.is_empty() {
        step = step.field("add-host", hosts_lines(&ctx.opts.add_hosts));
    }
    for (name, data) in &pipes {
        step = step.field(
            &format!("pipe {name}"),
            String::from_utf8_lossy(data).into_owned(),
        );
    }
    let (key, cached) = ctx.lookup(
        name,
        Some(&st.key),
        &step,
        &BTreeMap::new(),
        super::Recorded::KeyInputs,
    )?;
    let created_by = format!("RUN {}", command_text(st, &r.command));
    let (entry, hit) = match cached {
        Some(e) => (e, true),
        None => {
            let mut spec = Spec::new(std::path::Path::new(""), argv);
            spec.env = env;
            // As runc does for BuildKit: HOME from the user's passwd entry when the
            // environment sets none.
            if !spec.env.iter().any(|kv| kv.starts_with("HOME=")) {
                spec.env.push(format!("HOME={}", who.home));
            }
            spec.uid = uid;
            spec.gid = gid;
            spec.groups = who.groups;
            spec.cwd = workdir;
            spec.network = network;
            spec.pipes = pipes;
            st.sync_view(ctx.store)?;
            let layer = run_in_sandbox(ctx, st, ins, (&spec, &plans), name, stage)?;
            let e = CacheEntry {
                key: key.to_string(),
                size: layer.1,
                layer: layer.0,
                description: ctx.description(name, st),
                created: ctx.now,
                origin: None,
                remote: None,
            };
            ctx.store.cache_put(&e)?;
            (e, false)
        }
    };
    // A remote hit's files are not read for this: a tar of at most its end marker (1024 bytes)
    // holds no entry, and any entry takes a 512-byte header more.
    let empty = match &entry.remote {
        Some(_) => entry.size <= 1024,
        None => ctx.store.layer_entries(&entry.layer)?.is_empty(),
    };
    if empty {
        // Nothing changed: no layer, an empty_layer history entry (as BuildKit's exporter).
        st.key = key;
        ctx.history(st, created_by, true);
    } else {
        copy::adopt_layer(st, &entry, key, &created_by)?;
    }
    Ok(hit)
}

/// A RUN with heredocs, as BuildKit runs it: a command that is only `<<NAME` runs the body (from
/// `/dev/pipes/NAME` when it starts with `#!`, else as the shell's script); otherwise the bodies
/// are put back under the command line and the shell reads them as its own heredocs.
fn with_heredocs(r: &Run) -> (instruction::Command, Vec<(String, Vec<u8>)>) {
    let instruction::Command::Shell(line) = &r.command else {
        return (r.command.clone(), Vec::new());
    };
    let Some(first) = r.heredocs.first() else {
        return (r.command.clone(), Vec::new());
    };
    if r.heredocs.len() == 1 && only_heredoc(line, &first.name) {
        let body = first.body();
        if body.starts_with("#!") {
            let path = format!("/dev/pipes/{}", first.name);
            return (
                instruction::Command::Shell(path),
                vec![(first.name.clone(), body.into_bytes())],
            );
        }
        return (instruction::Command::Shell(body), Vec::new());
    }
    let mut full = line.clone();
    for h in &r.heredocs {
        full.push('\n');
        full.push_str(&h.raw_body);
        full.push_str(&h.name);
    }
    (instruction::Command::Shell(full), Vec::new())
}

/// Whether `line` is just a heredoc opener for `name` (`<<EOF`, `<<-"EOF"`, `0<<'EOF'`).
fn only_heredoc(line: &str, name: &str) -> bool {
    let rest = line.trim().trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = rest.strip_prefix("<<") else {
        return false;
    };
    let rest = rest.strip_prefix('-').unwrap_or(rest).trim_start();
    rest.trim_matches(|c| c == '"' || c == '\'') == name
}

/// The command as history records it (`/bin/sh -c ...` for shell form, as BuildKit).
/// A RUN's history line as BuildKit's `runCommandString` writes it: the build args in scope
/// (`|N K=V ...`, each once, valued as the step sees it, empty when unset), then the command
/// with the stage's shell (exec form: its words joined by spaces).
fn command_text(st: &StageState, c: &instruction::Command) -> String {
    let mut names: Vec<&str> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for n in &st.arg_order {
        if seen.insert(n.as_str()) {
            names.push(n);
        }
    }
    let mut parts: Vec<String> = Vec::new();
    if !names.is_empty() {
        parts.push(format!("|{}", names.len()));
        for n in names {
            let v = st
                .vars()
                .get(n)
                .cloned()
                .or_else(|| st.args.get(n).cloned().flatten())
                .unwrap_or_default();
            parts.push(format!("{n}={v}"));
        }
    }
    parts.extend(super::shell_wrap(st, c));
    format!("{} # buildkit", parts.join(" "))
}

/// Prepares the directories, runs `spec` through the step runner, and writes the upper
/// directory as a layer. Returns
/// the layer's diff_id and size.
fn run_in_sandbox(
    ctx: &Ctx<'_>,
    st: &StageState,
    ins: &Instruction,
    (spec, plans): (&Spec, &[mounts::Plan]),
    name: &str,
    stage: &str,
) -> Result<(Digest, u64), BuildError> {
    let other =
        |what: &str, e: &dyn std::fmt::Display| BuildError::Other(format!("{name}: {what}: {e}"));
    let mut lower = lower_dirs(ctx, st)?;
    let path = spec
        .env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    if let Some(argv0) = spec.args.first() {
        super::elfcheck::check(st, argv0, path, &spec.cwd, &lower)
            .map_err(|e| BuildError::at(ins.span, format!("{}: {e}", short(&ins.text))))?;
    }
    // Another platform's programs run through the kernel's binfmt_misc handler for it (QEMU,
    // registered with the fix-binary flag so the image needs no emulator).
    // The mount points of /etc/hosts and /etc/resolv.conf the stage lacks, in a layer of their
    // own instead of the step's upper directory (from which they would have to be dropped).
    ctx.store.add_etc_stubs(&mut lower);
    let platform = st.platform();
    if !platform.is_host() {
        kiln_runtime::binfmt::ensure_emulator(&platform)
            .map_err(|e| BuildError::at(ins.span, format!("{}: {e}", short(&ins.text))))?;
    }
    let dir = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(ctx.store.root().join("tmp"))
        .map_err(|e| other("sandbox directory", &e))?;
    let sub = |n: &str| {
        let p = dir.path().join(n);
        std::fs::create_dir(&p).map(|()| p)
    };
    let (upper, work, mnt) = (
        sub("upper").map_err(|e| other("sandbox directory", &e))?,
        sub("work").map_err(|e| other("sandbox directory", &e))?,
        sub("rootfs").map_err(|e| other("sandbox directory", &e))?,
    );
    if lower.is_empty() {
        // FROM scratch: overlayfs needs a lower layer.
        lower.push(sub("empty").map_err(|e| other("sandbox directory", &e))?);
    }
    // Output goes through a pipe: each line is an event (`--progress=plain` shows them all as
    // they come) and the last lines are kept for the error of a failing step.
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| other("output pipe", &e))?;
    let (reader, log) = (std::fs::File::from(reader), std::fs::File::from(writer));
    let mut spec = spec.clone();
    spec.rootfs = mnt.clone();
    spec.mounts = kiln_runtime::sandbox::etc::write_files(
        dir.path(),
        &spec.hostname,
        &hosts_lines(&ctx.opts.add_hosts),
        true,
    )
    .map_err(|e| other("/etc/hosts and /etc/resolv.conf", &e))?;
    // Secrets given as env= and SSH_AUTH_SOCK reach the process, never the key or history.
    let prepared = mounts::prepare(ctx, plans, dir.path()).map_err(|e| match e {
        BuildError::Other(m) => BuildError::at(ins.span, format!("{}: {m}", short(&ins.text))),
        e => e,
    })?;
    for kv in &prepared.env {
        let k = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
        spec.env
            .retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k));
        spec.env.push(kv.clone());
    }
    spec.mounts.extend(prepared.mounts.iter().cloned());
    // Always a cgroup: it carries the device allow-list besides any limits.
    let cg_name = dir
        .path()
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let (join, unapplied) =
        kiln_runtime::sandbox::cgroup::Cgroup::create(&cg_name, &ctx.opts.limits);
    if !unapplied.is_empty()
        && !ctx
            .limits_warned
            .swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        (ctx.on_event)(Event::Warning {
            message: unapplied.join("; "),
        });
    }
    spec.cgroup = join;
    let (result, last) = std::thread::scope(|s| {
        let lines = s.spawn(move || follow(reader, ctx, name));
        let job = RunJob {
            lower: &lower,
            upper: &upper,
            work: &work,
            rootfs: &mnt,
            spec: &spec,
            log: &log,
        };
        let result = ctx.runner.run(stage, ins, &job);
        // The sandbox's processes are gone (their pid namespace died with pid 1): closing the
        // last write end ends the reader.
        drop(log);
        (result, lines.join().unwrap_or_default())
    });
    // Locks, relays and the mounts' descriptors go now: the sandbox is gone.
    let targets = prepared.into_targets();
    let code = result?;
    if code != 0 {
        let mut msg = format!("{}: exit status {code}", short(&ins.text));
        if !last.is_empty() {
            msg.push_str("\noutput (last lines):");
            for l in &last {
                msg.push_str("\n  ");
                msg.push_str(l);
            }
        }
        return Err(BuildError::at(ins.span, msg));
    }
    drop_stubs(st.view()?, &upper, &targets);
    let io = |e: std::io::Error| other("writing the layer", &e);
    let blob = ctx.store.new_blob_file()?;
    let mut w = LayerWriter::new(
        std::io::BufWriter::new(blob.file.try_clone().map_err(io)?),
        ctx.opts.source_date_epoch,
    );
    w.append_upper(&upper)
        .map_err(|e| other("reading the changes", &e))?;
    let (info, mut out) = w.finish().map_err(io)?;
    std::io::Write::flush(&mut out).map_err(io)?;
    drop(out);
    ctx.store.commit_blob(blob, &info.diff_id)?;
    ctx.store
        .record_layer_entries(&info.diff_id, &info.entries)?;
    Ok((info.diff_id, info.size))
}

/// The stage's layers unpacked (once per ChainID), top first: an overlay's lower directories.
pub(crate) fn lower_dirs(
    ctx: &Ctx<'_>,
    st: &StageState,
) -> Result<Vec<std::path::PathBuf>, BuildError> {
    let blobs: Vec<Digest> = st
        .layers
        .iter()
        .map(|l| Digest::parse(&l.descriptor.digest))
        .collect::<Result<_, _>>()
        .map_err(|e| BuildError::Other(format!("layer digest: {e}")))?;
    let diffs: Vec<Digest> = st.layers.iter().map(|l| l.diff_id).collect();
    Ok(ctx.store.unpacked_layers(&blobs, &diffs)?)
}

/// Removes what the sandbox created only to mount over: an empty file or directory at a mount
/// target (RUN --mount, /etc/hosts, /etc/resolv.conf) that the image did not have, then each
/// parent left empty whose metadata is the image's (overlay copied it up) or that the image did
/// not have. A RUN that writes nothing then adds no layer, and no mount point reaches the image.
fn drop_stubs(view: &View, upper: &std::path::Path, targets: &[String]) {
    use std::os::unix::fs::MetadataExt;
    let opaque = |p: &std::path::Path| {
        let mut b = [0u8; 1];
        rustix::fs::lgetxattr(p, "trusted.overlay.opaque", &mut b).is_ok()
    };
    let rels = kiln_runtime::sandbox::etc::BOUND
        .iter()
        .map(|s| s.to_string())
        .chain(
            targets
                .iter()
                .map(|t| t.trim_start_matches('/').to_string()),
        );
    for rel in rels {
        let p = upper.join(&rel);
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let empty_file = md.is_file() && md.len() == 0;
        let empty_dir = md.is_dir()
            && std::fs::read_dir(&p).is_ok_and(|mut d| d.next().is_none())
            && !opaque(&p);
        if !(empty_file || empty_dir) || view.get(&rel).is_some() {
            continue;
        }
        let _ = std::fs::remove_file(&p).or_else(|_| std::fs::remove_dir(&p));
        let mut parent = std::path::Path::new(&rel).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            let p = upper.join(dir);
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                break;
            };
            let empty = md.is_dir() && std::fs::read_dir(&p).is_ok_and(|mut d| d.next().is_none());
            let unchanged = match view.get(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()))
            {
                None => true,
                Some(n) => n.mode == md.mode() & 0o7777 && n.uid == md.uid() && n.gid == md.gid(),
            };
            if !(empty && !opaque(&p) && unchanged) || std::fs::remove_dir(&p).is_err() {
                break;
            }
            parent = dir.parent();
        }
    }
}

/// Reads the step's output line by line: one [`Event::Output`] each; returns the last lines.
/// The longest line of a step's output passed on at once.
const MAX_LINE: u64 = 64 * 1024;

/// How much of a step's output is shown (BuildKit's default `BUILDKIT_STEP_LOG_MAX_SIZE`).
const LOG_LIMIT: u64 = 2 << 20;

/// A line kept for the error message: at most 500 characters.
fn short_line(line: String) -> String {
    if line.len() <= 500 {
        return line;
    }
    let mut t: String = line.chars().take(500).collect();
    t.push_str("...");
    t
}

fn follow(reader: std::fs::File, ctx: &Ctx<'_>, name: &str) -> Vec<String> {
    use std::io::BufRead;
    let mut last = std::collections::VecDeque::with_capacity(TAIL_LINES);
    let mut r = std::io::BufReader::new(reader);
    let mut buf = Vec::new();
    let (mut shown, mut clipped) = (0u64, false);
    loop {
        buf.clear();
        // A line is cut every 64 KiB: a step printing gigabytes without a newline must not
        // grow kiln's memory with it.
        match std::io::Read::take(&mut r, MAX_LINE).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                // As BuildKit, a step's log is shown up to 2 MiB, then clipped once.
                shown += buf.len() as u64;
                if shown <= LOG_LIMIT {
                    (ctx.on_event)(Event::Output {
                        name: name.to_string(),
                        line: line.clone(),
                    });
                } else if !clipped {
                    clipped = true;
                    (ctx.on_event)(Event::Output {
                        name: name.to_string(),
                        line: "[output clipped, log limit 2MiB reached]".into(),
                    });
                }
                if last.len() == TAIL_LINES {
                    last.pop_front();
                }
                // The error repeats these: each at most a screenful.
                last.push_back(short_line(line));
            }
        }
    }
    last.into()
}

/// `--add-host` entries as /etc/hosts lines (`IP\tNAME`), in the order given.
fn hosts_lines(hosts: &[(String, String)]) -> String {
    hosts
        .iter()
        .map(|(name, ip)| format!("{ip}\t{name}\n"))
        .collect()
}
