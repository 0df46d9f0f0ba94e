//! Validators for instruction values that BuildKit rejects: Go durations (HEALTHCHECK), file
//! modes (`--chmod`), signals (STOPSIGNAL), ports (EXPOSE), sizes (`tmpfs size=`).
//! Values holding `$` are expanded at build time and validated then, not here.

use nom::{
    IResult, Parser,
    branch::alt,
    bytes::complete::{tag, take_while, take_while1},
    character::complete::{char, digit1, one_of},
    combinator::{all_consuming, opt, recognize},
    multi::{many1, separated_list1},
    sequence::pair,
};

/// Parses a Go `time.ParseDuration` string into nanoseconds (`1m30s`, `1.5h`, `300ms`, `0`).
pub fn parse_go_duration(s: &str) -> Option<i128> {
    fn unit(i: &str) -> IResult<&str, &str> {
        alt((
            tag("ns"),
            tag("us"),
            tag("µs"),
            tag("μs"),
            tag("ms"),
            tag("s"),
            tag("m"),
            tag("h"),
        ))
        .parse(i)
    }
    fn number(i: &str) -> IResult<&str, &str> {
        alt((
            recognize((
                digit1,
                opt(pair(char('.'), take_while(|c: char| c.is_ascii_digit()))),
            )),
            recognize(pair(char('.'), digit1)),
        ))
        .parse(i)
    }
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if body == "0" {
        return Some(0);
    }
    let (_, parts) = all_consuming(many1(pair(number, unit))).parse(body).ok()?;
    let mut total: f64 = 0.0;
    for (num, u) in parts {
        let n: f64 = num.parse().ok()?;
        let mult = match u {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            _ => 3600e9,
        };
        total += n * mult;
    }
    let ns = total as i128;
    Some(if neg { -ns } else { ns })
}

/// Whether `s` is an octal mode (`755`, `0644`) or a symbolic one (`+x`, `u=rwX,go=rX`, `g=u`).
pub fn is_valid_chmod(s: &str) -> bool {
    if !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return true;
    }
    fn clause(i: &str) -> IResult<&str, &str> {
        recognize((
            take_while(|c| "ugoa".contains(c)),
            many1(pair(
                one_of("+-="),
                alt((
                    take_while1(|c| "ugo".contains(c)),
                    take_while(|c| "rwxXst".contains(c)),
                )),
            )),
        ))
        .parse(i)
    }
    all_consuming(separated_list1(char(','), clause))
        .parse(s)
        .is_ok()
}

const SIGNALS: [&str; 31] = [
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM",
];

/// Whether `s` names a signal: a number, `SIGTERM`/`TERM`, or `SIGRTMIN+3`/`RTMAX-1`.
pub fn is_valid_signal(s: &str) -> bool {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u32>().is_ok_and(|n| (1..=64).contains(&n));
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if SIGNALS.contains(&name) || name == "WINCH" || name == "XCPU" || name == "XFSZ" {
        return true;
    }
    for base in ["RTMIN", "RTMAX"] {
        if let Some(rest) = name.strip_prefix(base) {
            if rest.is_empty() {
                return true;
            }
            let off = rest.strip_prefix('+').or_else(|| rest.strip_prefix('-'));
            return off.is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n <= 30));
        }
    }
    false
}

/// Checks an EXPOSE entry: `port`, `from-to`, optionally `/tcp|udp|sctp` (any case). Forms with
/// `:` (host mappings) are accepted here and flagged by the `ExposeInvalidFormat` check.
pub fn check_port(s: &str) -> Result<(), String> {
    let spec = s.rsplit(':').next().unwrap_or(s);
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, Some(proto)),
        None => (spec, None),
    };
    if let Some(proto) = proto {
        if !matches!(proto.to_ascii_lowercase().as_str(), "tcp" | "udp" | "sctp") {
            return Err(format!("invalid proto: {proto}"));
        }
    }
    let valid = |p: &str| p.parse::<u16>().is_ok();
    let ok = match ports.split_once('-') {
        Some((a, b)) => valid(a) && valid(b) && a.parse::<u16>().ok() <= b.parse::<u16>().ok(),
        None => valid(ports),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid containerPort: {ports}"))
    }
}

/// Parses a size such as `64m`, `1.5GiB`, `512` into bytes (binary multiples, like Docker's
/// `units.RAMInBytes`).
pub fn parse_ram_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_len);
    let n: f64 = num.parse().ok()?;
    let suffix = suffix.trim_start().to_ascii_lowercase();
    let suffix = suffix
        .strip_suffix('b')
        .unwrap_or(&suffix)
        .trim_end_matches('i');
    let mult: u64 = match suffix {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return None,
    };
    let v = n * mult as f64;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

/// A size in decimal units with 4 significant digits, as docker prints most sizes
/// (`1.986MB`, `121.5MB`, `512B`): docker's `units.HumanSize`.
pub fn format_size(bytes: u64) -> String {
    format_size_precision(bytes, 4)
}

/// [`format_size`] with `precision` significant digits: docker's
/// `units.HumanSizeWithPrecision` (`docker images` and `docker history` use 3: `1.99MB`,
/// `121MB`), Go's `%.*g` of the value in the largest unit under 1000.
pub fn format_size_precision(bytes: u64, precision: usize) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    format!("{}{}", go_g(v, precision.max(1)), units[u])
}

/// Go's `%.*g`: `p` significant digits, trailing zeros dropped, exponent form when the exponent
/// is under -4 or at least `p`.
fn go_g(v: f64, p: usize) -> String {
    let e = format!("{:.*e}", p - 1, v);
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exp < -4 || exp >= p as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        trim(&format!("{v:.decimals$}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_prints_them() {
        // docker's units.HumanSize (4 digits) and HumanSizeWithPrecision(3).
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(512), "512B");
        assert_eq!(format_size(1_985_581), "1.986MB");
        assert_eq!(format_size(121_491_000), "121.5MB");
        assert_eq!(format_size(1_000_000), "1MB");
        assert_eq!(format_size_precision(1_985_581, 3), "1.99MB");
        assert_eq!(format_size_precision(121_491_000, 3), "121MB");
        assert_eq!(format_size_precision(2_048, 3), "2.05kB");
        assert_eq!(format_size_precision(999_600, 3), "1e+03kB");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("30s"), Some(30_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("-1s"), Some(-1_000_000_000));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("1d"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn sizes_print_as_docker_prints_them() {
        assert_eq!(format_size(512), "512B");
        assert_eq!(format_size(2_000), "2kB");
        assert_eq!(format_size(3_072), "3.072kB");
        assert_eq!(format_size(1_030_000), "1.03MB");
        assert_eq!(format_size(u64::MAX), "18.45EB");
    }

    #[test]
    fn chmods() {
        for ok in ["755", "0644", "+x", "u=rwX,go=rX", "g=u", "a-w", "u+s"] {
            assert!(is_valid_chmod(ok), "{ok}");
        }
        for bad in ["", "8", "99999", "rwx", "u", "u=q", "u+x,"] {
            assert!(!is_valid_chmod(bad), "{bad}");
        }
    }

    #[test]
    fn signals_ports_sizes() {
        assert!(is_valid_signal("SIGKILL") && is_valid_signal("term") && is_valid_signal("9"));
        assert!(is_valid_signal("SIGRTMIN+3") && !is_valid_signal("SIGFOO"));
        assert!(check_port("80/tcp").is_ok() && check_port("8000-8010").is_ok());
        assert!(check_port("80/xyz").is_err() && check_port("abc").is_err());
        assert_eq!(parse_ram_size("64m"), Some(64 << 20));
        assert_eq!(parse_ram_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_ram_size("x"), None);
    }
}
