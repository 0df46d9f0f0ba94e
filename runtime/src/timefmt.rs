//! Times as text: RFC 3339 (image configs, history, docker's log lines) and back.

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm); `month` 1-12.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch of an RFC 3339 time (`2023-11-14T22:13:20Z`, fractions and offsets
/// allowed), the inverse of [`rfc3339`].
pub fn parse_rfc3339(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &t[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset)
}

/// Nanoseconds since the epoch of an RFC 3339 time, the fraction kept (docker's log times).
pub fn parse_rfc3339_nanos(t: &str) -> Option<i128> {
    let secs = parse_rfc3339(t)?;
    let frac = t
        .get(19..)
        .and_then(|r| r.strip_prefix('.'))
        .map(|r| {
            let digits: String = r.chars().take_while(char::is_ascii_digit).take(9).collect();
            format!("{digits:0<9}").parse::<i128>().unwrap_or(0)
        })
        .unwrap_or(0);
    Some(i128::from(secs) * 1_000_000_000 + frac)
}

/// Formats seconds since the epoch as RFC 3339 UTC (`2023-11-14T22:13:20Z`).
pub fn rfc3339(secs: i64) -> String {
    format!("{}Z", civil(secs))
}

/// RFC 3339 UTC with nanoseconds, as Go's `RFC3339Nano` writes it for docker's json-file logs
/// (`2023-11-14T22:13:20.123456789Z`; trailing zeros of the fraction dropped).
pub fn rfc3339_nanos(secs: i64, nanos: u32) -> String {
    let frac = format!("{nanos:09}");
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        rfc3339(secs)
    } else {
        format!("{}.{frac}Z", civil(secs))
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of seconds since the epoch, UTC.
fn civil(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(
            rfc3339_nanos(1_700_000_000, 120_000_000),
            "2023-11-14T22:13:20.12Z"
        );
        assert_eq!(rfc3339_nanos(1_700_000_000, 0), "2023-11-14T22:13:20Z");
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.12Z"),
            Some(1_700_000_000)
        );
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }
}
