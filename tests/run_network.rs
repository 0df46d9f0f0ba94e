//! `kiln run` on docker's default bridge network, for real on this machine (netavark's bridge,
//! veth pairs and iptables rules): published ports reachable from the host's loopback and the
//! container's address, conflicts refused before the container starts, traffic from the
//! container to the host's side of the bridge, and nothing left behind after `kiln rm` or after
//! every kiln process was killed. Only loopback and the bridge's private subnet are contacted.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::{kiln, store_with_base};

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::Command,
    time::Duration,
};

/// Whether netavark (Debian's `netavark`, which `.ci/run` installs) is there: loudly skipped
/// on a developer machine without it, a failure under CI.
fn have_netavark(test: &str) -> bool {
    let found = ["/usr/lib/podman/netavark", "/usr/libexec/podman/netavark"]
        .iter()
        .any(|p| Path::new(p).is_file());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: netavark is not installed, and CI must run this test"
        );
        eprintln!("skipped: {test}: netavark is not installed");
    }
    found && common::can_sandbox(test)
}

/// Removes every container of the store when the test ends, passed or not: a container left
/// running would keep its rules and its namespace after the store's directory is gone.
struct Cleanup<'a>(&'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let (_, ids, _) = kiln(self.0, &["ps", "-aq"]);
        for id in ids.lines() {
            let _ = kiln(self.0, &["rm", "-f", id]);
        }
    }
}

fn ok(root: &Path, args: &[&str]) -> String {
    let (code, out, err) = kiln(root, args);
    assert_eq!(code, 0, "kiln {args:?}: {err}");
    out
}

/// One HTTP GET of `/` at `addr`, retried while the server starts; the body.
fn get(addr: &str) -> String {
    for _ in 0..100 {
        if let Ok(mut s) =
            TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
        {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
            let mut reply = String::new();
            if s.read_to_string(&mut reply).is_ok() && reply.starts_with("HTTP/1.") {
                return reply
                    .split("\r\n\r\n")
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing answered at {addr}");
}

/// The iptables NAT rules and the host's interfaces now: what a container must not leave.
fn plumbing() -> (String, String) {
    let nat = Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .unwrap();
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    (
        String::from_utf8_lossy(&nat.stdout).into_owned(),
        String::from_utf8_lossy(&links.stdout).into_owned(),
    )
}

const SERVE: &str =
    "mkdir -p /www && echo hello-$HOSTNAME > /www/index.html && exec httpd -f -p 80 -h /www";

#[test]
fn published_ports_reach_the_container_and_go_with_it() {
    if !have_netavark("published_ports_reach_the_container_and_go_with_it") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let _cleanup = Cleanup(r);
    let id = ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--hostname",
            "web",
            "-p",
            "127.0.0.1::80",
            "kiln.local/busybox",
            "sh",
            "-c",
            SERVE,
        ],
    );
    let id = id.trim();
    // docker's `port` lines and PORTS column.
    let port = ok(r, &["port", "web", "80/tcp"]);
    let public = port.trim().to_string();
    assert!(public.starts_with("127.0.0.1:"), "{port}");
    assert_eq!(
        ok(r, &["port", "web"]).trim(),
        format!("80/tcp -> {public}")
    );
    assert!(ok(r, &["ps"]).contains(&format!("{public}->80/tcp")));
    // Reachable through the host's loopback, and at the container's own address.
    assert_eq!(get(&public), "hello-web\n");
    let ip = ok(
        r,
        &["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"],
    );
    let ip = ip.trim();
    assert!(ip.starts_with("10.90."), "{ip}");
    assert_eq!(get(&format!("{ip}:80")), "hello-web\n");
    let ports = ok(
        r,
        &["inspect", "-f", "{{json .NetworkSettings.Ports}}", "web"],
    );
    assert!(
        ports.contains(&public.rsplit(':').next().unwrap().to_string()),
        "{ports}"
    );
    // Its own namespace: eth0 with that address, the host's interfaces not there.
    let addrs = ok(r, &["exec", "web", "ip", "-o", "-4", "addr"]);
    assert!(addrs.contains(&format!("eth0    inet {ip}/16")), "{addrs}");
    assert!(ok(r, &["exec", "web", "cat", "/etc/hosts"]).contains(&format!("{ip}\tweb")));

    // The same host port again, and one a host process listens on: refused before starting.
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "-p",
            &format!("{public}:80"),
            "kiln.local/busybox",
            "true",
        ],
    );
    assert_eq!(code, 125);
    assert!(err.contains("port is already allocated"), "{err}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = listener.local_addr().unwrap();
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "-p",
            &format!("{busy}:80"),
            "kiln.local/busybox",
            "true",
        ],
    );
    assert_eq!(code, 125);
    assert!(err.contains("port is already allocated"), "{err}");
    drop(listener);

    // From the container to a server on the host's side of the bridge (its gateway).
    let host = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    let served = std::thread::spawn(move || {
        let (mut s, peer) = host.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        s.write_all(b"HTTP/1.0 200 OK\r\n\r\nfrom-host\n").unwrap();
        peer.ip().to_string()
    });
    let got = ok(
        r,
        &[
            "exec",
            "web",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://10.90.0.1:{host_port}/"),
        ],
    );
    assert_eq!(got, "from-host\n");
    assert_eq!(served.join().unwrap(), ip, "the container's own address");

    // Another container in its network namespace (`container:web`): its loopback is web's.
    let got = ok(
        r,
        &[
            "run",
            "--rm",
            "--network",
            "container:web",
            "kiln.local/busybox",
            "wget",
            "-q",
            "-O",
            "-",
            "http://127.0.0.1/",
        ],
    );
    assert_eq!(got, "hello-web\n");

    // Stopped: nothing published; started again: published again.
    ok(r, &["stop", "-t", "1", "web"]);
    assert_eq!(ok(r, &["port", "web"]), "");
    let (nat, _) = plumbing();
    assert!(!nat.contains(id), "rules of a stopped container:\n{nat}");
    ok(r, &["start", "web"]);
    let public = ok(r, &["port", "web", "80"]).trim().to_string();
    assert_eq!(get(&public), "hello-web\n");

    // Removed: no rule names it, its veth's host end is gone, its namespace file is gone.
    let dir = r.join("containers").join(id);
    assert!(dir.join("netns").exists());
    // The host end of the container's eth0, by interface index.
    let peer = ok(r, &["exec", "web", "cat", "/sys/class/net/eth0/iflink"]);
    let peer = format!("{}: ", peer.trim());
    let (_, links) = plumbing();
    assert!(
        links.lines().any(|l| l.starts_with(&peer)),
        "{peer}\n{links}"
    );
    ok(r, &["rm", "-f", "web"]);
    let (nat, links) = plumbing();
    assert!(!nat.contains(id), "rules left after rm:\n{nat}");
    assert!(!dir.join("netns").exists());
    assert!(
        !links.lines().any(|l| l.starts_with(&peer)),
        "its veth is left: {peer}\n{links}"
    );
}

#[test]
fn a_killed_containers_network_is_torn_down_by_the_next_command() {
    if !have_netavark("a_killed_containers_network_is_torn_down_by_the_next_command") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let _cleanup = Cleanup(r);
    let id = ok(
        r,
        &[
            "run",
            "-d",
            "-p",
            "127.0.0.1::80",
            "kiln.local/busybox",
            "sh",
            "-c",
            SERVE,
        ],
    );
    let id = id.trim().to_string();
    let dir = r.join("containers").join(&id);
    let public = ok(r, &["port", &id, "80"]).trim().to_string();
    let port = public.rsplit(':').next().unwrap().to_string();
    assert!(get(&public).starts_with("hello-"));
    let (nat, _) = plumbing();
    assert!(nat.contains(&id), "{nat}");
    // Every kiln process of this store, and the container, killed outright.
    let store = r.display().to_string();
    let _ = Command::new("pkill")
        .args(["-KILL", "-f", &format!("kiln --root {store} ")])
        .status();
    for _ in 0..100 {
        if TcpStream::connect_timeout(&public.parse().unwrap(), Duration::from_millis(200)).is_err()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Any next command of the store tears down what was left: rules, namespace, port.
    ok(r, &["ps", "-a"]);
    let (nat, _) = plumbing();
    assert!(!nat.contains(&id), "rules left:\n{nat}");
    assert!(
        !nat.contains(&format!("--dport {port} ")),
        "rules left:\n{nat}"
    );
    assert!(!dir.join("netns").exists());
    // The port is free again for another container.
    let again = ok(
        r,
        &[
            "run",
            "-d",
            "-p",
            &format!("{public}:80"),
            "kiln.local/busybox",
            "sh",
            "-c",
            SERVE,
        ],
    );
    assert!(get(&public).starts_with("hello-"));
    ok(r, &["rm", "-f", again.trim()]);
}

#[test]
fn host_and_none_networks_are_as_docker_has_them() {
    if !have_netavark("host_and_none_networks_are_as_docker_has_them") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let _cleanup = Cleanup(r);
    let none = ok(
        r,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "kiln.local/busybox",
            "ls",
            "/sys/class/net",
        ],
    );
    assert_eq!(none, "lo\n");
    let bridged = ok(
        r,
        &["run", "--rm", "kiln.local/busybox", "ls", "/sys/class/net"],
    );
    assert_eq!(bridged, "eth0\nlo\n");
    let host = ok(
        r,
        &[
            "run",
            "--rm",
            "--network",
            "host",
            "kiln.local/busybox",
            "ls",
            "/sys/class/net",
        ],
    );
    assert!(host.lines().count() >= 2 && host.contains("lo"), "{host}");
    // Ports need the bridge.
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "--network",
            "host",
            "-p",
            "80",
            "kiln.local/busybox",
            "true",
        ],
    );
    assert_eq!(code, 125);
    assert!(err.contains("need the bridge network"), "{err}");
}

#[test]
fn containers_on_a_user_network_find_each_other_by_name() {
    if !have_netavark("containers_on_a_user_network_find_each_other_by_name") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let _cleanup = Cleanup(r);
    // A name unique to this run: networks of parallel tests never meet.
    let net = format!("app{}", std::process::id());
    let id = ok(r, &["network", "create", "--label", "k=v", &net]);
    assert_eq!(id.trim().len(), 64);
    assert!(ok(r, &["network", "ls"]).contains(&net));
    let subnet = ok(
        r,
        &[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Subnet}}",
            &net,
        ],
    );
    assert!(subnet.starts_with("10.91."), "{subnet}");
    ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "db",
            "--network",
            &net,
            "--network-alias",
            "database",
            "kiln.local/busybox",
            "sh",
            "-c",
            "mkdir -p /w && echo db-here > /w/index.html && exec httpd -f -p 80 -h /w",
        ],
    );
    // By its name and by its alias, from another container on the network.
    let got = ok(
        r,
        &[
            "run",
            "--rm",
            "--network",
            &net,
            "kiln.local/busybox",
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://db/ && break; sleep 0.2; done; \
             wget -q -O - http://database/",
        ],
    );
    assert_eq!(got, "db-here\ndb-here\n");
    let members = ok(
        r,
        &["network", "inspect", "-f", "{{json .Containers}}", &net],
    );
    assert!(members.contains("\"Name\":\"db\""), "{members}");
    // The default bridge has no names, as docker's: no resolver of kiln's in its resolv.conf
    // (the host's name servers; nothing is looked up here, so nothing leaves the machine).
    let conf = ok(
        r,
        &[
            "run",
            "--rm",
            "kiln.local/busybox",
            "cat",
            "/etc/resolv.conf",
            "/etc/hosts",
        ],
    );
    assert!(!conf.contains("nameserver 10.9"), "{conf}");
    assert!(!conf.contains("\tdb\n"), "{conf}");
    // In use: not removed; once its container is gone, removed.
    let (code, _, err) = kiln(r, &["network", "rm", &net]);
    assert_eq!(code, 1);
    assert!(err.contains("has active endpoints"), "{err}");
    ok(r, &["rm", "-f", "db"]);
    ok(r, &["network", "rm", &net]);
    assert!(!ok(r, &["network", "ls"]).contains(&net));
    // Mistakes say so.
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "--network",
            "nope",
            "kiln.local/busybox",
            "true",
        ],
    );
    assert_eq!(code, 125);
    assert!(err.contains("network nope not found"), "{err}");
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "--network-alias",
            "x",
            "kiln.local/busybox",
            "true",
        ],
    );
    assert_eq!(code, 125);
    assert!(err.contains("needs a user network"), "{err}");
    let (code, _, err) = kiln(
        r,
        &["network", "create", "--subnet", "10.90.0.0/24", "clash"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("overlaps"), "{err}");
}

#[test]
fn address_mac_hosts_and_name_servers_are_as_asked() {
    if !have_netavark("address_mac_hosts_and_name_servers_are_as_asked") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let _cleanup = Cleanup(r);
    let net = format!("fixed{}", std::process::id());
    // A /24 of its own, chosen from the pid so parallel runs differ.
    let third = 100 + std::process::id() % 100;
    let subnet = format!("10.91.{third}.0/24");
    let (code, _, err) = kiln(r, &["network", "create", "--subnet", &subnet, &net]);
    if code != 0 && err.contains("overlaps") {
        eprintln!("skipped: address_mac_hosts_and_name_servers_are_as_asked: {subnet} is taken");
        return;
    }
    assert_eq!(code, 0, "{err}");
    let ip = format!("10.91.{third}.50");
    let out = ok(
        r,
        &[
            "run",
            "--rm",
            "--network",
            &net,
            "--ip",
            &ip,
            "--mac-address",
            "02:42:ac:11:00:99",
            "--add-host",
            "foo:1.2.3.4",
            "--add-host",
            "gw:host-gateway",
            "--dns",
            "9.9.9.9",
            "--dns-search",
            "example.test",
            "--dns-option",
            "ndots:2",
            "kiln.local/busybox",
            "sh",
            "-c",
            "ip -o -4 addr show eth0; cat /sys/class/net/eth0/address /etc/hosts /etc/resolv.conf",
        ],
    );
    assert!(out.contains(&format!("inet {ip}/24")), "{out}");
    assert!(out.contains("02:42:ac:11:00:99"), "{out}");
    assert!(out.contains("1.2.3.4\tfoo\n"), "{out}");
    assert!(out.contains(&format!("10.91.{third}.1\tgw\n")), "{out}");
    assert!(
        out.contains("nameserver 9.9.9.9\nsearch example.test\noptions ndots:2\n"),
        "{out}"
    );
    assert!(
        !out.contains(&format!("nameserver 10.91.{third}.1")),
        "--dns replaces the network's: {out}"
    );
    // The address is taken while a container holds it; outside the subnet it is refused.
    ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "holder",
            "--network",
            &net,
            "--ip",
            &ip,
            "kiln.local/busybox",
            "sleep",
            "100",
        ],
    );
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "--network",
            &net,
            "--ip",
            &ip,
            "kiln.local/busybox",
            "true",
        ],
    );
    assert_eq!(code, 125);
    assert!(err.contains("Address already in use"), "{err}");
    let (code, _, err) = kiln(
        r,
        &[
            "run",
            "--rm",
            "--network",
            &net,
            "--ip",
            "10.1.2.3",
            "kiln.local/busybox",
            "true",
        ],
    );
    assert_eq!(code, 125);
    assert!(err.contains("no configured subnet"), "{err}");
    let (code, _, err) = kiln(
        r,
        &["run", "--rm", "--ip", &ip, "kiln.local/busybox", "true"],
    );
    assert_eq!(code, 125);
    assert!(err.contains("user defined networks only"), "{err}");
    ok(r, &["rm", "-f", "holder"]);
    ok(r, &["network", "rm", &net]);
}

/// The IPv4 interfaces and addresses of running container `name` (`eth0 10.90.0.2/16`).
fn addresses(root: &Path, name: &str) -> Vec<String> {
    ok(root, &["exec", name, "ip", "-o", "-4", "addr"])
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(format!("{} {}", f.get(1)?, f.get(3)?))
        })
        .filter(|l| !l.starts_with("lo "))
        .collect()
}

#[test]
fn a_running_container_is_connected_to_networks_and_disconnected() {
    if !have_netavark("a_running_container_is_connected_to_networks_and_disconnected") {
        return;
    }
    let root = store_with_base();
    let r = root.path();
    let _cleanup = Cleanup(r);
    let net = format!("more{}", std::process::id());
    ok(r, &["network", "create", &net]);
    let bridge_of = |net: &str| {
        let id = ok(r, &["network", "inspect", "-f", "{{.Id}}", net]);
        format!("kiln-{}", &id.trim()[..10])
    };
    let iface = bridge_of(&net);
    let serve = "mkdir -p /w && echo db-here > /w/index.html && exec httpd -f -p 80 -h /w";
    ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "db",
            "--network",
            &net,
            "kiln.local/busybox",
            "sh",
            "-c",
            serve,
        ],
    );
    // On the default bridge, running: connected at once, on a second interface.
    ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "kiln.local/busybox",
            "sleep",
            "600",
        ],
    );
    assert_eq!(addresses(r, "web").len(), 1);
    ok(r, &["network", "connect", "--alias", "www", &net, "web"]);
    let now = addresses(r, "web");
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now[0].starts_with("eth0 10.90."), "{now:?}");
    assert!(now[1].starts_with("eth1 10.91."), "{now:?}");
    // It finds the network's containers by name now, and they find it by its alias.
    assert_eq!(
        ok(r, &["exec", "web", "wget", "-q", "-O", "-", "http://db/"]),
        "db-here\n"
    );
    let seen = ok(r, &["exec", "db", "sh", "-c", "nslookup www 2>&1"]);
    let web_ip = now[1].split([' ', '/']).nth(1).unwrap().to_string();
    assert!(seen.contains(&web_ip), "{seen}");
    // docker's views of it.
    let networks = ok(
        r,
        &["ps", "--filter", "name=web", "--format", "{{.Networks}}"],
    );
    assert_eq!(networks.trim(), format!("bridge,{net}"));
    let inspected = ok(
        r,
        &["inspect", "-f", "{{json .NetworkSettings.Networks}}", "web"],
    );
    let v: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(v[&net]["IPAddress"], web_ip.as_str(), "{v}");
    assert_eq!(v[&net]["Aliases"], serde_json::json!(["www"]), "{v}");
    assert!(
        v["bridge"]["IPAddress"]
            .as_str()
            .unwrap()
            .starts_with("10.90.")
    );
    let members = ok(
        r,
        &["network", "inspect", "-f", "{{json .Containers}}", &net],
    );
    assert!(members.contains("\"Name\":\"web\""), "{members}");
    // docker's refusals.
    let (code, _, err) = kiln(r, &["network", "connect", &net, "web"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("endpoint with name web already exists"),
        "{err}"
    );
    let (code, _, err) = kiln(r, &["network", "connect", "none", "web"]);
    assert_eq!(code, 1);
    assert!(err.contains("connected to host network"), "{err}");
    ok(
        r,
        &[
            "run",
            "-d",
            "--name",
            "hosted",
            "--network",
            "host",
            "kiln.local/busybox",
            "sleep",
            "600",
        ],
    );
    let (code, _, err) = kiln(r, &["network", "connect", &net, "hosted"]);
    assert_eq!(code, 1);
    assert!(err.contains("sharing network namespace"), "{err}");
    // Kept across a restart: both networks again.
    ok(r, &["restart", "-t", "1", "web"]);
    let again = addresses(r, "web");
    assert_eq!(again.len(), 2, "{again:?}");
    // Disconnected: the interface goes at once, the rest stays.
    ok(r, &["network", "disconnect", &net, "web"]);
    let left = addresses(r, "web");
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with("eth0 10.90."), "{left:?}");
    let (code, _, err) = kiln(r, &["network", "disconnect", &net, "web"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not connected to network"), "{err}");
    // Off every network, it keeps loopback (up, as docker's) and can be connected again live.
    ok(r, &["network", "disconnect", "bridge", "web"]);
    ok(r, &["restart", "-t", "1", "web"]);
    assert!(addresses(r, "web").is_empty());
    let lo = ok(r, &["exec", "web", "ip", "-o", "-4", "addr", "show", "lo"]);
    assert!(lo.contains("127.0.0.1/8"), "{lo}");
    ok(r, &["network", "connect", &net, "web"]);
    let back = addresses(r, "web");
    assert_eq!(back.len(), 1, "{back:?}");
    assert!(back[0].starts_with("eth0 10.91."), "{back:?}");
    // Gone with its containers: no veth, and the network's bridge with its last container.
    ok(r, &["rm", "-f", "web", "db", "hosted"]);
    let (_, links) = plumbing();
    assert!(!links.contains(&format!("{iface}:")), "{links}");
    ok(r, &["network", "rm", &net]);
}

#[test]
fn two_stores_networks_on_one_subnet_are_refused_while_both_would_run() {
    if !have_netavark("two_stores_networks_on_one_subnet_are_refused_while_both_would_run") {
        return;
    }
    let (one, two) = (store_with_base(), store_with_base());
    let (r1, r2) = (one.path(), two.path());
    let (_c1, _c2) = (Cleanup(r1), Cleanup(r2));
    // A /24 of its own (not the range other tests choose from), from the pid.
    let subnet = format!("10.91.{}.0/24", 200 + std::process::id() % 50);
    let net = format!("same{}", std::process::id());
    for r in [r1, r2] {
        let (code, _, err) = kiln(r, &["network", "create", "--subnet", &subnet, &net]);
        if code != 0 && err.contains("overlaps") {
            eprintln!("skipped: two_stores_networks_on_one_subnet: {subnet} is taken");
            return;
        }
        assert_eq!(code, 0, "{err}");
    }
    ok(
        r1,
        &[
            "run",
            "-d",
            "--name",
            "first",
            "--network",
            &net,
            "kiln.local/busybox",
            "sleep",
            "600",
        ],
    );
    // The second store's network would route the same subnet through a second bridge.
    let (code, _, err) = kiln(
        r2,
        &[
            "run",
            "--rm",
            "--network",
            &net,
            "kiln.local/busybox",
            "true",
        ],
    );
    assert_eq!(code, 125);
    assert!(err.contains("is already routed through kiln-"), "{err}");
    // Once the first is gone, the second runs.
    ok(r1, &["rm", "-f", "first"]);
    ok(
        r2,
        &[
            "run",
            "--rm",
            "--network",
            &net,
            "kiln.local/busybox",
            "true",
        ],
    );
    for r in [r1, r2] {
        ok(r, &["network", "rm", &net]);
    }
}
