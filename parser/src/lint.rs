//! Build checks (BuildKit `frontend/dockerfile/docs/rules/`) that can be judged from the file
//! alone, and the `# check=skip=...;error=true` directive.
//!
//! Deviation, documented in docs/building.md: BuildKit knows the base image's ENV when it checks
//! `UndefinedVar`; a pure parser does not, so for stages built on an external image the
//! variables every image defines (`PATH`, `HOME`, `HOSTNAME`, `TERM`) are taken as defined.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    ast::{Dockerfile, Node, Warning},
    shell::{Env, Lexer},
    span::Span,
    suggest::closest,
};

/// Every rule this module knows, in the order docs/building.md lists them.
pub const RULES: [&str; 19] = [
    "ConsistentInstructionCasing",
    "DuplicateStageName",
    "ExposeInvalidFormat",
    "ExposeProtoCasing",
    "FromAsCasing",
    "FromPlatformFlagConstDisallowed",
    "InvalidDefaultArgInFrom",
    "JSONArgsRecommended",
    "LegacyKeyValueFormat",
    "MaintainerDeprecated",
    "MultipleInstructionsDisallowed",
    "NoEmptyContinuation",
    "RedundantTargetPlatform",
    "ReservedStageName",
    "SecretsUsedInArgOrEnv",
    "StageNameCasing",
    "UndefinedArgInFrom",
    "UndefinedVar",
    "WorkdirRelativePath",
];

/// A close variable name, only for names long enough that a near miss means a typo.
fn suggestion<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    (name.chars().count() >= 3)
        .then(|| closest(name, candidates))
        .flatten()
}

/// Settings from the `check` directive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    pub skip_all: bool,
    pub skip: BTreeSet<String>,
    /// `error=true`: any finding fails the check.
    pub error: bool,
}

impl CheckConfig {
    /// Reads `# check=skip=A,B;error=true` (unknown keys are ignored, as BuildKit does).
    pub fn from_file(df: &Dockerfile) -> CheckConfig {
        let mut cfg = CheckConfig::default();
        let Some(d) = df.directives.iter().find(|d| d.name == "check") else {
            return cfg;
        };
        for part in d.value.split(';') {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "skip" => {
                    for rule in v.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        if rule.eq_ignore_ascii_case("all") {
                            cfg.skip_all = true;
                        } else {
                            cfg.skip.insert(rule.to_string());
                        }
                    }
                }
                "error" => cfg.error = v.trim().eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        cfg
    }

    pub fn skips(&self, rule: &str) -> bool {
        self.skip_all || self.skip.contains(rule)
    }
}

/// The findings of [`check`], sorted by position, skipped rules removed.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub warnings: Vec<Warning>,
    pub config: CheckConfig,
}

impl Report {
    /// Whether the check fails (`error=true` with at least one finding).
    pub fn is_error(&self) -> bool {
        self.config.error && !self.warnings.is_empty()
    }
}

/// Names as an [`Env`]: values don't matter for the checks, only whether a name is set.
struct Names<'a>(&'a BTreeSet<String>);

impl Env for Names<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.0.contains(name).then_some("")
    }
}

const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "all_proxy",
];

const PLATFORM_ARGS: [&str; 8] = [
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

const IMAGE_ENV: [&str; 4] = ["PATH", "HOME", "HOSTNAME", "TERM"];

struct Stage {
    name: Option<String>,
    /// Variables defined so far (ARG, ENV, inherited).
    vars: BTreeSet<String>,
    has_shell: bool,
    abs_workdir: bool,
    singles: BTreeMap<String, Vec<Span>>,
}

struct Checker<'a> {
    df: &'a Dockerfile,
    out: Vec<Warning>,
    lex: Lexer,
}

impl Checker<'_> {
    fn warn(&mut self, rule: &'static str, span: Span, message: String) {
        self.out.push(Warning {
            rule,
            message,
            span,
        });
    }

    /// Reports variables in `word` that are not in `vars`.
    fn undefined(&mut self, word: &str, span: Span, vars: &BTreeSet<String>) {
        let Ok(e) = self.lex.expand(word, &Names(vars)) else {
            return;
        };
        for name in e.unmatched {
            let cands: Vec<&str> = vars.iter().map(String::as_str).collect();
            let mut msg = format!("Usage of undefined variable '${name}'");
            if let Some(c) = suggestion(&name, &cands) {
                msg.push_str(&format!(" (did you mean ${c}?)"));
            }
            self.warn("UndefinedVar", span, msg);
        }
    }

    fn casing(&mut self) {
        let (mut lower, mut upper) = (0, 0);
        for n in &self.df.nodes {
            if n.keyword() == n.keyword().to_ascii_lowercase() {
                lower += 1;
            } else if n.keyword() == n.keyword().to_ascii_uppercase() {
                upper += 1;
            }
        }
        let majority_lower = lower > upper;
        for n in &self.df.nodes {
            let (ok, which) = if majority_lower {
                (n.keyword() == n.keyword().to_ascii_lowercase(), "lowercase")
            } else {
                (n.keyword() == n.keyword().to_ascii_uppercase(), "uppercase")
            };
            if !ok {
                self.warn(
                    "ConsistentInstructionCasing",
                    n.keyword_span,
                    format!(
                        "Command '{}' should match the case of the command majority ({which})",
                        n.keyword()
                    ),
                );
            }
        }
    }

    fn finish_stage(&mut self, stage: &Stage) {
        for (cmd, spans) in &stage.singles {
            for span in &spans[..spans.len().saturating_sub(1)] {
                self.warn(
                    "MultipleInstructionsDisallowed",
                    *span,
                    format!(
                        "Multiple {cmd} instructions should not be used in the same stage because only the last one will be used"
                    ),
                );
            }
        }
    }

    fn run(&mut self) {
        self.casing();
        let mut global: BTreeSet<String> = PROXY_ARGS.iter().map(|s| s.to_string()).collect();
        global.extend(PLATFORM_ARGS.iter().map(|s| s.to_string()));
        let mut global_defaults: BTreeMap<String, Option<String>> = BTreeMap::new();
        // Named stages seen so far: variables defined by the end of each and whether it set an
        // absolute WORKDIR (a child stage inherits both).
        let mut stages: BTreeMap<String, (BTreeSet<String>, bool)> = BTreeMap::new();
        let mut stage: Option<Stage> = None;
        let nodes: &[Node] = &self.df.nodes;
        for n in nodes {
            let cmd = n.command();
            if cmd == "FROM" {
                if let Some(s) = stage.take() {
                    self.finish_stage(&s);
                    if let Some(name) = s.name {
                        stages.entry(name).or_insert((s.vars, s.abs_workdir));
                    }
                }
                stage = Some(self.from(n, &global, &global_defaults, &stages));
                continue;
            }
            let Some(st) = stage.as_mut() else {
                if cmd == "ARG" {
                    for p in &n.pairs {
                        global.insert(p.key.clone());
                        global_defaults.insert(p.key.clone(), p.value.clone());
                    }
                }
                continue;
            };
            self.instruction(n, &cmd, st);
        }
        if let Some(s) = stage.take() {
            self.finish_stage(&s);
        }
        for w in &self.df.warnings {
            self.out.push(w.clone());
        }
    }

    fn from(
        &mut self,
        n: &Node,
        global: &BTreeSet<String>,
        defaults: &BTreeMap<String, Option<String>>,
        stages: &BTreeMap<String, (BTreeSet<String>, bool)>,
    ) -> Stage {
        let args = &n.args;
        let mut name = None;
        if let [_, as_kw, stage_name] = args.as_slice() {
            let from_upper = n.keyword() == n.keyword().to_ascii_uppercase();
            let as_upper = as_kw.text == as_kw.text.to_ascii_uppercase();
            let from_lower = n.keyword() == n.keyword().to_ascii_lowercase();
            let as_lower = as_kw.text == as_kw.text.to_ascii_lowercase();
            if (from_upper && !as_upper) || (from_lower && !as_lower) {
                self.warn(
                    "FromAsCasing",
                    as_kw.span,
                    format!(
                        "'{}' and '{}' keywords' casing do not match",
                        as_kw.text,
                        n.keyword()
                    ),
                );
            }
            let lower = stage_name.text.to_ascii_lowercase();
            if stage_name.text != lower {
                self.warn(
                    "StageNameCasing",
                    stage_name.span,
                    format!("Stage name '{}' should be lowercase", stage_name.text),
                );
            }
            if lower == "scratch" || lower == "context" {
                self.warn(
                    "ReservedStageName",
                    stage_name.span,
                    format!("Stage name should not use the same name as reserved stage '{lower}'"),
                );
            }
            if stages.contains_key(&lower) {
                self.warn(
                    "DuplicateStageName",
                    stage_name.span,
                    format!("Duplicate stage name '{lower}', stage names should be unique"),
                );
            }
            name = Some(lower);
        }
        // Variables in FROM come from global ARGs only.
        let mut from_words: Vec<(String, Span)> = Vec::new();
        if let Some(image) = args.first() {
            from_words.push((image.text.clone(), image.span));
        }
        for f in n.flags.iter().filter(|f| f.name == "platform") {
            let v = f.value.clone().unwrap_or_default();
            if !v.contains('$') {
                self.warn(
                    "FromPlatformFlagConstDisallowed",
                    f.span,
                    format!("FROM --platform flag should not use constant value {v:?}"),
                );
            } else if v == "$TARGETPLATFORM" || v == "${TARGETPLATFORM}" {
                self.warn(
                    "RedundantTargetPlatform",
                    f.span,
                    "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior".to_string(),
                );
            }
            from_words.push((v, f.span));
        }
        let mut all_declared = true;
        for (word, span) in &from_words {
            if let Ok(e) = self.lex.expand(word, &Names(global)) {
                for name in e.unmatched {
                    all_declared = false;
                    let cands: Vec<&str> = global.iter().map(String::as_str).collect();
                    let mut msg = format!("FROM argument '{name}' is not declared");
                    if let Some(c) = suggestion(&name, &cands) {
                        msg.push_str(&format!(" (did you mean {c}?)"));
                    }
                    self.warn("UndefinedArgInFrom", *span, msg);
                }
            }
        }
        // Declared ARGs whose defaults leave the image name empty or dangling.
        let image = args
            .first()
            .filter(|a| a.text.contains('$') && all_declared);
        if let Some(image) = image {
            let env: Vec<(String, String)> = defaults
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
                .collect();
            if let Ok(v) = self.lex.expand_str(&image.text, &env) {
                if v.is_empty() || v.ends_with(':') || v.ends_with('@') || v.starts_with(':') {
                    self.warn(
                        "InvalidDefaultArgInFrom",
                        image.span,
                        format!(
                            "Default value for ARG {} results in empty or invalid base image name",
                            image.text
                        ),
                    );
                }
            }
        }
        let base = args.first().map(|a| a.text.to_ascii_lowercase());
        let parent = base.as_deref().and_then(|b| stages.get(b));
        let (vars, abs_workdir) = match (parent, base.as_deref()) {
            (Some((vars, wd)), _) => (vars.clone(), *wd),
            (None, Some("scratch")) => (BTreeSet::new(), false),
            _ => (IMAGE_ENV.iter().map(|s| s.to_string()).collect(), false),
        };
        let mut vars = vars;
        vars.extend(PROXY_ARGS.iter().map(|s| s.to_string()));
        Stage {
            name,
            vars,
            has_shell: false,
            abs_workdir,
            singles: BTreeMap::new(),
        }
    }

    fn instruction(&mut self, n: &Node, cmd: &str, st: &mut Stage) {
        // Variables used by instructions the builder expands.
        let expands = matches!(
            cmd,
            "ADD"
                | "COPY"
                | "ENV"
                | "EXPOSE"
                | "LABEL"
                | "STOPSIGNAL"
                | "USER"
                | "VOLUME"
                | "WORKDIR"
        );
        if expands {
            let vars = &st.vars;
            match cmd {
                "ENV" | "LABEL" => {
                    for p in &n.pairs {
                        if let Some(v) = &p.value {
                            self.undefined(v, p.span, vars);
                        }
                    }
                }
                _ => {
                    if !n.exec_form || cmd == "COPY" || cmd == "ADD" || cmd == "VOLUME" {
                        for a in &n.args {
                            self.undefined(&a.text, a.span, vars);
                        }
                    }
                }
            }
            for f in n
                .flags
                .iter()
                .filter(|f| f.name == "chown" || f.name == "chmod")
            {
                if let Some(v) = &f.value {
                    self.undefined(v, f.span, vars);
                }
            }
        }
        match cmd {
            "ARG" => {
                for p in &n.pairs {
                    self.secret("ARG", &p.key, p.span);
                    st.vars.insert(p.key.clone());
                }
            }
            "ENV" => {
                if n.legacy_pair {
                    self.warn(
                        "LegacyKeyValueFormat",
                        n.keyword_span,
                        "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format".into(),
                    );
                }
                for p in &n.pairs {
                    self.secret("ENV", &p.key, p.span);
                    st.vars.insert(p.key.clone());
                }
            }
            "LABEL" if n.legacy_pair => self.warn(
                "LegacyKeyValueFormat",
                n.keyword_span,
                "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format"
                    .into(),
            ),
            "SHELL" => st.has_shell = true,
            "CMD" | "ENTRYPOINT" | "HEALTHCHECK" => {
                st.singles
                    .entry(cmd.to_string())
                    .or_default()
                    .push(n.keyword_span);
                if cmd != "HEALTHCHECK" && !n.exec_form && !st.has_shell && !n.args.is_empty() {
                    self.warn(
                        "JSONArgsRecommended",
                        n.args_span(),
                        format!(
                            "JSON arguments recommended for {cmd} to prevent unintended behavior related to OS signals"
                        ),
                    );
                }
            }
            "MAINTAINER" => self.warn(
                "MaintainerDeprecated",
                n.keyword_span,
                "Maintainer instruction is deprecated in favor of using label".into(),
            ),
            "WORKDIR" => {
                if let Some(a) = n.args.first() {
                    let dir = a.text.trim();
                    let b = dir.as_bytes();
                    let windows_abs = b.len() >= 3
                        && b[0].is_ascii_alphabetic()
                        && b[1] == b':'
                        && (b[2] == b'\\' || b[2] == b'/');
                    if dir.starts_with('/') || dir.starts_with('$') || windows_abs {
                        st.abs_workdir = true;
                    } else if !st.abs_workdir {
                        self.warn(
                            "WorkdirRelativePath",
                            a.span,
                            format!(
                                "Relative workdir {dir:?} can have unexpected results if the base image changes"
                            ),
                        );
                    }
                }
            }
            "EXPOSE" => {
                for a in &n.args {
                    if a.text.contains(':') {
                        self.warn(
                            "ExposeInvalidFormat",
                            a.span,
                            format!(
                                "EXPOSE instruction should not define an IP address or host-port mapping, found '{}'",
                                a.text
                            ),
                        );
                    }
                    if let Some((_, proto)) = a.text.split_once('/') {
                        if proto != proto.to_ascii_lowercase() {
                            self.warn(
                                "ExposeProtoCasing",
                                a.span,
                                format!(
                                    "Defined protocol '{}' in EXPOSE instruction should be lowercase",
                                    a.text
                                ),
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn secret(&mut self, cmd: &str, key: &str, span: Span) {
        const DENY: [&str; 10] = [
            "apikey",
            "auth",
            "credential",
            "credentials",
            "key",
            "password",
            "pword",
            "passwd",
            "secret",
            "token",
        ];
        let lower = key.to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('_').collect();
        if parts.iter().any(|p| DENY.contains(p)) && !parts.contains(&"public") {
            self.warn(
                "SecretsUsedInArgOrEnv",
                span,
                format!("Do not use ARG or ENV instructions for sensitive data ({cmd} {key:?})"),
            );
        }
    }
}

/// Runs every check on `df`, honouring its `check` directive.
pub fn check(df: &Dockerfile) -> Report {
    let config = CheckConfig::from_file(df);
    let mut c = Checker {
        df,
        out: Vec::new(),
        lex: Lexer::new(df.escape),
    };
    c.run();
    let mut warnings: Vec<Warning> = c
        .out
        .into_iter()
        .filter(|w| !config.skips(w.rule))
        .collect();
    warnings.sort_by_key(|w| (w.span.start, w.rule));
    Report { warnings, config }
}
