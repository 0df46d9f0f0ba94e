//! The line parser: physical lines → logical instructions (directives, comments, continuation
//! lines with the escape character, empty continuation lines, heredoc bodies) → AST nodes.
//!
//! Mirrors the structure of BuildKit's `parser.Parse`: comment lines are dropped before
//! continuation lines are joined (also inside a continued instruction), leading whitespace of an
//! instruction's first line is ignored, and heredoc bodies follow the line that names them.

mod flags;
pub(crate) mod heredoc;
mod node;
pub(crate) mod words;

use crate::{
    ast::{Dockerfile, Heredoc, Node, Warning},
    directive::DirectiveScanner,
    error::ParseError,
    span::{Pos, SourceMap, Span},
};

/// Splits text into physical lines the way Go's `bufio.ScanLines` does: on `\n`, dropping one
/// trailing `\r`; no empty last line for a final newline. A UTF-8 BOM is removed.
fn physical_lines(src: &str) -> Vec<&str> {
    // Sized up front: growing a vector of a million lines reallocates ~20 times, and each
    // large reallocation makes glibc consolidate every small chunk freed so far (measured: a
    // third of the parse time on a 10 MB file).
    let mut lines: Vec<&str> = Vec::with_capacity(src.bytes().filter(|&b| b == b'\n').count() + 1);
    lines.extend(src.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)));
    if src.ends_with('\n') || src.is_empty() {
        lines.pop();
    }
    lines
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Removes a trailing escape character (followed by optional blanks); true when it was there.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix(escape) {
        Some(s) => (s, true),
        None => (line, false),
    }
}

/// Parses Dockerfile text into the lenient AST.
pub fn parse(src: &str) -> Result<Dockerfile, ParseError> {
    let body = src.strip_prefix('\u{feff}').unwrap_or(src);
    let lines = physical_lines(body);
    let mut dirs = DirectiveScanner::new();
    // An upper bound on the instruction count, so the (large) nodes are never moved by growth.
    let starts = lines
        .iter()
        .filter(|l| {
            l.trim_start()
                .starts_with(|c: char| c.is_ascii_alphabetic())
        })
        .count();
    let mut nodes: Vec<Node> = Vec::with_capacity(starts);
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let raw = lines[i];
        let line_no = i + 1;
        i += 1;
        let stripped = raw.trim_start();
        let lead = raw[..raw.len() - stripped.len()].chars().count();
        dirs.feed(stripped, line_no, lead)?;
        if is_comment(stripped) {
            let c = stripped[1..].trim();
            if c.is_empty() {
                comments.clear();
            } else {
                comments.push(c.to_string());
            }
            continue;
        }
        let escape = dirs.escape;
        let (first, mut cont) = trim_continuation(stripped, escape);
        if !cont && first.is_empty() {
            continue;
        }
        let start_line = line_no;
        let mut end_line = line_no;
        let mut text = first.to_string();
        let mut map = SourceMap::default();
        map.push(0, Pos::new(line_no, lead + 1), first);
        let mut empty_lines = Vec::new();
        while cont && i < lines.len() {
            let raw = lines[i];
            let ln = i + 1;
            i += 1;
            end_line = ln;
            dirs.feed(raw, ln, 0)?;
            if is_comment(raw) {
                continue;
            }
            if raw.trim_start().is_empty() {
                empty_lines.push(ln);
                continue;
            }
            let (t, c) = trim_continuation(raw, escape);
            cont = c;
            map.push(text.len(), Pos::new(ln, 1), t);
            text.push_str(t);
        }
        map.set_len(text.len());
        let ctx = node::LineCtx { map, escape };
        let mut node = node::node_from_line(&text, ctx)?;
        for m in node::heredoc_markers(&node) {
            let body_start = i + 1;
            let mut body = String::new();
            let mut terminated = false;
            while i < lines.len() {
                let l = lines[i];
                i += 1;
                end_line = i;
                let candidate = if m.chomp {
                    l.trim_start_matches('\t')
                } else {
                    l
                };
                if candidate == m.name {
                    terminated = true;
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            if !terminated {
                return Err(ParseError::new(
                    Span::new(
                        node.keyword_span.start,
                        Pos::new(end_line.max(start_line), 1),
                    ),
                    format!("unterminated heredoc {:?}", m.name),
                ));
            }
            node.heredocs.push(Heredoc {
                name: m.name,
                raw_body: body,
                expand: m.expand,
                chomp: m.chomp,
                fd: m.fd,
                span: Span::new(Pos::new(body_start, 1), Pos::new(end_line, 1)),
            });
        }
        if let Some(t) = node.trigger.as_deref_mut() {
            t.heredocs = node.heredocs.clone();
            t.start_line = start_line;
            t.end_line = end_line;
        }
        for &ln in &empty_lines {
            warnings.push(Warning {
                rule: "NoEmptyContinuation",
                message: "Empty continuation line".to_string(),
                span: Span::line(ln),
            });
        }
        node.start_line = start_line;
        node.end_line = end_line;
        let offset_of = |l: &str| l.as_ptr() as usize - body.as_ptr() as usize;
        let last = lines[end_line - 1];
        node.original = offset_of(lines[start_line - 1])..offset_of(last) + last.len();
        let last_len = lines[end_line - 1].chars().count();
        node.span = Span::new(node.keyword_span.start, Pos::new(end_line, last_len + 1));
        node.comments = std::mem::take(&mut comments);
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(ParseError::new(
            Span::line(lines.len().max(1)),
            "file with no instructions",
        ));
    }
    Ok(Dockerfile {
        directives: dirs.found,
        escape: dirs.escape,
        nodes,
        warnings,
        source: body.to_string(),
    })
}
