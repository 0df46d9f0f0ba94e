//! Rootless kiln, end to end: started as an unprivileged user (`nobody`, through `setpriv`),
//! kiln moves into a user namespace of its own and builds (RUN, COPY, a cache mount) and runs
//! images; its mounts never appear in the host's mount table, not even after a SIGKILL; an id
//! the namespace does not have is named, not a bare EINVAL.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::{BASE, added_layers, can_sandbox, have, manifest_of};

use std::{path::Path, process::Command};

const NOBODY: u32 = 65534;

/// Runs kiln as nobody: (exit code, stdout, stderr).
fn kiln_as_nobody(root: &Path, args: &[&str]) -> (i32, String, String) {
    let out = nobody_cmd(root, args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn nobody_cmd(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env("HOME", root)
        .current_dir("/");
    c
}

fn chown_tree(p: &Path) {
    std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path());
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Runs kiln as nobody and expects success: its stdout.
fn ok_as_nobody(root: &Path, args: &[&str]) -> String {
    let (code, out, err) = kiln_as_nobody(root, args);
    assert_eq!(code, 0, "kiln {args:?}: {err}");
    out
}

/// A directory nobody owns with a store in it holding the base image: (the directory, the
/// store's root).
fn nobodys_store() -> (tempfile::TempDir, std::path::PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (root, base) = (w.join("store"), w.join("base"));
    std::fs::create_dir_all(&root).unwrap();
    copy_dir(Path::new(BASE), &base);
    chown_tree(w);
    let (code, _, err) = kiln_as_nobody(&root, &["load", "-i", base.to_str().unwrap()]);
    assert_eq!(code, 0, "kiln load: {err}");
    (work, root)
}

fn host_mounts_under(p: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&p.display().to_string()))
        .map(str::to_string)
        .collect()
}

#[test]
fn an_unprivileged_user_builds_and_runs() {
    // Root is needed here only to become nobody.
    if !can_sandbox("an_unprivileged_user_builds_and_runs") || !have("setpriv", "rootless") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (root, ctx, base) = (w.join("store"), w.join("ctx"), w.join("base"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&ctx).unwrap();
    copy_dir(Path::new(BASE), &base);
    std::fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln.local/busybox\n\
         COPY hello.txt /\n\
         RUN --mount=type=cache,target=/c echo x >> /c/n && id -u > /uid && rm /bin/ls\n\
         CMD [\"cat\", \"/hello.txt\", \"/uid\"]\n",
    )
    .unwrap();
    chown_tree(w);
    let (code, _, err) = kiln_as_nobody(&root, &["load", "-i", base.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kiln_as_nobody(&root, &["build", "-t", "r", ctx.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    // The layers are an image like any other: root-owned entries, the deletion a whiteout.
    let layers = added_layers(&root, &manifest_of(&root, "r"));
    let run: Vec<(String, u64)> = layers[1].iter().map(|e| (e.0.clone(), e.2)).collect();
    assert_eq!(
        run,
        [("bin", 0), ("bin/.wh.ls", 0), ("uid", 0)].map(|(p, u)| (p.to_string(), u)),
        "{layers:?}"
    );
    let (code, out, err) = kiln_as_nobody(&root, &["run", "--rm", "r"]);
    assert_eq!((code, out.as_str()), (0, "hello\n0\n"), "{err}");
    // The store's files belong to the user on the host.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(root.join("meta.db")).unwrap().uid(),
        NOBODY
    );
    // An id the namespace lacks is named.
    let (code, _, err) = kiln_as_nobody(&root, &["run", "--rm", "-u", "1000", "r"]);
    assert_eq!(code, 125);
    assert!(
        err.contains("id 1000 does not exist in rootless kiln's user namespace"),
        "{err}"
    );
    assert!(
        host_mounts_under(w).is_empty(),
        "{:?}",
        host_mounts_under(w)
    );

    // A rootless build killed mid-RUN leaves no mount on the host, and none in the store's
    // shared mount namespace once the next kiln command has recovered the store.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM kiln.local/busybox\nRUN sleep 5\n",
    )
    .unwrap();
    let mut child = nobody_cmd(&root, &["build", "-q", ctx.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    // setpriv execs kiln: the child is kiln itself.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        host_mounts_under(w).is_empty(),
        "{:?}",
        host_mounts_under(w)
    );
    let (code, out, err) = kiln_as_nobody(&root, &["store", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    let shared = std::fs::read_to_string(format!("/proc/{}/mountinfo", pause_of(&root))).unwrap();
    let left: Vec<&str> = shared
        .lines()
        .filter(|l| l.contains(&w.display().to_string()))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn an_unprivileged_user_runs_detached_containers() {
    if !can_sandbox("an_unprivileged_user_runs_detached_containers") || !have("setpriv", "rootless")
    {
        return;
    }
    let (work, root) = nobodys_store();
    let w = work.path();
    let ok = |args: &[&str]| ok_as_nobody(&root, args);
    // The monitor runs inside the user's namespace and knows it is not root on the host: it
    // used to end at once ("the monitor ended before the container started").
    ok(&[
        "run",
        "-d",
        "--name",
        "bg",
        "kiln.local/busybox",
        "sh",
        "-c",
        "echo up; exec sleep 100",
    ]);
    let mut logs = String::new();
    for _ in 0..100 {
        logs = ok(&["logs", "bg"]);
        if !logs.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(logs, "up\n");
    assert!(ok(&["ps"]).contains(" Up "), "running");
    // exec joins the container's user namespace (a new one of its own could not enter the
    // container's pid namespace: EPERM).
    assert_eq!(
        ok(&["exec", "bg", "sh", "-c", "id -u; cat /proc/1/cmdline"]),
        "0\nsleep\u{0}100\u{0}"
    );
    let (code, _, err) = kiln_as_nobody(&root, &["exec", "-u", "1", "bg", "true"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("does not exist in rootless kiln's user namespace"),
        "{err}"
    );
    ok(&["stop", "-t", "1", "bg"]);
    assert!(ok(&["ps", "-a"]).contains("Exited (137)"));
    ok(&["start", "bg"]);
    assert!(ok(&["ps"]).contains(" Up "), "started again");
    ok(&["rm", "-f", "bg"]);
    assert_eq!(ok(&["ps", "-aq"]), "");
    // A tmpfs volume is mounted in the store's shared mount namespace: a second container sees
    // what the first wrote there, and its content goes when the last one has stopped.
    ok(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "scratch",
    ]);
    ok(&[
        "run",
        "-d",
        "--name",
        "writer",
        "-v",
        "scratch:/t",
        "kiln.local/busybox",
        "sh",
        "-c",
        "echo in-tmpfs > /t/f; exec sleep 100",
    ]);
    let mut seen = String::new();
    for _ in 0..50 {
        let (_, out, _) = kiln_as_nobody(
            &root,
            &[
                "run",
                "--rm",
                "-v",
                "scratch:/t",
                "kiln.local/busybox",
                "sh",
                "-c",
                "grep -q ' /t tmpfs ' /proc/mounts && cat /t/f",
            ],
        );
        seen = out;
        if !seen.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(seen, "in-tmpfs\n");
    ok(&["rm", "-f", "writer"]);
    assert_eq!(
        ok(&[
            "run",
            "--rm",
            "-v",
            "scratch:/t",
            "kiln.local/busybox",
            "ls",
            "/t"
        ]),
        ""
    );
    // A user network that does not exist is named.
    let (code, _, err) = kiln_as_nobody(
        &root,
        &[
            "run",
            "--rm",
            "--network",
            "mine",
            "kiln.local/busybox",
            "true",
        ],
    );
    assert_eq!(code, 125);
    assert!(err.contains("network mine not found"), "{err}");
    assert!(host_mounts_under(w).is_empty());
}

/// slirp4netns processes (not yet reaped ones) whose command line names `dir`.
fn slirps_for(dir: &Path) -> usize {
    let want = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            let p = e.path();
            let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
            let cmd = std::fs::read(p.join("cmdline")).unwrap_or_default();
            stat.contains("(slirp4netns)")
                && !stat.contains(") Z ")
                && String::from_utf8_lossy(&cmd).contains(&want)
        })
        .count()
}

/// A server on one of the host's addresses (not its loopback, which slirp4netns keeps closed)
/// answers a container (`kiln run --rm` with `net`, through `ok`) that reaches it as
/// `host-gateway`.
fn host_answers(ok: &dyn Fn(&[&str]) -> String, net: &[&str]) {
    let server = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = server.local_addr().unwrap().port().to_string();
    let answer = std::thread::spawn(move || {
        use std::io::Write;
        let (mut s, _) = server.accept().unwrap();
        s.write_all(b"from-host\n").unwrap();
    });
    let nc = format!("nc -w 5 thehost {host_port} </dev/null");
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(net);
    args.extend([
        "--add-host",
        "thehost:host-gateway",
        "kiln.local/busybox",
        "sh",
        "-c",
        &nc,
    ]);
    assert_eq!(ok(&args), "from-host\n");
    answer.join().unwrap();
}

#[test]
fn an_unprivileged_user_publishes_ports() {
    if !can_sandbox("an_unprivileged_user_publishes_ports")
        || !have("setpriv", "rootless")
        || !have("slirp4netns", "rootless networking")
    {
        return;
    }
    // Opened as the user: 0666, as udev makes it (and .ci/run where udev is missing).
    let tun = std::fs::metadata("/dev/net/tun").map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o666 == 0o666
    });
    if !matches!(tun, Ok(true)) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "/dev/net/tun is not open to users, and CI must run this test"
        );
        eprintln!("skipped: an_unprivileged_user_publishes_ports: /dev/net/tun is not 0666");
        return;
    }
    let (work, root) = nobodys_store();
    let w = work.path();
    let ok = |args: &[&str]| ok_as_nobody(&root, args);
    // A namespace of its own, networked by slirp4netns, its name server slirp4netns's.
    let seen = ok(&[
        "run",
        "--rm",
        "kiln.local/busybox",
        "sh",
        "-c",
        "ip -o link | cut -d: -f2 | tr -d ' '; grep nameserver /etc/resolv.conf; ls /sys/class/net",
    ]);
    // Its /sys is a sysfs of its own namespace: its interfaces, not the host's.
    assert_eq!(seen, "lo\ntap0\nnameserver 10.0.2.3\nlo\ntap0\n");
    // `host-gateway` is the host, reached through slirp4netns: a server on the host's
    // addresses (not its loopback, which slirp4netns keeps closed) answers the container.
    host_answers(&ok, &[]);
    // A free port of the host's loopback, published: the test (root, outside) reaches it.
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &publish,
        "kiln.local/busybox",
        "sh",
        "-c",
        "mkdir -p /w && echo rootless-web > /w/index.html && exec httpd -f -p 80 -h /w",
    ]);
    let mut body = None;
    for _ in 0..100 {
        body = get(port);
        if body.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(body.as_deref(), Some("rootless-web\n"));
    assert_eq!(
        ok(&["port", "web"]),
        format!("80/tcp -> 127.0.0.1:{port}\n")
    );
    assert_eq!(slirps_for(&root), 1);
    // Taken: docker's words, before the container starts.
    let (code, _, err) = kiln_as_nobody(
        &root,
        &["run", "--rm", "-p", &publish, "kiln.local/busybox", "true"],
    );
    assert_eq!(code, 125);
    assert!(err.contains("port is already allocated"), "{err}");
    // Gone with the container: no slirp4netns left for it.
    ok(&["rm", "-f", "web"]);
    for _ in 0..100 {
        if slirps_for(&root) == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(slirps_for(&root), 0);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    // A slirp4netns that cannot run: on the default network, the host's, said so; with a port
    // published, an error naming it.
    let broken = |args: &[&str]| {
        let out = nobody_cmd(&root, args)
            .env("KILN_SLIRP4NETNS", "/bin/false")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = broken(&["run", "--rm", "kiln.local/busybox", "true"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("the container uses the host's"), "{err}");
    let (code, err) = broken(&["run", "--rm", "-p", &publish, "kiln.local/busybox", "true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("slirp4netns"), "{err}");
    assert!(host_mounts_under(w).is_empty());
}

/// The store's pause process (it keeps the namespaces every rootless kiln of the store joins).
fn pause_of(root: &Path) -> i32 {
    let text = std::fs::read_to_string(root.join("pause.pid")).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

/// Processes running `kiln-pause` for the store at `root`.
fn pauses_for(root: &Path) -> usize {
    let want = format!("kiln-pause\0{}", root.join("pause.pid").display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).starts_with(&want) && !stat.contains(") Z ")
        })
        .count()
}

/// What the store's network namespace (its bridges') holds: its interfaces, and its NAT
/// rules naming `port`.
fn store_netns(root: &Path, port: u16) -> (String, usize) {
    let ns = format!("/proc/{}/root{}/net/netns", pause_of(root), root.display());
    let run = |args: &[&str]| {
        let out = Command::new("nsenter")
            .arg(format!("--net={ns}"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {:?}", out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let links: Vec<String> = run(&["ip", "-o", "link"])
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap().to_string())
        .collect();
    let rules = run(&["iptables", "-t", "nat", "-S"])
        .lines()
        .filter(|l| l.contains(&format!("--dport {port}")))
        .count();
    (links.join(" "), rules)
}

/// A port of the host's loopback that is free now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The body of `GET /` on the host's loopback at `port`, when something answers there.
fn get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    Some(reply.split_once("\r\n\r\n")?.1.to_string())
}

#[test]
fn an_unprivileged_users_containers_share_a_user_network() {
    if !can_sandbox("an_unprivileged_users_containers_share_a_user_network")
        || !have("setpriv", "rootless")
        || !have("slirp4netns", "rootless networking")
        || !have("nsenter", "reading the store's network namespace")
        || !have("iptables", "reading the store's NAT rules")
        || kiln_runtime::network::netavark::binary().is_none()
    {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI must run an_unprivileged_users_containers_share_a_user_network");
        }
        eprintln!("skipped: an_unprivileged_users_containers_share_a_user_network: tools missing");
        return;
    }
    let (work, root) = nobodys_store();
    let w = work.path();
    let ok = |args: &[&str]| ok_as_nobody(&root, args);
    // Kiln processes started at once make one pause process, and every one joins it.
    let many: Vec<_> = (0..4)
        .map(|_| {
            nobody_cmd(&root, &["images", "-q"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    assert!(many.into_iter().all(|mut c| c.wait().unwrap().success()));
    assert_eq!(pauses_for(&root), 1);
    // `kiln info` names it.
    assert_eq!(
        ok(&["info", "--format", "{{.RootlessPause}}"]),
        format!("{}\n", pause_of(&root))
    );
    ok(&["network", "create", "shared"]);
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "shared",
        "-p",
        &publish,
        "kiln.local/busybox",
        "sh",
        "-c",
        "mkdir -p /w && echo by-name > /w/index.html && exec httpd -f -p 80 -h /w",
    ]);
    // Its process is in the store's user namespace, the pause's.
    let pid = ok(&["inspect", "-f", "{{.State.Pid}}", "web"]);
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/user")).unwrap();
    assert_eq!(ns(pid.trim()), ns(&pause_of(&root).to_string()));
    // Another kiln's container reaches it by name, on the bridge of the store's namespace.
    let mut body = String::new();
    for _ in 0..50 {
        let (code, out, _) = kiln_as_nobody(
            &root,
            &[
                "run",
                "--rm",
                "--network",
                "shared",
                "kiln.local/busybox",
                "wget",
                "-qO-",
                "http://web/",
            ],
        );
        if code == 0 {
            body = out;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(body, "by-name\n");
    // The port published from the host's loopback.
    assert_eq!(get(port).as_deref(), Some("by-name\n"));
    assert_eq!(
        ok(&["port", "web"]),
        format!("80/tcp -> 127.0.0.1:{port}\n")
    );
    // Out through the store's slirp4netns (masqueraded by netavark's rules in its namespace):
    // `host-gateway` is one of the host's addresses, and a server there answers.
    host_answers(&ok, &["--network", "shared"]);
    let (links, rules) = store_netns(&root, port);
    assert!(links.contains("veth0"), "{links}");
    assert!(rules > 0, "the port's DNAT rules");
    // Gone with the container: its veth, its rules, its forward on the host.
    ok(&["rm", "-f", "web"]);
    assert_eq!(store_netns(&root, port), ("lo tap0".to_string(), 0));
    assert_eq!(get(port), None);
    // And after a SIGKILL of its monitor and its process: the next kiln command cleans up.
    ok(&[
        "run",
        "-d",
        "--name",
        "killed",
        "--network",
        "shared",
        "-p",
        &publish,
        "kiln.local/busybox",
        "sleep",
        "100",
    ]);
    let pid = ok(&["inspect", "-f", "{{.State.Pid}}", "killed"]);
    let monitors: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).into_owned();
            (cmd.contains("--name\0killed") && cmd.contains(&root.display().to_string()))
                .then(|| e.file_name().to_str()?.parse().ok())
                .flatten()
        })
        .collect();
    assert_eq!(monitors.len(), 1, "the container's monitor");
    for p in monitors.into_iter().chain([pid.trim().parse().unwrap()]) {
        Command::new("kill")
            .args(["-KILL", &p.to_string()])
            .status()
            .unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    ok(&["ps", "-a"]);
    assert_eq!(store_netns(&root, port), ("lo tap0".to_string(), 0));
    assert_eq!(get(port), None);
    let dns = root.join("net/netavark/aardvark-dns");
    let records: String = std::fs::read_dir(&dns)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name() != "aardvark.pid")
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    assert!(!records.contains("killed"), "{records}");
    // The store's slirp4netns ends with its pause process.
    assert_eq!(slirps_for(&root), 1);
    Command::new("kill")
        .args(["-KILL", &pause_of(&root).to_string()])
        .status()
        .unwrap();
    for _ in 0..100 {
        if slirps_for(&root) == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(slirps_for(&root), 0);
    assert!(host_mounts_under(w).is_empty());
}

/// A user made for one test (with a subordinate id range, as `useradd` gives a new user on
/// Debian), removed with its processes when dropped.
struct TestUser {
    name: String,
    subuid: u32,
}

impl TestUser {
    fn new(tag: &str) -> Option<TestUser> {
        let name = format!("kiln-{tag}-{}", std::process::id() % 100_000);
        let _ = Command::new("userdel").arg(&name).output();
        let made = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", &name])
            .status()
            .ok()?;
        assert!(made.success(), "useradd {name}");
        let range = |file: &str| {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    let mut f = l.split(':');
                    (f.next()? == name).then(|| f.next()?.parse::<u32>().ok())?
                })
        };
        if range("/etc/subuid").is_none() || range("/etc/subgid").is_none() {
            // Where useradd gives none: one of the user's own, far from others.
            let r = "3000000-3065535";
            let added = Command::new("usermod")
                .args(["--add-subuids", r, "--add-subgids", r, &name])
                .status()
                .unwrap();
            assert!(added.success(), "usermod --add-subuids");
        }
        let subuid = range("/etc/subuid").unwrap();
        Some(TestUser { name, subuid })
    }

    fn kiln(&self, root: &Path, args: &[&str]) -> (i32, String, String) {
        let out = Command::new("setpriv")
            .args([
                "--reuid",
                &self.name,
                "--regid",
                &self.name,
                "--init-groups",
            ])
            .arg(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(root)
            .args(args)
            .env("HOME", root)
            .current_dir("/")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, root: &Path, args: &[&str]) -> String {
        let (code, out, err) = self.kiln(root, args);
        assert_eq!(code, 0, "kiln {args:?}: {err}");
        out
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // Its pause process and anything else it left, then the user and its ranges.
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .status();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

#[test]
fn a_user_with_subordinate_ids_runs_other_users() {
    if !can_sandbox("a_user_with_subordinate_ids_runs_other_users")
        || !have("setpriv", "rootless")
        || !have("useradd", "making the test's user")
    {
        return;
    }
    // newuidmap answers no --version; it is there or not.
    if !Path::new("/usr/bin/newuidmap").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "newuidmap is missing, and CI must run this test (.ci/run installs uidmap)"
        );
        eprintln!("skipped: a_user_with_subordinate_ids_runs_other_users: no newuidmap");
        return;
    }
    let Some(user) = TestUser::new("ids") else {
        panic!("useradd cannot run");
    };
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (root, base, ctx, shared) = (
        w.join("store"),
        w.join("base"),
        w.join("example"),
        w.join("shared"),
    );
    copy_dir(Path::new(BASE), &base);
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/example"),
        &ctx,
    );
    std::fs::create_dir_all(&shared).unwrap();
    let out = Command::new("chown")
        .args(["-R", &format!("{0}:{0}", user.name)])
        .arg(w)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    user.ok(&root, &["load", "-i", base.to_str().unwrap()]);
    // Root and the range: 1 + 65536 ids (`useradd`'s default range, or the one added).
    let ids = user.ok(&root, &["info", "--format", "{{.RootlessIds}}"]);
    assert!(ids.trim().parse::<u32>().unwrap() > 1000, "{ids}");
    // The README's example: its USER 1000 exists only through the user's range.
    user.ok(
        &root,
        &["build", "-q", "-t", "example", ctx.to_str().unwrap()],
    );
    assert_eq!(
        user.ok(&root, &["run", "--rm", "example"]),
        "hello from kiln, friend\n"
    );
    // Another user inside: its own ids and groups only, none of kiln's (setgroups is allowed
    // with a range mapped, so it is called as root's kiln calls it).
    assert_eq!(
        user.ok(
            &root,
            &["run", "--rm", "-u", "1000:1000", "kiln.local/busybox", "id"]
        ),
        "uid=1000(builder) gid=1000(builder) groups=1000(builder)\n"
    );
    // What it writes to a bind mount is owned, on the host, by the id of the range it maps to.
    let bind = format!("{}:/d", shared.display());
    user.ok(
        &root,
        &[
            "run",
            "--rm",
            "-u",
            "1000:1000",
            "-v",
            &bind,
            "kiln.local/busybox",
            "touch",
            "/d/f",
        ],
    );
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(shared.join("f")).unwrap().uid();
    assert_eq!(owner, user.subuid + 999, "container uid 1000 on the host");
    // exec as that user, in a detached container, joins the same mapping.
    user.ok(
        &root,
        &[
            "run",
            "-d",
            "--name",
            "bg",
            "kiln.local/busybox",
            "sleep",
            "60",
        ],
    );
    assert_eq!(
        user.ok(&root, &["exec", "-u", "1000:1000", "bg", "id"]),
        "uid=1000(builder) gid=1000(builder) groups=1000(builder)\n"
    );
    user.ok(&root, &["rm", "-f", "bg"]);
    assert!(host_mounts_under(w).is_empty());
}

#[test]
fn a_subordinate_range_given_later_is_used_by_the_next_command() {
    if !can_sandbox("a_subordinate_range_given_later_is_used_by_the_next_command")
        || !have("setpriv", "rootless")
        || !have("useradd", "making the test's user")
        || !Path::new("/usr/bin/newuidmap").exists()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run a_subordinate_range_given_later_is_used_by_the_next_command"
        );
        return;
    }
    let Some(user) = TestUser::new("later") else {
        panic!("useradd cannot run");
    };
    let range = format!("{}-{}", user.subuid, user.subuid + 65535);
    let ranges = |flag_u: &str, flag_g: &str| {
        let done = Command::new("usermod")
            .args([flag_u, &range, flag_g, &range, &user.name])
            .status()
            .unwrap();
        assert!(done.success(), "usermod {flag_u}");
    };
    ranges("--del-subuids", "--del-subgids");
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    let out = Command::new("chown")
        .args([&format!("{0}:{0}", user.name)])
        .arg(work.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let info = |f: &str| user.ok(&root, &["info", "--format", f]).trim().to_string();
    assert_eq!(info("{{.RootlessIds}}"), "1", "no range yet");
    let first = pause_of(&root);
    // The range given: the next command maps it, through a new pause process.
    ranges("--add-subuids", "--add-subgids");
    assert_eq!(info("{{.RootlessIds}}"), "65537");
    let second = pause_of(&root);
    assert_ne!(first, second);
    assert_eq!(info("{{.RootlessPause}}"), second.to_string());
    // Joined from then on, not made again.
    assert_eq!(info("{{.RootlessPause}}"), second.to_string());
}
