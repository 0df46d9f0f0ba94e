//! Published ports: docker's `-p [IP:][HOSTPORT:]CONTAINERPORT[/PROTO]` (ranges too) and `-P`,
//! and the host ports they take, checked free before a container starts.

use std::net::{IpAddr, Ipv4Addr};

/// One published port (or range): what the host forwards to the container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Published {
    /// The host address it listens on (`0.0.0.0`: every one).
    pub host_ip: IpAddr,
    /// The first host port; 0 until one is chosen ([`choose_ports`]).
    pub host_port: u16,
    /// The first container port.
    pub container_port: u16,
    /// How many consecutive ports, from both firsts.
    pub range: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The host range to choose the first host port from when the spec named one
    /// (`8000-8010:80`); empty when it named the port itself or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_range: Option<(u16, u16)>,
}

/// A port number or an inclusive range of them (`80`, `8000-8010`).
fn parse_range(text: &str, spec: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| -> Result<u16, String> {
        p.parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("-p {spec}: invalid port {p:?}"))
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if b < a {
                return Err(format!("-p {spec}: invalid range {text:?}"));
            }
            Ok((a, b))
        }
        None => port(text).map(|p| (p, p)),
    }
}

/// Parses one `-p` value as docker does: `80`, `8080:80`, `127.0.0.1:8080:80`,
/// `127.0.0.1::80`, `[::1]:8080:80`, `8000-8001:80-81`, `8000-8010:80`, each with `/tcp` or
/// `/udp`.
pub fn parse(spec: &str) -> Result<Vec<Published>, String> {
    let (rest, protocol) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if protocol != "tcp" && protocol != "udp" {
        return Err(format!(
            "-p {spec}: invalid protocol {protocol:?} (tcp or udp)"
        ));
    }
    // An IPv6 address is bracketed; anything else splits on its last two colons.
    let (ip, host, container) = if let Some(inner) = rest.strip_prefix('[') {
        let (addr, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("-p {spec}: unclosed [ in the address"))?;
        let after = after
            .strip_prefix(':')
            .ok_or_else(|| format!("-p {spec}: expected :HOSTPORT:CONTAINERPORT"))?;
        let (h, c) = after
            .split_once(':')
            .ok_or_else(|| format!("-p {spec}: expected :HOSTPORT:CONTAINERPORT"))?;
        (Some(addr), h, c)
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.as_slice() {
            [c] => (None, "", *c),
            [h, c] => (None, *h, *c),
            [ip, h, c] => (Some(*ip), *h, *c),
            _ => return Err(format!("-p {spec}: invalid format")),
        }
    };
    let host_ip: IpAddr = match ip.filter(|i| !i.is_empty()) {
        Some(i) => i
            .parse()
            .map_err(|_| format!("-p {spec}: invalid address {i:?}"))?,
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    if host_ip.is_ipv6() {
        return Err(format!(
            "-p {spec}: kiln publishes ports on IPv4 addresses only"
        ));
    }
    let (c0, c1) = parse_range(container, spec)?;
    let count = c1 - c0 + 1;
    let mut out = Vec::new();
    if host.is_empty() {
        out.push(Published {
            host_ip,
            host_port: 0,
            container_port: c0,
            range: count,
            protocol,
            host_range: None,
        });
        return Ok(out);
    }
    let (h0, h1) = parse_range(host, spec)?;
    let host_count = h1 - h0 + 1;
    if host_count == count {
        out.push(Published {
            host_ip,
            host_port: h0,
            container_port: c0,
            range: count,
            protocol,
            host_range: None,
        });
    } else if count == 1 {
        // One container port, a host range: the first free port of the range.
        out.push(Published {
            host_ip,
            host_port: 0,
            container_port: c0,
            range: 1,
            protocol,
            host_range: Some((h0, h1)),
        });
    } else {
        return Err(format!(
            "-p {spec}: the host range and the container range differ in size"
        ));
    }
    Ok(out)
}

/// `-P`: each EXPOSEd port (`80/tcp`, `53/udp`, `8080`) on a port the kernel chooses.
pub fn exposed(ports: &[String]) -> Result<Vec<Published>, String> {
    let mut out = Vec::new();
    for p in ports {
        out.extend(parse(p)?);
    }
    Ok(out)
}

/// Whether `port` can be had on `ip` for `protocol` now (nothing on the host listens there).
fn free(ip: IpAddr, port: u16, protocol: &str) -> bool {
    let addr = std::net::SocketAddr::new(ip, port);
    if protocol == "udp" {
        std::net::UdpSocket::bind(addr).is_ok()
    } else {
        std::net::TcpListener::bind(addr).is_ok()
    }
}

/// A port the kernel chooses as free on `ip` (its ephemeral range, as docker chooses from it).
fn any_free(ip: IpAddr, protocol: &str) -> Option<u16> {
    let addr = std::net::SocketAddr::new(ip, 0);
    if protocol == "udp" {
        std::net::UdpSocket::bind(addr)
            .and_then(|s| s.local_addr())
            .ok()
    } else {
        std::net::TcpListener::bind(addr)
            .and_then(|s| s.local_addr())
            .ok()
    }
    .map(|a| a.port())
}

/// Sets every host port still to choose, and checks that every one is free on the host
/// (`taken`: ports other containers of kiln forward, which no listener shows). An error names
/// the port, as docker's "port is already allocated".
pub fn choose_ports(
    ports: &mut [Published],
    taken: &dyn Fn(IpAddr, u16, &str) -> bool,
) -> Result<(), String> {
    let usable =
        |ip: IpAddr, port: u16, proto: &str| free(ip, port, proto) && !taken(ip, port, proto);
    for p in ports.iter_mut() {
        if p.host_port == 0 {
            let chosen = match p.host_range {
                Some((a, b)) => (a..=b).find(|&n| usable(p.host_ip, n, &p.protocol)),
                None if p.range == 1 => (0..20)
                    .filter_map(|_| any_free(p.host_ip, &p.protocol))
                    .find(|&n| !taken(p.host_ip, n, &p.protocol)),
                // A range to a random place: consecutive free ports from one the kernel gave.
                None => (0..20)
                    .filter_map(|_| any_free(p.host_ip, &p.protocol))
                    .find(|&n| {
                        n.checked_add(p.range - 1).is_some()
                            && (n..n + p.range).all(|k| usable(p.host_ip, k, &p.protocol))
                    }),
            };
            p.host_port = chosen.ok_or_else(|| {
                format!(
                    "no free host port for {}/{} on {}",
                    p.container_port, p.protocol, p.host_ip
                )
            })?;
            continue;
        }
        for k in 0..p.range {
            let port = p.host_port.saturating_add(k);
            if !usable(p.host_ip, port, &p.protocol) {
                return Err(format!(
                    "Bind for {}:{port} failed: port is already allocated",
                    p.host_ip
                ));
            }
        }
    }
    Ok(())
}

/// docker's text of one mapping: `0.0.0.0:8080->80/tcp` (ranges `0.0.0.0:8000-8001->80-81/tcp`).
pub fn describe(p: &Published) -> String {
    let span = |first: u16| {
        if p.range > 1 {
            format!("{first}-{}", first.saturating_add(p.range - 1))
        } else {
            first.to_string()
        }
    };
    format!(
        "{}:{}->{}/{}",
        p.host_ip,
        span(p.host_port),
        span(p.container_port),
        p.protocol
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(spec: &str) -> Published {
        let mut v = parse(spec).unwrap();
        assert_eq!(v.len(), 1, "{spec}");
        v.remove(0)
    }

    #[test]
    fn docker_forms_parse() {
        let p = one("8080:80");
        assert_eq!(
            (
                p.host_ip.to_string(),
                p.host_port,
                p.container_port,
                p.range
            ),
            ("0.0.0.0".into(), 8080, 80, 1)
        );
        assert_eq!(p.protocol, "tcp");
        let p = one("127.0.0.1:8080:80/udp");
        assert_eq!(
            (p.host_ip.to_string(), p.protocol.as_str()),
            ("127.0.0.1".into(), "udp")
        );
        let p = one("127.0.0.1::80");
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = one("80");
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = one("8000-8001:80-81");
        assert_eq!((p.host_port, p.container_port, p.range), (8000, 80, 2));
        let p = one("8000-8010:80");
        assert_eq!((p.host_port, p.host_range), (0, Some((8000, 8010))));
        assert_eq!(
            describe(&one("8000-8001:80-81")),
            "0.0.0.0:8000-8001->80-81/tcp"
        );
        for bad in [
            "8080:80/sctp",
            "a:80",
            "1.2.3:8080:80",
            "8000-8002:80-81",
            "0:80",
            "80-70",
            "1:2:3:4",
            "[::1]:8080:80",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_taken_port_is_refused_and_chosen_ports_are_free() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = l.local_addr().unwrap().port();
        let mut p = parse(&format!("127.0.0.1:{busy}:80")).unwrap();
        let err = choose_ports(&mut p, &|_, _, _| false).unwrap_err();
        assert!(err.contains("port is already allocated"), "{err}");
        // Taken by another container (no listener): refused too.
        let mut p = parse("127.0.0.1::80").unwrap();
        choose_ports(&mut p, &|_, _, _| false).unwrap();
        let chosen = p[0].host_port;
        assert_ne!(chosen, 0);
        let mut again = parse(&format!("127.0.0.1:{chosen}:80")).unwrap();
        assert!(choose_ports(&mut again, &|_, port, _| port == chosen).is_err());
    }
}
