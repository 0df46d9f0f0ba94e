//! The stable JSON form of a parsed Dockerfile, printed by `kiln parse --format json` and used by
//! the golden tests. Field order is fixed by these structs; docs/building.md documents every field.

use serde::Serialize;

use crate::ast::{Dockerfile, Node, Warning};

#[derive(Debug, Serialize)]
pub struct DumpFile {
    /// The escape character in force.
    pub escape: String,
    pub directives: Vec<DumpDirective>,
    pub instructions: Vec<DumpInstruction>,
    pub warnings: Vec<DumpWarning>,
}

#[derive(Debug, Serialize)]
pub struct DumpDirective {
    pub name: String,
    pub value: String,
    pub line: usize,
}

#[derive(Debug, Serialize)]
pub struct DumpInstruction {
    /// The keyword, upper case.
    pub keyword: String,
    /// The keyword as written.
    pub written: String,
    pub start_line: usize,
    pub end_line: usize,
    pub column: usize,
    pub flags: Vec<DumpFlag>,
    /// Arguments as split by the parser, quotes and escapes kept.
    pub args: Vec<String>,
    pub exec_form: bool,
    /// ENV, LABEL, ARG only: the key/value pairs (`value` null for `ARG name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pairs: Option<Vec<DumpPair>>,
    /// ENV, LABEL only: written in the legacy `KEY value` form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy_form: Option<bool>,
    pub heredocs: Vec<DumpHeredoc>,
    /// ONBUILD only: the trigger instruction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Box<DumpInstruction>>,
    /// The source lines exactly as written.
    pub original: String,
}

#[derive(Debug, Serialize)]
pub struct DumpFlag {
    pub name: String,
    pub value: Option<String>,
    pub raw: String,
}

#[derive(Debug, Serialize)]
pub struct DumpPair {
    pub key: String,
    pub value: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DumpHeredoc {
    pub name: String,
    /// The body as the instruction sees it (tabs stripped for `<<-`).
    pub body: String,
    pub expand: bool,
    pub chomp: bool,
    pub fd: u32,
}

#[derive(Debug, Serialize)]
pub struct DumpWarning {
    pub rule: String,
    pub message: String,
    pub line: usize,
    pub column: usize,
}

impl From<&Warning> for DumpWarning {
    fn from(w: &Warning) -> Self {
        DumpWarning {
            rule: w.rule.to_string(),
            message: w.message.clone(),
            line: w.span.start.line(),
            column: w.span.start.col(),
        }
    }
}

fn instruction(df: &Dockerfile, n: &Node) -> DumpInstruction {
    let cmd = n.command();
    let has_pairs = matches!(cmd.as_str(), "ENV" | "LABEL" | "ARG");
    DumpInstruction {
        keyword: cmd.clone(),
        written: n.keyword().to_string(),
        start_line: n.start_line,
        end_line: n.end_line,
        column: n.keyword_span.start.col(),
        flags: n
            .flags
            .iter()
            .map(|f| DumpFlag {
                name: f.name.clone(),
                value: f.value.clone(),
                raw: f.raw.clone(),
            })
            .collect(),
        args: n.args.iter().map(|a| a.text.clone()).collect(),
        exec_form: n.exec_form,
        pairs: has_pairs.then(|| {
            n.pairs
                .iter()
                .map(|p| DumpPair {
                    key: p.key.clone(),
                    value: p.value.clone(),
                })
                .collect()
        }),
        legacy_form: (cmd == "ENV" || cmd == "LABEL").then_some(n.legacy_pair),
        heredocs: n
            .heredocs
            .iter()
            .map(|h| DumpHeredoc {
                name: h.name.clone(),
                body: h.body(),
                expand: h.expand,
                chomp: h.chomp,
                fd: h.fd,
            })
            .collect(),
        trigger: n.trigger.as_deref().map(|t| {
            let mut d = instruction(df, t);
            d.start_line = n.start_line;
            d.end_line = n.end_line;
            d.original = t.logical.trim().to_string();
            Box::new(d)
        }),
        original: df.original(n),
    }
}

/// The dump of a whole file.
pub fn dump(df: &Dockerfile) -> DumpFile {
    DumpFile {
        escape: df.escape.to_string(),
        directives: df
            .directives
            .iter()
            .map(|d| DumpDirective {
                name: d.name.clone(),
                value: d.value.clone(),
                line: d.span.start.line(),
            })
            .collect(),
        instructions: df.nodes.iter().map(|n| instruction(df, n)).collect(),
        warnings: df.warnings.iter().map(DumpWarning::from).collect(),
    }
}

/// The dump as pretty JSON with a final newline.
pub fn to_json(df: &Dockerfile) -> String {
    let mut s = serde_json::to_string_pretty(&dump(df)).unwrap_or_default();
    s.push('\n');
    s
}
