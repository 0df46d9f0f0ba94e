//! The instructions that change only the image config, one handler each (BuildKit's
//! `dispatchEnv`, `dispatchExpose`, ...): ARG, ENV, LABEL, EXPOSE, VOLUME, USER, STOPSIGNAL,
//! SHELL, CMD, ENTRYPOINT, HEALTHCHECK, ONBUILD, MAINTAINER. Each writes an `empty_layer`
//! history entry with BuildKit's text for it (ONBUILD writes none, as BuildKit's), and takes
//! only [`Meta`]: how words are expanded and how history is dated.

use std::collections::BTreeMap;

use kiln_parser::{
    instruction::{ArgDecl, Command, Health},
    shell::Lexer,
    span::Span,
};
use kiln_runtime::{
    digest::Digest,
    oci::{self, History},
};

use super::{BuildError, StageState, fsutil, gofmt, shell_wrap, short};

/// What a metadata instruction needs of the build.
pub(super) struct Meta<'a> {
    /// The Dockerfile's word expansion (its escape character).
    pub lex: &'a Lexer,
    /// `SOURCE_DATE_EPOCH`: every history entry's time when set.
    pub source_date_epoch: Option<i64>,
}

impl Meta<'_> {
    /// `word` with the stage's variables expanded; a failure names the word at `span`.
    pub fn expand(&self, st: &StageState, word: &str, span: Span) -> Result<String, BuildError> {
        self.lex
            .expand_str(word, st.vars())
            .map_err(|e| BuildError::at(span, format!("failed to process {:?}: {e}", short(word))))
    }

    /// Appends a history entry. `SOURCE_DATE_EPOCH` is every step's time; else the time is
    /// looked up with the stage's others when it ends (`Ctx::resolve_times`).
    pub fn history(&self, st: &mut StageState, created_by: String, empty_layer: bool) {
        let created = match self.source_date_epoch {
            Some(e) => Some(fsutil::rfc3339(e)),
            None => {
                let key = format!("{}\n{}\n{created_by}", st.key, st.config.history.len());
                let key = Digest::of(key.as_bytes()).to_string();
                st.pending_times.push((st.config.history.len(), key));
                None
            }
        };
        st.config.history.push(History {
            created,
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer,
        });
    }
}

/// Where an `ARG NAME` without a default takes its value from, in order.
pub(super) struct ArgSources<'a> {
    /// `--build-arg`.
    pub build_args: &'a BTreeMap<String, String>,
    /// The values the stage inherited (the stage it is built on, the global ARGs before FROM).
    pub inherited: &'a BTreeMap<String, Option<String>>,
    /// The global ARGs, in order.
    pub global: &'a [(String, Option<String>)],
}

/// `ARG NAME[=DEFAULT]...`; `text` is the instruction's text after its keyword.
pub(super) fn arg(
    m: &Meta<'_>,
    st: &mut StageState,
    decls: &[ArgDecl],
    from: &ArgSources<'_>,
    (text, span): (&str, Span),
) -> Result<(), BuildError> {
    for d in decls {
        let value = match from.build_args.get(&d.name) {
            Some(v) => Some(v.clone()),
            None => match &d.default {
                Some(def) => Some(m.expand(st, def, span)?),
                // `ARG NAME` imports a global ARG's (or the parent stage's) value.
                None => match from.inherited.get(&d.name) {
                    Some(v) => v.clone(),
                    None => from
                        .global
                        .iter()
                        .rev()
                        .find(|(k, _)| *k == d.name)
                        .and_then(|(_, v)| v.clone()),
                },
            },
        };
        st.args.insert(d.name.clone(), value.clone());
        st.arg_order.push(d.name.clone());
        if let Some(v) = value {
            st.state_env.insert(d.name.clone(), v);
        }
    }
    m.history(st, format!("ARG {text}"), true);
    Ok(())
}

/// The pairs of an ENV or LABEL, expanded: every substitution in one instruction sees the
/// values from before it, so all are expanded before any is applied.
fn expand_pairs(
    m: &Meta<'_>,
    st: &StageState,
    pairs: &[(String, String)],
    span: Span,
) -> Result<Vec<(String, String)>, BuildError> {
    pairs
        .iter()
        .map(|(k, v)| Ok((m.expand(st, k, span)?, m.expand(st, v, span)?)))
        .collect()
}

fn pairs_text(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `ENV K=V...`.
pub(super) fn env(
    m: &Meta<'_>,
    st: &mut StageState,
    pairs: &[(String, String)],
    span: Span,
) -> Result<(), BuildError> {
    let pairs = expand_pairs(m, st, pairs, span)?;
    for (k, v) in &pairs {
        st.set_env(k, v);
    }
    m.history(st, format!("ENV {}", pairs_text(&pairs)), true);
    Ok(())
}

/// `LABEL K=V...`.
pub(super) fn label(
    m: &Meta<'_>,
    st: &mut StageState,
    pairs: &[(String, String)],
    span: Span,
) -> Result<(), BuildError> {
    let pairs = expand_pairs(m, st, pairs, span)?;
    for (k, v) in &pairs {
        st.config.config.labels.insert(k.clone(), v.clone());
    }
    m.history(st, format!("LABEL {}", pairs_text(&pairs)), true);
    Ok(())
}

/// `EXPOSE PORT[/PROTO]...`, ranges expanded to each port, as BuildKit records them.
pub(super) fn expose(
    m: &Meta<'_>,
    st: &mut StageState,
    ports: &[String],
    span: Span,
) -> Result<(), BuildError> {
    let mut listed = Vec::new();
    for p in ports {
        let p = m.expand(st, p, span)?;
        let (range, proto) = match p.split_once('/') {
            Some((r, pr)) => (r.to_string(), pr.to_ascii_lowercase()),
            None => (p.clone(), "tcp".to_string()),
        };
        let range = range.rsplit(':').next().unwrap_or(&range).to_string();
        let (lo, hi) = match range.split_once('-') {
            Some((a, b)) => (a.parse::<u16>(), b.parse::<u16>()),
            None => (range.parse::<u16>(), range.parse::<u16>()),
        };
        let (Ok(lo), Ok(hi)) = (lo, hi) else {
            return Err(BuildError::at(span, format!("invalid port {p:?}")));
        };
        for port in lo..=hi {
            listed.push(format!("{port}/{proto}"));
            st.config
                .config
                .exposed_ports
                .insert(format!("{port}/{proto}"), oci::Empty {});
        }
    }
    // BuildKit's `EXPOSE %v` of the parsed ports, in order, ranges expanded.
    m.history(st, format!("EXPOSE {}", gofmt::plain_list(&listed)), true);
    Ok(())
}

/// `VOLUME PATH...`.
pub(super) fn volume(
    m: &Meta<'_>,
    st: &mut StageState,
    paths: &[String],
    span: Span,
) -> Result<(), BuildError> {
    let mut listed = Vec::new();
    for p in paths {
        let p = m.expand(st, p, span)?;
        listed.push(p.clone());
        st.config.config.volumes.insert(p, oci::Empty {});
    }
    m.history(st, format!("VOLUME {}", gofmt::plain_list(&listed)), true);
    Ok(())
}

/// `USER NAME[:GROUP]`.
pub(super) fn user(
    m: &Meta<'_>,
    st: &mut StageState,
    user: &str,
    span: Span,
) -> Result<(), BuildError> {
    st.config.config.user = m.expand(st, user, span)?;
    let text = format!("USER {}", st.config.config.user);
    m.history(st, text, true);
    Ok(())
}

/// `STOPSIGNAL SIGNAL`.
pub(super) fn stop_signal(
    m: &Meta<'_>,
    st: &mut StageState,
    signal: &str,
    span: Span,
) -> Result<(), BuildError> {
    st.config.config.stop_signal = m.expand(st, signal, span)?;
    let text = format!("STOPSIGNAL {}", st.config.config.stop_signal);
    m.history(st, text, true);
    Ok(())
}

/// `SHELL ["exe", "arg"...]`.
pub(super) fn shell(m: &Meta<'_>, st: &mut StageState, argv: &[String]) {
    st.config.config.shell = argv.to_vec();
    m.history(st, format!("SHELL {}", gofmt::plain_list(argv)), true);
}

/// `CMD`.
pub(super) fn cmd(m: &Meta<'_>, st: &mut StageState, c: &Command) {
    let argv = shell_wrap(st, c);
    let text = format!("CMD {}", gofmt::quoted_list(&argv));
    st.config.config.cmd = Some(argv);
    st.config.config.args_escaped = true;
    st.cmd_set = true;
    m.history(st, text, true);
}

/// `ENTRYPOINT`: it resets a CMD inherited from the base (not one this stage set).
pub(super) fn entrypoint(m: &Meta<'_>, st: &mut StageState, c: &Command) {
    let argv = shell_wrap(st, c);
    let text = format!("ENTRYPOINT {}", gofmt::quoted_list(&argv));
    st.config.config.entrypoint = Some(argv);
    if !st.cmd_set {
        st.config.config.cmd = None;
    }
    m.history(st, text, true);
}

/// `HEALTHCHECK`: the config's healthcheck, and BuildKit's `HEALTHCHECK %+v` of it.
pub(super) fn healthcheck(m: &Meta<'_>, st: &mut StageState, h: &Health) {
    let hc = match h {
        Health::None => oci::Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        },
        Health::Check {
            test,
            interval_ns,
            timeout_ns,
            start_period_ns,
            start_interval_ns,
            retries,
        } => oci::Healthcheck {
            test: test.clone(),
            interval: interval_ns.map(|v| v as i64),
            timeout: timeout_ns.map(|v| v as i64),
            start_period: start_period_ns.map(|v| v as i64),
            start_interval: start_interval_ns.map(|v| v as i64),
            retries: *retries,
        },
    };
    let d = |v: Option<i64>| gofmt::duration(v.unwrap_or(0));
    let text = format!(
        "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        gofmt::plain_list(&hc.test),
        d(hc.interval),
        d(hc.timeout),
        d(hc.start_period),
        d(hc.start_interval),
        hc.retries.unwrap_or(0)
    );
    st.config.config.healthcheck = Some(hc);
    m.history(st, text, true);
}

/// `ONBUILD INSTRUCTION`: recorded in the config only; BuildKit writes no history line for it.
pub(super) fn on_build(st: &mut StageState, expression: &str) {
    st.config.config.on_build.push(expression.to_string());
}

/// `MAINTAINER NAME`.
pub(super) fn maintainer(m: &Meta<'_>, st: &mut StageState, name: &str) {
    st.config.author = Some(name.to_string());
    m.history(st, format!("MAINTAINER {name}"), true);
}
