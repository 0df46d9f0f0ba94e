//! `--restart`: docker's restart policies, applied by a detached container's monitor when the
//! container ends (moby `restartmanager`): `no`, `on-failure[:N]` (a non-zero exit, at most N
//! times), `always` and `unless-stopped` (any exit). A container that `kiln stop` ended is not
//! started again, whatever its policy. The delay doubles from 100 ms on each restart in a row,
//! up to a minute, and falls back to 100 ms once a run lasted 10 seconds.

use std::time::Duration;

/// A restart policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Policy {
    #[default]
    No,
    /// Restart after a non-zero exit; at most this many times (`None`: no limit).
    OnFailure(Option<u32>),
    Always,
    UnlessStopped,
}

impl Policy {
    /// docker's syntax: `no`, `on-failure`, `on-failure:N`, `always`, `unless-stopped`.
    pub fn parse(s: &str) -> Result<Policy, String> {
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        let policy = match name {
            "" | "no" => Policy::No,
            "always" => Policy::Always,
            "unless-stopped" => Policy::UnlessStopped,
            "on-failure" => match count {
                None => Policy::OnFailure(None),
                Some(c) => Policy::OnFailure(Some(c.parse().map_err(|_| {
                    format!("--restart {s}: maximum retry count must be a number")
                })?)),
            },
            _ => {
                return Err(format!(
                    "--restart {s}: expected no, on-failure[:max-retries], always or unless-stopped"
                ));
            }
        };
        if count.is_some() && !matches!(policy, Policy::OnFailure(_)) {
            return Err(format!(
                "--restart {s}: maximum retry count cannot be used with restart policy {name:?}"
            ));
        }
        Ok(policy)
    }

    /// docker's `HostConfig.RestartPolicy` (`Name`, `MaximumRetryCount`).
    pub fn to_json(self) -> serde_json::Value {
        let (name, max) = match self {
            Policy::No => ("no", 0),
            Policy::OnFailure(n) => ("on-failure", n.unwrap_or(0)),
            Policy::Always => ("always", 0),
            Policy::UnlessStopped => ("unless-stopped", 0),
        };
        serde_json::json!({"Name": name, "MaximumRetryCount": max})
    }

    /// Whether a container that ended with `code`, after `restarts` restarts so far, starts
    /// again; `stopped`: `kiln stop` (or `kill`, `rm -f`) ended it.
    pub fn restarts(self, code: i32, restarts: i64, stopped: bool) -> bool {
        if stopped {
            return false;
        }
        match self {
            Policy::No => false,
            Policy::OnFailure(max) => code != 0 && max.is_none_or(|m| restarts < i64::from(m)),
            Policy::Always | Policy::UnlessStopped => true,
        }
    }
}

/// The wait before the next start: 100 ms doubled for each quick restart in a row (a run of
/// less than 10 seconds), at most a minute.
pub fn delay(previous: Option<Duration>, ran: Duration) -> Duration {
    const FIRST: Duration = Duration::from_millis(100);
    match previous {
        Some(d) if ran < Duration::from_secs(10) => (d * 2).min(Duration::from_secs(60)),
        _ => FIRST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_policies_parse_and_decide() {
        assert_eq!(Policy::parse("no"), Ok(Policy::No));
        assert_eq!(Policy::parse("always"), Ok(Policy::Always));
        assert_eq!(Policy::parse("unless-stopped"), Ok(Policy::UnlessStopped));
        assert_eq!(Policy::parse("on-failure"), Ok(Policy::OnFailure(None)));
        assert_eq!(
            Policy::parse("on-failure:3"),
            Ok(Policy::OnFailure(Some(3)))
        );
        assert!(Policy::parse("on-failure:x").is_err());
        assert!(Policy::parse("always:2").is_err());
        assert!(Policy::parse("sometimes").is_err());
        let p = Policy::OnFailure(Some(2));
        assert!(p.restarts(1, 0, false));
        assert!(p.restarts(1, 1, false));
        assert!(!p.restarts(1, 2, false), "at most 2 restarts");
        assert!(!p.restarts(0, 0, false), "a clean exit is not a failure");
        assert!(Policy::Always.restarts(0, 100, false));
        assert!(!Policy::Always.restarts(0, 0, true), "kiln stop wins");
        assert!(!Policy::No.restarts(1, 0, false));
    }

    #[test]
    fn delays_double_then_reset() {
        let quick = Duration::from_millis(5);
        let d1 = delay(None, quick);
        assert_eq!(d1, Duration::from_millis(100));
        let d2 = delay(Some(d1), quick);
        assert_eq!(d2, Duration::from_millis(200));
        assert_eq!(
            delay(Some(Duration::from_secs(50)), quick),
            Duration::from_secs(60)
        );
        assert_eq!(
            delay(Some(d2), Duration::from_secs(11)),
            Duration::from_millis(100)
        );
    }
}
