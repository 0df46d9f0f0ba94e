//! `kiln run -it` on a real terminal: this test opens its own pty pair, makes its slave the
//! controlling terminal of a `kiln run -it` session, and types into the master as a user
//! would. The container gets a terminal of its own (`tty` says `/dev/pts/0`), follows the
//! window's size, Ctrl-C reaches its foreground job, `exit N` ends it with N, and the user's
//! terminal is restored afterwards. Without a terminal, a second interrupt kills a process 1
//! that ignores the first. `exec -it` gets a terminal of its own, and `attach` joins a detached
//! container's terminal (and detaches with ctrl-p ctrl-q).
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::{Read, Write},
    os::{fd::FromRawFd, unix::process::CommandExt},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

struct Session {
    master: std::fs::File,
    /// The terminal's settings before kiln ran.
    initial: libc::termios,
    seen: Arc<Mutex<String>>,
    child: std::process::Child,
}

fn set_size(fd: &std::fs::File, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a live stack value.
    let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(fd), libc::TIOCSWINSZ, &ws) };
    assert_eq!(r, 0);
}

fn termios(fd: &std::fs::File) -> libc::termios {
    // SAFETY: tcgetattr fills a zeroed termios of this frame.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(
            libc::tcgetattr(std::os::fd::AsRawFd::as_raw_fd(fd), &mut t),
            0
        );
        t
    }
}

impl Session {
    fn start(root: &std::path::Path, args: &[&str]) -> Session {
        Session::start_with(root, args, &[])
    }

    /// [`Session::start`] with `env` set for kiln.
    fn start_with(
        root: &std::path::Path,
        args: &[&str],
        env: &[(&str, &std::path::Path)],
    ) -> Session {
        let (mut m, mut s) = (0, 0);
        // SAFETY: openpty writes two descriptors into the integers given; no name, default
        // settings.
        let r = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "openpty");
        // SAFETY: both descriptors were just made and are owned here alone.
        let (master, slave) =
            unsafe { (std::fs::File::from_raw_fd(m), std::fs::File::from_raw_fd(s)) };
        set_size(&master, 24, 80);
        let initial = termios(&master);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.arg("--root")
            .arg(root)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and TIOCSCTTY are plain system calls, async-signal-safe: the child
        // leads a session whose controlling terminal is the slave, as a login shell's.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let seen = Arc::new(Mutex::new(String::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Session {
            master,
            initial,
            seen,
            child,
        }
    }

    fn type_text(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
    }

    /// Waits until the output holds `text` (at most 20 s: a bound for a loaded machine, not a
    /// claim about speed); the output so far.
    fn expect(&self, text: &str) -> String {
        let t0 = Instant::now();
        loop {
            let seen = self.seen.lock().unwrap().clone();
            if seen.contains(text) {
                return seen;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "never saw {text:?} in:\n{seen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn an_interactive_shell_on_a_terminal_of_its_own() {
    if !common::can_sandbox("an_interactive_shell_on_a_terminal_of_its_own") {
        return;
    }
    let root = common::store_with_base();
    let mut s = Session::start(
        root.path(),
        &["run", "--rm", "-it", "kiln.local/busybox", "sh"],
    );
    s.expect("/ # ");
    // While it runs, the user's terminal is raw: no echo, no line editing by the host.
    let raw = termios(&s.master);
    assert_eq!(raw.c_lflag & (libc::ICANON | libc::ECHO), 0);
    s.type_text("tty; stty size; echo one$((1+1))\r");
    let out = s.expect("one2");
    assert!(
        out.contains("/dev/pts/0"),
        "the container's own terminal: {out}"
    );
    assert!(out.contains("24 80"), "the window's size: {out}");
    // A new size: the kernel tells kiln (SIGWINCH to the terminal's foreground group), kiln
    // tells the container's terminal.
    set_size(&s.master, 33, 101);
    std::thread::sleep(Duration::from_millis(1000));
    s.type_text("stty size; echo two$((1+1))\r");
    let out = s.expect("two2");
    assert!(out.contains("33 101"), "resized: {out}");
    // Ctrl-C interrupts the foreground job inside, not kiln, not the shell.
    s.type_text("sleep 30; echo after$((1+1))\r");
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    s.type_text("\x03");
    s.type_text("echo alive$((1+1))\r");
    s.expect("alive2");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "sleep 30 was interrupted"
    );
    assert!(!s.seen.lock().unwrap().contains("after2"));
    s.type_text("exit 7\r");
    let status = s.child.wait().unwrap();
    assert_eq!(status.code(), Some(7));
    // The user's terminal is as it was.
    let after = termios(&s.master);
    assert_eq!(
        after.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG),
        s.initial.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG)
    );
}

#[test]
fn without_i_stdin_is_empty_and_with_t_output_is_one_stream() {
    if !common::can_sandbox("without_i_stdin_is_empty_and_with_t_output_is_one_stream") {
        return;
    }
    let root = common::store_with_base();
    let r = root.path();
    // No -i: the container reads nothing, as docker's (the input here is never read).
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(r)
        .args([
            "run",
            "--rm",
            "kiln.local/busybox",
            "sh",
            "-c",
            "cat; echo end",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(b"typed\n");
    let out = child.wait_with_output().unwrap();
    drop(input);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "end\n");
    // -t without a terminal here: the container still gets one; stderr comes on its stream.
    let (code, out, err) = common::kiln(
        r,
        &[
            "run",
            "--rm",
            "-t",
            "kiln.local/busybox",
            "sh",
            "-c",
            "tty; echo oops >&2",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "/dev/pts/0\r\noops\r\n", "a terminal's line endings");
    // Detached with -t: the terminal's output is the log's stdout.
    let (code, id, err) = common::kiln(
        r,
        &[
            "run",
            "-dt",
            "kiln.local/busybox",
            "sh",
            "-c",
            "tty; echo oops >&2",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (_, waited, _) = common::kiln(r, &["wait", id.trim()]);
    assert_eq!(waited.trim(), "0");
    let (_, logs, logs_err) = common::kiln(r, &["logs", id.trim()]);
    assert_eq!(
        (logs.as_str(), logs_err.as_str()),
        ("/dev/pts/0\r\noops\r\n", "")
    );
}

#[test]
fn a_second_interrupt_kills_a_process_1_that_ignores_it() {
    if !common::can_sandbox("a_second_interrupt_kills_a_process_1_that_ignores_it") {
        return;
    }
    let root = common::store_with_base();
    // sleep as process 1 has no handler for SIGINT: the first interrupt does nothing.
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root.path())
        .args(["run", "--rm", "kiln.local/busybox", "sleep", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ready once kiln's child (the container's process 1) runs sleep itself: a signal before
    // the exec would reach kiln's own code instead.
    let kiln_pid = child.id();
    let t0 = Instant::now();
    let runs_sleep = || {
        std::fs::read_dir(format!("/proc/{kiln_pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|c| c.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .any(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
    };
    while !runs_sleep() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the container never ran sleep"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) with plain integers, to our own child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "ignored by process 1");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(137), "killed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("again to kill it"), "{err}");
    assert!(err.contains("second interrupt"), "{err}");
}

#[test]
fn exec_it_gets_a_terminal_and_exec_d_runs_on() {
    if !common::can_sandbox("exec_it_gets_a_terminal_and_exec_d_runs_on") {
        return;
    }
    let root = common::store_with_base();
    let r = root.path();
    let (code, id, err) = common::kiln(
        r,
        &[
            "run",
            "-d",
            "-t",
            "kiln.local/busybox",
            "sh",
            "-c",
            "sleep 300",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_string();
    // A terminal of its own next to process 1's (which took /dev/pts/0).
    let mut s = Session::start(r, &["exec", "-it", &id, "sh"]);
    s.expect("# ");
    s.type_text("tty; echo in$((1+1))\r");
    let out = s.expect("in2");
    assert!(out.contains("/dev/pts/1"), "{out}");
    s.type_text("exit 3\r");
    assert_eq!(s.child.wait().unwrap().code(), Some(3));
    assert_eq!(
        termios(&s.master).c_lflag & libc::ICANON,
        s.initial.c_lflag & libc::ICANON,
        "terminal restored"
    );
    // No -i: nothing is read; -i: the input is.
    let piped = |args: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(r)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(b"typed\n");
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
    };
    assert_eq!(piped(&["exec", &id, "sh", "-c", "cat; echo end"]), "end\n");
    assert_eq!(piped(&["exec", "-i", &id, "cat"]), "typed\n");
    // -d: kiln returns, the command goes on; --env-file as run's.
    let env = r.join("env");
    std::fs::write(&env, "# comment\nFROM_FILE=yes\n").unwrap();
    let (code, out, err) = common::kiln(
        r,
        &[
            "exec",
            "-d",
            "--env-file",
            env.to_str().unwrap(),
            &id,
            "sh",
            "-c",
            "sleep 0.5; echo $FROM_FILE > /bg",
        ],
    );
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    let (_, early, _) = common::kiln(r, &["exec", &id, "cat", "/bg"]);
    assert_eq!(early, "", "still sleeping");
    let t0 = Instant::now();
    loop {
        let (_, done, _) = common::kiln(r, &["exec", &id, "cat", "/bg"]);
        if done == "yes\n" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "exec -d never wrote"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    common::kiln(r, &["rm", "-f", &id]);
}

#[test]
fn attach_to_a_detached_terminal_then_detach_and_come_back() {
    if !common::can_sandbox("attach_to_a_detached_terminal_then_detach_and_come_back") {
        return;
    }
    let root = common::store_with_base();
    let r = root.path();
    let (code, _, err) = common::kiln(
        r,
        &["run", "-dit", "--name", "shell", "kiln.local/busybox", "sh"],
    );
    assert_eq!(code, 0, "{err}");
    // Attach, type, see the answer; the window's size reaches the container's terminal.
    let mut s = Session::start(r, &["attach", "shell"]);
    std::thread::sleep(Duration::from_millis(300));
    s.type_text("stty size; echo first$((1+1))\r");
    let out = s.expect("first2");
    assert!(out.contains("24 80"), "{out}");
    set_size(&s.master, 40, 120);
    std::thread::sleep(Duration::from_millis(1000));
    s.type_text("stty size; echo second$((1+1))\r");
    let out = s.expect("second2");
    assert!(out.contains("40 120"), "{out}");
    // ctrl-p ctrl-q: detached, exit 0, the container runs on, the terminal restored.
    s.type_text("\x10\x11");
    assert_eq!(s.child.wait().unwrap().code(), Some(0));
    assert_eq!(
        termios(&s.master).c_lflag & libc::ICANON,
        s.initial.c_lflag & libc::ICANON
    );
    let (_, ps, _) = common::kiln(r, &["ps", "--filter", "name=shell", "-q"]);
    assert_eq!(ps.lines().count(), 1, "still running");
    // Back again: the shell is the same one (its variable is there); `exit 6` ends it all.
    let mut s = Session::start(r, &["attach", "--detach-keys", "ctrl-x", "shell"]);
    std::thread::sleep(Duration::from_millis(300));
    s.type_text("X=kept; echo $X-$((1+1))\r");
    s.expect("kept-2");
    s.type_text("exit 6\r");
    assert_eq!(s.child.wait().unwrap().code(), Some(6));
    let (_, waited, _) = common::kiln(r, &["wait", "shell"]);
    assert_eq!(waited.trim(), "6");
    // Without a terminal (-di): input through a pipe, output on its streams, stdin's end ends
    // `cat`, and attach exits with the container's code.
    let (code, _, err) = common::kiln(
        r,
        &[
            "run",
            "-di",
            "--name",
            "reader",
            "kiln.local/busybox",
            "sh",
            "-c",
            "cat; echo done >&2; exit 3",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(r)
        .args(["attach", "reader"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"one\ntwo\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "done\n");
    let (code, _, err) = common::kiln(r, &["attach", "reader"]);
    assert_eq!(code, 1);
    assert!(err.contains("stopped container"), "{err}");
    common::kiln(r, &["rm", "-f", "shell", "reader"]);
}

#[test]
fn login_asks_at_the_terminal_and_never_shows_the_password() {
    if !common::have(
        "python3",
        "login_asks_at_the_terminal_and_never_shows_the_password",
    ) {
        return;
    }
    // A registry that takes any Basic credentials (tests/common/hostile_registry.py).
    let port = common::registry::free_port();
    let _registry = common::registry::Reaped::listening(
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/common/hostile_registry.py"
            ))
            .args([&port.to_string(), "upload-to", "http://127.0.0.1:1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        port,
        "the registry",
    );
    let root = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let settings = config.path().join("registries.json");
    std::fs::write(&settings, "{}").unwrap();
    let auth_file = config.path().join("no-auth.json");
    let env = [
        ("DOCKER_CONFIG", config.path()),
        ("KILN_REGISTRIES_CONF", settings.as_path()),
        ("REGISTRY_AUTH_FILE", auth_file.as_path()),
    ];
    let host = format!("127.0.0.1:{port}");
    let mut s = Session::start_with(root.path(), &["login", &host], &env);
    s.expect("Username: ");
    s.type_text("alice\n");
    s.expect("Password: ");
    s.type_text("s3cret-typed\n");
    let seen = s.expect("Login Succeeded");
    assert!(seen.contains("alice"), "the username is echoed: {seen}");
    assert!(
        !seen.contains("s3cret-typed"),
        "the password was echoed: {seen}"
    );
    assert!(s.child.wait().unwrap().success());
    // The terminal's echo is back as it was.
    assert_eq!(termios(&s.master).c_lflag, s.initial.c_lflag);
    let stored = std::fs::read_to_string(config.path().join("config.json")).unwrap();
    // base64("alice:s3cret-typed")
    assert!(stored.contains("YWxpY2U6czNjcmV0LXR5cGVk"), "{stored}");
    // Without a terminal, nothing is asked: docker's error.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["login", &host])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot perform an interactive login from a non-TTY device"),
        "{err}"
    );
}

#[test]
fn prunes_ask_on_a_terminal_unless_forced() {
    if !common::can_sandbox("prunes_ask_on_a_terminal_unless_forced") {
        return;
    }
    let root = common::store_with_base();
    let r = root.path();
    let (code, _, err) = common::kiln(r, &["run", "--name", "ended", "kiln.local/busybox", "true"]);
    assert_eq!(code, 0, "{err}");
    let listed = |r: &std::path::Path| common::kiln(r, &["ps", "-a", "-q"]).1;
    // Answered no: nothing goes.
    let mut s = Session::start(r, &["container", "prune"]);
    s.expect("Are you sure you want to continue? [y/N]");
    s.type_text("n\n");
    assert!(s.child.wait().unwrap().success());
    assert!(!listed(r).is_empty(), "the answer was no");
    // Answered yes: the ended container goes.
    let mut s = Session::start(r, &["container", "prune"]);
    s.expect("Are you sure you want to continue? [y/N]");
    s.type_text("y\n");
    s.expect("Total reclaimed containers: 1");
    assert!(s.child.wait().unwrap().success());
    assert!(listed(r).is_empty());
    // Without a terminal nothing is asked (scripts and CI go on).
    let (code, out, _) = common::kiln(r, &["image", "prune"]);
    assert_eq!(code, 0);
    assert!(out.contains("Total reclaimed space"), "{out}");
}
