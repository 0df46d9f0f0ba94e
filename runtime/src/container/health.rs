//! HEALTHCHECK, as docker runs it: a detached container's monitor runs the image's check inside
//! the container ([`super::exec`]) every interval, killing it past the timeout, and records
//! `starting`, `healthy` or `unhealthy` (after `retries` failures in a row, failures during the
//! start period not counted) with the last five results (start, end, exit code, output), in
//! docker's `State.Health` shape.

use std::time::{Duration, Instant};

use super::exec::{ExecOptions, exec};
use crate::{oci, store::Store};

/// A check to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub argv: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub retries: u32,
}

/// The check an image's config describes (docker's defaults: 30 s, 30 s, 0 s, 3); `None` for
/// none or `NONE`.
pub fn check_of(h: &oci::Healthcheck) -> Option<Check> {
    let argv = match h.test.split_first() {
        Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
        Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => {
            vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
        }
        _ => return None,
    };
    let ns = |v: Option<i64>, default: u64| {
        Duration::from_nanos(
            v.and_then(|n| u64::try_from(n).ok())
                .filter(|n| *n > 0)
                .unwrap_or(default),
        )
    };
    Some(Check {
        argv,
        interval: ns(h.interval, 30_000_000_000),
        timeout: ns(h.timeout, 30_000_000_000),
        start_period: ns(h.start_period, 0),
        retries: h
            .retries
            .and_then(|r| u32::try_from(r).ok())
            .filter(|r| *r > 0)
            .unwrap_or(3),
    })
}

/// The image's check with `run`'s `--health-*` options over it, field by field, as docker
/// merges them; an override with an empty test and nothing else (`--no-healthcheck`) turns it
/// off.
pub fn merged(
    image: Option<oci::Healthcheck>,
    over: Option<oci::Healthcheck>,
) -> Option<oci::Healthcheck> {
    let Some(o) = over else { return image };
    if o == oci::Healthcheck::default() {
        return None;
    }
    let base = image.unwrap_or_default();
    Some(oci::Healthcheck {
        test: if o.test.is_empty() { base.test } else { o.test },
        interval: o.interval.or(base.interval),
        timeout: o.timeout.or(base.timeout),
        start_period: o.start_period.or(base.start_period),
        start_interval: o.start_interval.or(base.start_interval),
        retries: o.retries.or(base.retries),
    })
}

fn now_text() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    crate::timefmt::rfc3339_nanos(t.as_secs() as i64, t.subsec_nanos())
}

/// One run of the check: its exit code (-1 when it could not run) and its output (the first
/// 4 KiB, stdout and stderr together).
fn probe(store: &Store, id: &str, check: &Check) -> (i64, String) {
    let Ok((r, w)) = std::io::pipe() else {
        return (-1, "cannot make a pipe".into());
    };
    let Ok(w2) = w.try_clone() else {
        return (-1, "cannot make a pipe".into());
    };
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut r = r;
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut r, &mut buf) {
            if n == 0 {
                break;
            }
            let room = 4096usize.saturating_sub(out.len());
            out.extend_from_slice(&buf[..n.min(room)]);
        }
        out
    });
    let opts = ExecOptions {
        args: check.argv.clone(),
        timeout: Some(check.timeout),
        ..Default::default()
    };
    let stdio = (
        super::Stdio::null(),
        super::Stdio::from(w),
        super::Stdio::from(w2),
    );
    let code = match exec(
        store,
        id,
        &opts,
        super::Io::Pipes(stdio.0, stdio.1, stdio.2),
    ) {
        Ok(c) => i64::from(c),
        Err(e) => {
            let _ = reader.join();
            return (-1, e.to_string());
        }
    };
    let out = reader.join().unwrap_or_default();
    (code, String::from_utf8_lossy(&out).into_owned())
}

/// Runs `check` on container `id` until `done` says the container ended, recording each result.
pub fn watch(store: &Store, id: &str, check: &Check, done: &dyn Fn() -> bool) {
    let started = Instant::now();
    let mut status = "starting";
    let mut streak = 0u32;
    let mut log: Vec<serde_json::Value> = Vec::new();
    let record = |status: &str, streak: u32, log: &[serde_json::Value]| {
        let _ = store.set_container_health(
            id,
            &serde_json::json!({"Status": status, "FailingStreak": streak, "Log": log}),
        );
    };
    record(status, streak, &log);
    loop {
        // Sleep in short steps, so the end of the container ends the watch at once.
        let t0 = Instant::now();
        while t0.elapsed() < check.interval {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20).min(check.interval));
        }
        let start = now_text();
        let (code, output) = probe(store, id, check);
        if done() {
            return;
        }
        log.push(serde_json::json!({
            "Start": start, "End": now_text(), "ExitCode": code, "Output": output,
        }));
        if log.len() > 5 {
            log.remove(0);
        }
        if code == 0 {
            status = "healthy";
            streak = 0;
        } else if started.elapsed() >= check.start_period || status == "healthy" {
            streak += 1;
            if streak >= check.retries {
                status = "unhealthy";
            }
        }
        record(status, streak, &log);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_from_configs() {
        let h = |test: &[&str]| oci::Healthcheck {
            test: test.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let c = check_of(&h(&["CMD-SHELL", "curl -f localhost || exit 1"])).unwrap();
        assert_eq!(c.argv, ["/bin/sh", "-c", "curl -f localhost || exit 1"]);
        assert_eq!((c.interval, c.retries), (Duration::from_secs(30), 3));
        assert_eq!(check_of(&h(&["CMD", "true"])).unwrap().argv, ["true"]);
        assert_eq!(check_of(&h(&["NONE"])), None);
        assert_eq!(check_of(&h(&[])), None);
        // --health-interval over the image's test; --no-healthcheck turns it off.
        let over = oci::Healthcheck {
            interval: Some(1_000_000_000),
            ..Default::default()
        };
        let m = merged(Some(h(&["CMD", "true"])), Some(over)).unwrap();
        assert_eq!((m.test.len(), m.interval), (2, Some(1_000_000_000)));
        assert_eq!(
            merged(Some(h(&["CMD", "true"])), Some(oci::Healthcheck::default())),
            None
        );
    }
}
