//! Values printed as BuildKit prints them in history lines (`created_by`): it formats Go values
//! with `fmt`, so `docker history` shows `CMD ["echo" "hi"]`, `SHELL [/bin/sh -c]`, and
//! durations as Go writes them. kiln writes the same text (frontend/dockerfile/dockerfile2llb
//! `convert.go`).

/// Go's `%q` of a `[]string`: `["a" "b"]`, each element as `strconv.Quote` writes it.
pub fn quoted_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", inner.join(" "))
}

/// Go's `%v` of a `[]string`: `[a b]`.
pub fn plain_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// `strconv.Quote`: double quotes, `\"` and `\\`, the usual escapes for control characters,
/// `\xNN` / `\uNNNN` for other unprintable ones.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `time.Duration.String()`: `0s`, `1.5s`, `2m30s`, `1h0m0s`, `250ms`.
pub fn duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let sign = if neg { "-" } else { "" };
    if u < 1_000_000_000 {
        // Under a second: the largest unit that keeps a whole part.
        let (unit, div) = if u < 1_000 {
            ("ns", 1)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", fraction(u, div));
    }
    let secs_total = u / 1_000_000_000;
    let (h, m) = (secs_total / 3600, (secs_total % 3600) / 60);
    let s = fraction(u % 60_000_000_000, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sign}{s}s"),
        (0, m) => format!("{sign}{m}m{s}s"),
        (h, m) => format!("{sign}{h}h{m}m{s}s"),
    }
}

/// `v / div` with the fraction's trailing zeros dropped (`1500, 1000` → `1.5`).
fn fraction(v: u64, div: u64) -> String {
    let (whole, rest) = (v / div, v % div);
    if rest == 0 {
        return whole.to_string();
    }
    let digits = div.to_string().len() - 1;
    let frac = format!("{rest:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_go_prints_them() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(quoted_list(&v(&["echo", "hello"])), r#"["echo" "hello"]"#);
        assert_eq!(
            quoted_list(&v(&["a\"b", "c\\d", "e\nf"])),
            r#"["a\"b" "c\\d" "e\nf"]"#
        );
        assert_eq!(quoted_list(&[]), "[]");
        assert_eq!(plain_list(&v(&["/bin/sh", "-c"])), "[/bin/sh -c]");
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(5_000_000_000), "5s");
        assert_eq!(duration(1_500_000_000), "1.5s");
        assert_eq!(duration(90_000_000_000), "1m30s");
        assert_eq!(duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(duration(250_000_000), "250ms");
    }
}
