//! Typed instructions: the AST checked against each instruction's rules (argument counts, flags,
//! flag values, JSON-only forms), with "did you mean" for unknown keywords and flags.
//!
//! Values are kept as written (variables unexpanded): which variables apply is only known while
//! building, so expansion is the builder's job, through [`crate::shell::Lexer`].

mod flags;
pub mod mount;
pub mod values;

use serde::Serialize;

use self::{
    flags::{FlagType, Flags},
    mount::Mount,
};
use crate::{
    ast::{Dockerfile, Heredoc, Node},
    error::ParseError,
    span::Span,
    suggest::with_suggestion,
    syntax::heredoc::parse_marker,
};

/// Every instruction keyword, upper case.
pub const KEYWORDS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// A typed instruction and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    pub kind: Kind,
    pub span: Span,
    pub start_line: usize,
    pub end_line: usize,
    /// The logical line (continuations joined), as BuildKit's `Original`.
    pub text: String,
}

/// A command in exec (JSON) form or shell form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "form", content = "value")]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

/// `ARG name[=default]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Default,
    None,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    Sandbox,
    Insecure,
}

/// FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    pub image: String,
    /// Lowercased stage name.
    pub name: Option<String>,
    pub platform: Option<String>,
}

/// RUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub command: Command,
    pub mounts: Vec<Mount>,
    /// The raw `--mount` values, for expansion at build time.
    pub mount_specs: Vec<String>,
    pub network: Option<Network>,
    pub security: Option<Security>,
    /// `--device=NAME[,required]` (Dockerfile 1.14+): parsed, refused at build time.
    pub devices: Vec<String>,
    pub heredocs: Vec<Heredoc>,
}

/// COPY and ADD (`is_add`); flags that one of them lacks stay at their defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub is_add: bool,
    /// Source paths (or URLs for ADD) as written.
    pub sources: Vec<String>,
    /// Inline sources (`COPY <<EOF /dest`).
    pub heredoc_sources: Vec<Heredoc>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    pub unpack: Option<bool>,
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    None,
    Check {
        /// Docker's `Test`: `["CMD", ...]` or `["CMD-SHELL", "..."]`.
        test: Vec<String>,
        interval_ns: Option<i128>,
        timeout_ns: Option<i128>,
        start_period_ns: Option<i128>,
        start_interval_ns: Option<i128>,
        retries: Option<i64>,
    },
}

/// What an instruction does.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    From(Box<From>),
    Arg(Vec<ArgDecl>),
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Run(Box<Run>),
    Cmd(Command),
    Entrypoint(Command),
    Shell(Vec<String>),
    Copy(Box<Copy>),
    Expose(Vec<String>),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    Maintainer(String),
    StopSignal(String),
    Healthcheck(Box<Health>),
    OnBuild {
        trigger: Box<Instruction>,
        /// The trigger as written, stored in the image config's `OnBuild`.
        expression: String,
    },
}

/// Converts every node of the AST, stopping at the first invalid one.
pub fn from_ast(df: &Dockerfile) -> Result<Vec<Instruction>, ParseError> {
    let mut out = Vec::with_capacity(df.nodes.len());
    for node in &df.nodes {
        out.push(from_node(node)?);
    }
    Ok(out)
}

fn err(span: Span, msg: impl Into<String>) -> ParseError {
    ParseError::new(span, msg)
}

fn at_least_one(node: &Node) -> Result<(), ParseError> {
    if node.args.is_empty() {
        return Err(err(
            node.keyword_span,
            format!("{} requires at least one argument", node.command()),
        ));
    }
    Ok(())
}

fn exactly_one(node: &Node) -> Result<String, ParseError> {
    match node.args.as_slice() {
        [a] => Ok(a.text.clone()),
        _ => Err(err(
            node.keyword_span,
            format!("{} requires exactly one argument", node.command()),
        )),
    }
}

fn command_of(node: &Node) -> Command {
    if node.exec_form {
        Command::Exec(node.args.iter().map(|a| a.text.clone()).collect())
    } else {
        Command::Shell(node.args_text().to_string())
    }
}

fn pairs(node: &Node) -> Result<Vec<(String, String)>, ParseError> {
    at_least_one(node)?;
    node.pairs
        .iter()
        .map(|p| {
            if p.key.is_empty() {
                return Err(err(
                    p.span,
                    format!("{} names can not be blank", node.command()),
                ));
            }
            Ok((p.key.clone(), p.value.clone().unwrap_or_default()))
        })
        .collect()
}

/// Converts one node.
pub fn from_node(node: &Node) -> Result<Instruction, ParseError> {
    let cmd = node.command();
    let no_flags = || Flags::parse(node, &[]).map(|_| ());
    let kind = match cmd.as_str() {
        "FROM" => {
            let f = Flags::parse(node, &[("platform", FlagType::String)])?;
            let args = node.arg_strs();
            let name = match args.as_slice() {
                [_] => None,
                [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                    let lower = name.to_ascii_lowercase();
                    let valid = lower.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                        && lower.chars().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c)
                        });
                    if !valid {
                        return Err(err(
                            node.args[2].span,
                            format!(
                                "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                            ),
                        ));
                    }
                    Some(lower)
                }
                _ => {
                    return Err(err(
                        node.args_span(),
                        "FROM requires either one or three arguments",
                    ));
                }
            };
            Kind::From(Box::new(From {
                image: args[0].to_string(),
                name,
                platform: f.string("platform").map(|(v, _)| v),
            }))
        }
        "ARG" => {
            no_flags()?;
            at_least_one(node)?;
            let decls = node
                .pairs
                .iter()
                .map(|p| {
                    if p.key.is_empty() {
                        return Err(err(p.span, "ARG names can not be blank"));
                    }
                    Ok(ArgDecl {
                        name: p.key.clone(),
                        default: p.value.clone(),
                    })
                })
                .collect::<Result<_, _>>()?;
            Kind::Arg(decls)
        }
        "ENV" => {
            no_flags()?;
            Kind::Env(pairs(node)?)
        }
        "LABEL" => {
            no_flags()?;
            Kind::Label(pairs(node)?)
        }
        "RUN" => run(node)?,
        "CMD" => {
            no_flags()?;
            Kind::Cmd(command_of(node))
        }
        "ENTRYPOINT" => {
            no_flags()?;
            Kind::Entrypoint(command_of(node))
        }
        "SHELL" => {
            no_flags()?;
            at_least_one(node)?;
            if !node.exec_form {
                return Err(err(
                    node.args_span(),
                    "SHELL requires the arguments to be in JSON form",
                ));
            }
            Kind::Shell(node.args.iter().map(|a| a.text.clone()).collect())
        }
        "COPY" | "ADD" => copy(node)?,
        "EXPOSE" => {
            no_flags()?;
            at_least_one(node)?;
            for a in &node.args {
                if !a.text.contains('$') {
                    values::check_port(&a.text).map_err(|m| err(a.span, m))?;
                }
            }
            Kind::Expose(node.args.iter().map(|a| a.text.clone()).collect())
        }
        "VOLUME" => {
            no_flags()?;
            at_least_one(node)?;
            if let Some(a) = node.args.iter().find(|a| a.text.trim().is_empty()) {
                return Err(err(a.span, "VOLUME specified can not be an empty string"));
            }
            Kind::Volume(node.args.iter().map(|a| a.text.clone()).collect())
        }
        "USER" => {
            no_flags()?;
            Kind::User(exactly_one(node)?)
        }
        "WORKDIR" => {
            no_flags()?;
            Kind::Workdir(exactly_one(node)?)
        }
        "MAINTAINER" => {
            no_flags()?;
            Kind::Maintainer(exactly_one(node)?)
        }
        "STOPSIGNAL" => {
            no_flags()?;
            let sig = exactly_one(node)?;
            if !sig.contains('$') && !values::is_valid_signal(&sig) {
                return Err(err(node.args_span(), format!("invalid signal: {sig}")));
            }
            Kind::StopSignal(sig)
        }
        "HEALTHCHECK" => healthcheck(node)?,
        "ONBUILD" => {
            no_flags()?;
            let Some(trigger) = node.trigger.as_deref() else {
                return Err(err(
                    node.keyword_span,
                    "ONBUILD requires at least one argument",
                ));
            };
            match trigger.command().as_str() {
                "ONBUILD" => {
                    return Err(err(
                        trigger.keyword_span,
                        "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                    ));
                }
                c @ ("MAINTAINER" | "FROM") => {
                    return Err(err(
                        trigger.keyword_span,
                        format!("{c} isn't allowed as an ONBUILD trigger"),
                    ));
                }
                _ => {}
            }
            let mut typed = from_node(trigger)?;
            typed.start_line = node.start_line;
            typed.end_line = node.end_line;
            Kind::OnBuild {
                trigger: Box::new(typed),
                expression: node.args_text().to_string(),
            }
        }
        _ => {
            let msg = with_suggestion(
                format!("unknown instruction: {}", node.keyword()),
                node.keyword(),
                &KEYWORDS,
            );
            return Err(err(node.keyword_span, msg));
        }
    };
    Ok(Instruction {
        kind,
        span: node.span,
        start_line: node.start_line,
        end_line: node.end_line,
        text: node.logical.trim().to_string(),
    })
}

fn run(node: &Node) -> Result<Kind, ParseError> {
    let f = Flags::parse(
        node,
        &[
            ("mount", FlagType::Strings),
            ("network", FlagType::String),
            ("security", FlagType::String),
            ("device", FlagType::Strings),
        ],
    )?;
    at_least_one(node)?;
    let mut mounts = Vec::new();
    let mut specs = Vec::new();
    for (spec, span) in f.strings("mount") {
        mounts.push(Mount::check(&spec).map_err(|m| err(span, m))?);
        specs.push(spec);
    }
    let network = match f.string("network") {
        None => None,
        Some((v, span)) => Some(match v.as_str() {
            "default" => Network::Default,
            "none" => Network::None,
            "host" => Network::Host,
            _ => return Err(err(span, format!("unsupported network mode {v:?}"))),
        }),
    };
    let security = match f.string("security") {
        None => None,
        Some((v, span)) => Some(match v.as_str() {
            "sandbox" => Security::Sandbox,
            "insecure" => Security::Insecure,
            _ => return Err(err(span, format!("unsupported security mode {v:?}"))),
        }),
    };
    Ok(Kind::Run(Box::new(Run {
        command: command_of(node),
        mounts,
        mount_specs: specs,
        network,
        security,
        devices: f.strings("device").into_iter().map(|(d, _)| d).collect(),
        heredocs: node.heredocs.clone(),
    })))
}

fn copy(node: &Node) -> Result<Kind, ParseError> {
    let is_add = node.command() == "ADD";
    let mut allowed = vec![
        ("chown", FlagType::String),
        ("chmod", FlagType::String),
        ("link", FlagType::Bool),
        ("exclude", FlagType::Strings),
    ];
    if is_add {
        allowed.extend([
            ("checksum", FlagType::String),
            ("keep-git-dir", FlagType::Bool),
            ("unpack", FlagType::Bool),
        ]);
    } else {
        allowed.extend([("from", FlagType::String), ("parents", FlagType::Bool)]);
    }
    let f = Flags::parse(node, &allowed)?;
    let cmd = node.command();
    if node.args.len() < 2 {
        let msg = if node.args.is_empty() {
            format!("{cmd} requires at least two arguments")
        } else {
            format!(
                "{cmd} requires at least two arguments, but only one was provided. Destination could not be determined"
            )
        };
        return Err(err(node.args_span(), msg));
    }
    let (srcs, dest) = node.args.split_at(node.args.len() - 1);
    let dest = &dest[0];
    if !node.exec_form && parse_marker(&dest.text).is_some() {
        return Err(err(
            dest.span,
            format!("{cmd} cannot accept a heredoc as a destination"),
        ));
    }
    let mut sources = Vec::new();
    let mut heredoc_sources = Vec::new();
    for s in srcs {
        let marker = if node.exec_form {
            None
        } else {
            parse_marker(&s.text)
        };
        match marker {
            Some(m) => match node.heredocs.iter().find(|h| h.name == m.name) {
                Some(h) => heredoc_sources.push(h.clone()),
                None => {
                    return Err(err(
                        s.span,
                        format!("no heredoc body found for {:?}", m.name),
                    ));
                }
            },
            None => sources.push(s.text.clone()),
        }
    }
    let from = f.string("from");
    if let Some((v, span)) = &from {
        if v.contains('$') {
            return Err(err(
                *span,
                "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a base image",
            ));
        }
    }
    let chmod = f.string("chmod");
    if let Some((v, span)) = &chmod {
        if !v.contains('$') && !values::is_valid_chmod(v) {
            return Err(err(*span, format!("invalid chmod parameter: {v:?}")));
        }
    }
    let checksum = f.string("checksum");
    if let Some((v, span)) = &checksum {
        let ok = v.contains('$')
            || v.strip_prefix("sha256:").map_or_else(
                || !v.is_empty() && v.bytes().all(|b| b.is_ascii_hexdigit()),
                |h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()),
            );
        if !ok {
            return Err(err(*span, format!("invalid checksum digest format: {v:?}")));
        }
    }
    Ok(Kind::Copy(Box::new(Copy {
        is_add,
        sources,
        heredoc_sources,
        dest: dest.text.clone(),
        from: from.map(|(v, _)| v),
        chown: f.string("chown").map(|(v, _)| v),
        chmod: chmod.map(|(v, _)| v),
        link: f.bool("link"),
        parents: f.bool("parents"),
        exclude: f.strings("exclude").into_iter().map(|(v, _)| v).collect(),
        checksum: checksum.map(|(v, _)| v),
        keep_git_dir: f.bool("keep-git-dir"),
        unpack: f.string("unpack").map(|(v, _)| v == "true"),
    })))
}

fn healthcheck(node: &Node) -> Result<Kind, ParseError> {
    at_least_one(node)?;
    let typ = node.args[0].text.to_ascii_uppercase();
    let rest = &node.args[1..];
    if typ == "NONE" {
        Flags::parse(node, &[])?;
        if !rest.is_empty() {
            return Err(err(
                node.args[1].span,
                "HEALTHCHECK NONE takes no arguments",
            ));
        }
        return Ok(Kind::Healthcheck(Box::new(Health::None)));
    }
    if typ != "CMD" {
        return Err(err(
            node.args[0].span,
            format!(
                "unknown type {:?} in HEALTHCHECK (try CMD)",
                node.args[0].text
            ),
        ));
    }
    let f = Flags::parse(
        node,
        &[
            ("interval", FlagType::String),
            ("timeout", FlagType::String),
            ("start-period", FlagType::String),
            ("start-interval", FlagType::String),
            ("retries", FlagType::String),
        ],
    )?;
    if rest.is_empty() {
        return Err(err(
            node.args[0].span,
            "missing command after HEALTHCHECK CMD",
        ));
    }
    let test = if node.exec_form {
        std::iter::once("CMD".to_string())
            .chain(rest.iter().map(|a| a.text.clone()))
            .collect()
    } else {
        vec!["CMD-SHELL".to_string(), rest[0].text.clone()]
    };
    let duration = |name: &str| -> Result<Option<i128>, ParseError> {
        let Some((v, span)) = f.string(name) else {
            return Ok(None);
        };
        if v.is_empty() {
            return Ok(None);
        }
        let ns = values::parse_go_duration(&v)
            .ok_or_else(|| err(span, format!("invalid duration {v:?} for --{name}")))?;
        if ns != 0 && ns < 1_000_000 {
            return Err(err(span, format!("--{name} cannot be less than 1ms")));
        }
        Ok(Some(ns))
    };
    let retries = match f.string("retries") {
        None => None,
        Some((v, span)) => {
            let n: i64 = v
                .parse()
                .map_err(|_| err(span, format!("invalid value {v:?} for --retries")))?;
            if n < 0 {
                return Err(err(span, format!("--retries cannot be negative ({n})")));
            }
            Some(n)
        }
    };
    Ok(Kind::Healthcheck(Box::new(Health::Check {
        test,
        interval_ns: duration("interval")?,
        timeout_ns: duration("timeout")?,
        start_period_ns: duration("start-period")?,
        start_interval_ns: duration("start-interval")?,
        retries,
    })))
}
