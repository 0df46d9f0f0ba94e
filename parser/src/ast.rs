//! The lenient AST: what the file says, before any instruction is validated.
//!
//! Each node keeps its keyword as written, raw flags, arguments split the way BuildKit's parser
//! splits them for that instruction, heredoc bodies, the original source lines and its spans.
//! Unknown instructions are kept here and rejected by the typed layer (`instruction`).

use crate::{
    directive::Directive,
    span::{SourceMap, Span},
};

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub directives: Vec<Directive>,
    /// The escape character in force (`\` or `` ` ``).
    pub escape: char,
    pub nodes: Vec<Node>,
    /// Problems found while reading lines (empty continuation lines).
    pub warnings: Vec<Warning>,
    /// The source text (BOM removed), which `Node::original` ranges point into.
    pub source: String,
}

impl Dockerfile {
    /// The source lines of `node` exactly as written (line endings normalised to `\n`).
    pub fn original(&self, node: &Node) -> String {
        let text = self.source.get(node.original.clone()).unwrap_or("");
        if text.contains('\r') {
            text.replace("\r\n", "\n")
        } else {
            text.to_string()
        }
    }
}

/// A finding that does not stop parsing (parser warnings and lint results).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub rule: &'static str,
    pub message: String,
    pub span: Span,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Where the keyword as written (`run`, `RUN`, `Run`) sits in `logical`.
    pub keyword_range: std::ops::Range<usize>,
    pub keyword_span: Span,
    pub flags: Vec<Flag>,
    /// Arguments as the parser splits them for this instruction, quotes and escapes kept.
    pub args: Vec<Arg>,
    /// `RUN ["a","b"]`: the arguments came from a JSON array.
    pub exec_form: bool,
    /// ENV, LABEL and ARG: key/value pairs (`value` is `None` for `ARG name`).
    pub pairs: Vec<KeyValue>,
    /// ENV/LABEL written as `ENV key value` (one pair, the rest of the line is the value).
    pub legacy_pair: bool,
    pub heredocs: Vec<Heredoc>,
    /// `ONBUILD <instruction>`: the trigger.
    pub trigger: Option<Box<Node>>,
    /// The logical line after continuation lines were joined and comment lines dropped.
    pub logical: String,
    /// Byte range of the source lines in `Dockerfile::source` (including continuation comments
    /// and heredoc bodies); see [`Dockerfile::original`].
    pub original: std::ops::Range<usize>,
    /// From the keyword to the end of the instruction's last line.
    pub span: Span,
    pub start_line: usize,
    pub end_line: usize,
    /// Comment lines directly above the instruction.
    pub comments: Vec<String>,
    /// Maps byte offsets of `logical` to source positions.
    pub map: SourceMap,
    /// Byte offset in `logical` where the arguments start.
    pub args_offset: usize,
}

impl Node {
    /// The keyword as written.
    pub fn keyword(&self) -> &str {
        self.logical.get(self.keyword_range.clone()).unwrap_or("")
    }

    /// The keyword in upper case.
    pub fn command(&self) -> String {
        self.keyword().to_ascii_uppercase()
    }

    /// The arguments' text after the flags, as in the logical line.
    pub fn args_text(&self) -> &str {
        self.logical.get(self.args_offset..).unwrap_or("").trim()
    }

    /// The span of the arguments (or of the keyword when there are none).
    pub fn args_span(&self) -> Span {
        match (self.args.first(), self.args.last()) {
            (Some(a), Some(b)) => Span::new(a.span.start, b.span.end),
            _ => self.keyword_span,
        }
    }

    /// The arguments' texts.
    pub fn arg_strs(&self) -> Vec<&str> {
        self.args.iter().map(|a| a.text.as_str()).collect()
    }
}

/// A `--name[=value]` flag as written; quotes in the value are already removed, as BuildKit does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub name: String,
    pub value: Option<String>,
    /// The flag exactly as in the source (`--mount="type=cache,target=/x"`).
    pub raw: String,
    pub span: Span,
}

/// One argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub text: String,
    pub span: Span,
}

/// A key/value pair of ENV, LABEL or ARG; `value` keeps quotes and escapes as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Option<String>,
    pub span: Span,
}

/// A here-document attached to RUN, COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter with quotes removed.
    pub name: String,
    /// The body as written, each line ending in `\n`.
    pub raw_body: String,
    /// False when any part of the delimiter was quoted: the body is not expanded.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from body lines and the delimiter line.
    pub chomp: bool,
    /// `2<<EOF` gives 2; `<<EOF` gives 0 (stdin by default).
    pub fd: u32,
    /// From the first body line to the delimiter line.
    pub span: Span,
}

impl Heredoc {
    /// The body as the instruction sees it (`<<-` strips leading tabs from every line).
    pub fn body(&self) -> String {
        if !self.chomp {
            return self.raw_body.clone();
        }
        self.raw_body
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}
