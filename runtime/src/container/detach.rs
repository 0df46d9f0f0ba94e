//! Detached containers (`kiln run -d`), daemonless as podman's: the `kiln run -d` command starts
//! itself again as the container's monitor (conmon's role), in a session of its own with no
//! terminal. The monitor runs the container as a foreground `kiln run` does (it is the parent
//! of the container's process 1, which dies with it), with the output captured into the
//! container's log ([`super::logs`]), runs the image's HEALTHCHECK ([`super::health`]), and
//! records how the container ends. The first command
//! waits on the monitor's stdout for `started ID` (the process runs) or `error CODE MESSAGE`
//! (it could not start), then returns, as `docker run -d` does.

use std::{
    ffi::OsString,
    io::{BufRead, Write},
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
};

use super::{ContainerError, RunOptions};
use crate::store::Store;

/// Set in the environment of a detached container's monitor.
const MONITOR: &str = "KILN_DETACHED_MONITOR";

/// Whether this process is a detached container's monitor.
pub fn is_monitor() -> bool {
    std::env::var_os(MONITOR).is_some()
}

/// How a detached start went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// The container runs; its id.
    Running(String),
    /// It could not start: docker's exit code (125, 126, 127) and why.
    Failed { code: u8, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError + '_ {
    move |source| ContainerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Starts `exe args` (the same `kiln run -d` command) as the monitor and waits for its word.
pub fn start(
    exe: &Path,
    args: impl IntoIterator<Item = OsString>,
) -> Result<Started, ContainerError> {
    let mut cmd = Command::new(exe);
    cmd.args(args).env(MONITOR, "1");
    // Rootless: the monitor runs inside this kiln's user namespace (root there) and must know
    // it is not root on the host.
    match crate::sandbox::userns::to_inherit() {
        Some(v) => cmd.env(crate::sandbox::userns::INHERITED, v),
        None => cmd.env_remove(crate::sandbox::userns::INHERITED),
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: setsid(2) is a plain system call on no shared data (async-signal-safe, as
    // `pre_exec` requires): the monitor leaves the terminal's session, so a Ctrl-C or hangup
    // there reaches neither it nor the container.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().map_err(io_err(exe))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .map_err(io_err(exe))?;
    }
    let line = line.trim_end();
    if let Some(id) = line.strip_prefix("started ") {
        return Ok(Started::Running(id.to_string()));
    }
    if let Some(rest) = line.strip_prefix("error ") {
        let (code, message) = rest.split_once(' ').unwrap_or(("125", rest));
        return Ok(Started::Failed {
            code: code.parse().unwrap_or(125),
            message: message.to_string(),
        });
    }
    // It said nothing: its status says what became of it.
    let status = child.wait().map_err(io_err(exe))?;
    Ok(Started::Failed {
        code: 125,
        message: format!("the container's monitor ended before the container started ({status})"),
    })
}

/// The monitor's work: runs the container with its output captured into its log, tells the
/// waiting command once it runs (or why it could not), and stays until it ends, starting it
/// again as its `--restart` policy says. Returns the container's last exit code (docker's
/// 125/126/127 when it never ran). With `opts.id` set, that existing container starts again
/// (`kiln start`), its log continued.
pub fn monitor(store: &Store, opts: &mut RunOptions) -> u8 {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let say = |line: String| {
        let mut out = std::io::stdout().lock();
        let ok = writeln!(out, "{line}").and_then(|()| out.flush()).is_ok();
        // Nobody listens any more: stdout goes nowhere from now on.
        if let Ok(null) = std::fs::File::open("/dev/null") {
            let _ = rustix::stdio::dup2_stdout(&null);
        }
        ok
    };
    // A new container (not `kiln start` of one): its directory is this monitor's to make.
    let fresh = opts.id.is_none();
    let id = opts.id.clone().unwrap_or_else(super::new_id);
    let log = super::logs::path(store.root(), &id);
    let setup = (|| {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let writer = super::logs::Writer::open(&log, opts.log_rotation).map_err(io_err(&log))?;
        let (out_r, out_w) = std::io::pipe().map_err(io_err(&log))?;
        let (err_r, err_w) = std::io::pipe().map_err(io_err(&log))?;
        Ok::<_, ContainerError>((writer, (out_r, out_w), (err_r, err_w)))
    })();
    let (writer, (out_r, out_w), (err_r, err_w)) = match setup {
        Ok(x) => x,
        Err(e) => {
            if fresh {
                let _ = log.parent().map(std::fs::remove_dir_all);
            }
            say(format!("error {} {e}", e.exit_code()));
            return e.exit_code();
        }
    };
    opts.id = Some(id.clone());
    // `kiln attach`'s socket; without it the container runs all the same.
    let dir = store.root().join("containers").join(&id);
    let hub = std::fs::create_dir_all(&dir)
        .and_then(|()| super::attach::Hub::listen(&dir))
        .ok();
    // The image's HEALTHCHECK, run by this monitor while the container runs.
    let image_check = super::image_to_run(store, opts, &|_| {})
        .ok()
        .and_then(|(_, config)| config.config.healthcheck);
    let check = super::health::merged(image_check, opts.health.clone())
        .and_then(|h| super::health::check_of(&h));
    let told = AtomicBool::new(false);
    let capture = |r: std::io::PipeReader, stream: &'static str| {
        let w = writer.clone();
        let hub = hub.clone();
        std::thread::spawn(move || match hub {
            Some(hub) => w.capture(
                super::attach::TeeReader {
                    inner: r,
                    hub,
                    stream: if stream == "stderr" { 2 } else { 1 },
                },
                stream,
            ),
            None => w.capture(r, stream),
        })
    };
    let captures = std::sync::Mutex::new(vec![capture(out_r, "stdout"), capture(err_r, "stderr")]);
    // Each start of the container writes through copies of these; once the last run is over
    // they are dropped, the capture threads see the end of both pipes and are joined, before
    // the end is recorded: whoever waits for the end finds the whole log.
    let writers = std::sync::Mutex::new(Some((out_w, err_w)));
    let finish_log = || {
        writers.lock().unwrap_or_else(|p| p.into_inner()).take();
        for t in captures.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = t.join();
        }
    };
    let policy = opts.restart;
    let mut delay = None;
    let result = loop {
        let t0 = std::time::Instant::now();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        opts.started = Some(tx);
        let stdio = writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(o, e)| (o.try_clone(), e.try_clone()));
        let (out_w, err_w) = match stdio {
            Some((Ok(o), Ok(e))) => (o, e),
            _ => {
                let e = ContainerError::Config("cannot copy the log pipes".into());
                break Err(e);
            }
        };
        let run_done = AtomicBool::new(false);
        let again = std::cell::Cell::new(false);
        let result = std::thread::scope(|s| {
            // Tells the waiting command once the container first runs, then watches its
            // health while this run lasts.
            let (told, run_done, check) = (&told, &run_done, &check);
            s.spawn(move || {
                let Ok(id) = rx.recv() else { return };
                if !told.load(SeqCst) {
                    told.store(say(format!("started {id}")), SeqCst);
                }
                if let Some(check) = check {
                    super::health::watch(store, &id, check, &|| run_done.load(SeqCst));
                }
            });
            let ended = |code: i32| {
                run_done.store(true, SeqCst);
                let count = store
                    .find_container(&id)
                    .ok()
                    .flatten()
                    .map_or(0, |c| c.restart_count);
                let stopped = store.container_stop_requested(&id).unwrap_or(true);
                let restart = policy.restarts(code, count, stopped);
                if !restart {
                    finish_log();
                }
                again.set(restart);
                restart
            };
            let io = container_io(opts, hub.clone(), out_w, err_w);
            let result = super::run(store, opts, io, &|_| {}, &ended);
            // The last sender: the reporter ends, told or not.
            opts.started = None;
            run_done.store(true, SeqCst);
            result
        });
        if result.is_err() && !told.load(SeqCst) || !again.get() {
            break result;
        }
        // Between two runs: `kiln stop` ends the wait and leaves the container exited.
        let d = super::restart::delay(delay, t0.elapsed());
        delay = Some(d);
        if stopped_while_waiting(store, &id, d) {
            finish_log();
            let code = result
                .as_ref()
                .map_or_else(|e| i32::from(e.exit_code()), |c| *c);
            let _ = store.finish_container(&id, code);
            break result;
        }
    };
    // Also when the container never started (`ended` was not reached).
    finish_log();
    if let Some(hub) = &hub {
        hub.close(&dir);
    }
    // A new container that was never made (refused: a bad name, one taken): its directory,
    // made above for the log, goes too, else it stays as one the store does not know. (Not
    // on an error reading the store: the directory may be a container's.) Before the waiting
    // command hears of the error, which then finds nothing left.
    if fresh && matches!(store.find_container(&id), Ok(None)) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let Err(e) = &result {
        if !told.load(SeqCst) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "error {} {e}", e.exit_code());
        }
    }
    match result {
        Ok(code) => u8::try_from(code).unwrap_or(255),
        Err(e) => e.exit_code(),
    }
}

/// The container's stdio for one run: with `-t`, a terminal whose one stream is the log's
/// stdout (as docker's), its input and size set by attached clients; else pipes into the log,
/// and with `-i` a stdin that attached clients write to.
fn container_io(
    opts: &RunOptions,
    hub: Option<std::sync::Arc<super::attach::Hub>>,
    out_w: std::io::PipeWriter,
    err_w: std::io::PipeWriter,
) -> super::Io {
    if opts.tty {
        // No stderr of its own: its copy must not keep that capture waiting.
        drop(err_w);
        super::Io::Terminal(super::tty::Terminal {
            input: None,
            output: Box::new(out_w),
            user: None,
            size: None,
            // Attached clients type into the terminal and set its size.
            share: Some(Box::new(move |master: &std::os::fd::OwnedFd| {
                if let Some(hub) = hub {
                    let input = master.try_clone().ok().map(std::fs::File::from);
                    hub.set_input(input, master.try_clone().ok());
                }
            })),
        })
    } else {
        // `-i`: stdin is a pipe attached clients write to; otherwise nothing.
        let stdin = match (&hub, opts.interactive) {
            (Some(hub), true) => match std::io::pipe() {
                Ok((r, w)) => {
                    let w = std::fs::File::from(std::os::fd::OwnedFd::from(w));
                    hub.set_input(Some(w), None);
                    super::Stdio::from(r)
                }
                Err(_) => super::Stdio::null(),
            },
            _ => super::Stdio::null(),
        };
        super::Io::Pipes(stdin, super::Stdio::from(out_w), super::Stdio::from(err_w))
    }
}

/// Waits `d` before a restart; whether `kiln stop` asked for the container to stay stopped.
fn stopped_while_waiting(store: &Store, id: &str, d: std::time::Duration) -> bool {
    let waited = std::time::Instant::now();
    while waited.elapsed() < d {
        if store.container_stop_requested(id).unwrap_or(true) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20).min(d));
    }
    false
}
