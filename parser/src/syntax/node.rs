//! Builds one AST node from a logical line: keyword, flags, then arguments split the way
//! BuildKit's line parser splits them for that instruction (its `dispatch` table).

use super::{
    flags::extract_flags,
    heredoc::markers_in_line,
    words::{Json, Word, is_delim, parse_json_array, split_shell_words, split_whitespace},
};
use crate::{
    ast::{Arg, Flag, KeyValue, Node},
    error::ParseError,
    span::{SourceMap, Span},
};

/// How an instruction's arguments are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// JSON array or one shell-form string (RUN, CMD, ENTRYPOINT, SHELL).
    MaybeJson,
    /// JSON array or whitespace-separated words (COPY, ADD, VOLUME).
    MaybeJsonList,
    /// Whitespace-separated words (FROM, EXPOSE).
    Words,
    /// The rest of the line as one argument (USER, WORKDIR, MAINTAINER, STOPSIGNAL).
    Text,
    /// `key=value ...` or legacy `key value` (ENV, LABEL).
    NameVal,
    /// `name[=default] ...` (ARG).
    NameOrNameVal,
    /// `CMD ...`/`NONE` (HEALTHCHECK).
    Health,
    /// An instruction (ONBUILD).
    SubCommand,
    /// Unknown keyword: kept as text, rejected by the typed layer.
    Unknown,
}

fn shape(keyword: &str) -> Shape {
    const TABLE: [(&str, Shape); 18] = [
        ("run", Shape::MaybeJson),
        ("cmd", Shape::MaybeJson),
        ("entrypoint", Shape::MaybeJson),
        ("shell", Shape::MaybeJson),
        ("copy", Shape::MaybeJsonList),
        ("add", Shape::MaybeJsonList),
        ("volume", Shape::MaybeJsonList),
        ("from", Shape::Words),
        ("expose", Shape::Words),
        ("user", Shape::Text),
        ("workdir", Shape::Text),
        ("maintainer", Shape::Text),
        ("stopsignal", Shape::Text),
        ("env", Shape::NameVal),
        ("label", Shape::NameVal),
        ("arg", Shape::NameOrNameVal),
        ("healthcheck", Shape::Health),
        ("onbuild", Shape::SubCommand),
    ];
    TABLE
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(keyword))
        .map_or(Shape::Unknown, |(_, s)| *s)
}

/// What the node builder needs besides the text.
pub(crate) struct LineCtx {
    pub map: SourceMap,
    pub escape: char,
}

impl LineCtx {
    fn span(&self, text: &str, start: usize, end: usize) -> Span {
        self.map.span(text, start, end)
    }
}

/// Builds the node for `text` (a logical line). Line numbers and `original` are filled in by
/// the caller, which also reads heredoc bodies.
pub(crate) fn node_from_line(text: &str, owned: LineCtx) -> Result<Node, ParseError> {
    let ctx = &owned;
    let start = text.len() - text.trim_start().len();
    let trimmed_end = text.trim_end().len();
    let body = &text[start..trimmed_end.max(start)];
    let kw_len = body.find(is_delim).unwrap_or(body.len());
    let keyword = &body[..kw_len];
    let kw_end = start + kw_len;
    let after_kw = &text[kw_end..trimmed_end.max(kw_end)];
    let rest_off = kw_end + (after_kw.len() - after_kw.trim_start_matches(is_delim).len());
    let rest = &text[rest_off..trimmed_end.max(rest_off)];
    let (flag_words, args_off) = extract_flags(rest, rest_off);
    let args_raw = &text[args_off..trimmed_end.max(args_off)];
    let args_off = args_off + (args_raw.len() - args_raw.trim_start().len());
    let args_text = &text[args_off..trimmed_end.max(args_off)];

    let flags = flag_words
        .into_iter()
        .map(|w| {
            let stripped = w.text.strip_prefix("--").unwrap_or(&w.text);
            let (name, value) = match stripped.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (stripped.to_string(), None),
            };
            Flag {
                name,
                value,
                raw: text[w.start..w.end].to_string(),
                span: ctx.span(text, w.start, w.end),
            }
        })
        .collect();

    let mut node = Node {
        keyword_range: start..kw_end,
        keyword_span: ctx.span(text, start, kw_end),
        flags,
        args: Vec::new(),
        exec_form: false,
        pairs: Vec::new(),
        legacy_pair: false,
        heredocs: Vec::new(),
        trigger: None,
        logical: text.to_string(),
        original: 0..0,
        span: ctx.span(text, start, trimmed_end),
        start_line: 0,
        end_line: 0,
        comments: Vec::new(),
        map: SourceMap::default(),
        args_offset: args_off,
    };
    let whole = || {
        vec![Arg {
            text: args_text.to_string(),
            span: ctx.span(text, args_off, args_off + args_text.len()),
        }]
    };
    let to_args = |words: Vec<Word>| -> Vec<Arg> {
        words
            .into_iter()
            .map(|w| Arg {
                span: ctx.span(text, w.start, w.end),
                text: w.text,
            })
            .collect()
    };
    let json = |node: &mut Node| -> Result<bool, ParseError> {
        match parse_json_array(args_text) {
            Json::Array(items) => {
                let span = ctx.span(text, args_off, args_off + args_text.len());
                node.args = items.into_iter().map(|t| Arg { text: t, span }).collect();
                node.exec_form = true;
                Ok(true)
            }
            Json::NotStrings => Err(ParseError::new(
                ctx.span(text, args_off, args_off + args_text.len()),
                "when using JSON array syntax, arrays must be comprised of strings only",
            )),
            Json::Shell => Ok(false),
        }
    };

    match shape(keyword) {
        Shape::MaybeJson => {
            if !args_text.is_empty() && !json(&mut node)? {
                node.args = whole();
            }
        }
        Shape::MaybeJsonList => {
            if !json(&mut node)? {
                node.args = to_args(split_whitespace(args_text, args_off));
            }
        }
        Shape::Words => node.args = to_args(split_whitespace(args_text, args_off)),
        Shape::Text | Shape::Unknown => {
            if !args_text.is_empty() {
                node.args = whole();
            }
        }
        Shape::NameVal => name_val(&mut node, text, args_text, args_off, ctx)?,
        Shape::NameOrNameVal => {
            let words = split_shell_words(args_text, ctx.escape, args_off);
            node.pairs = words
                .iter()
                .map(|w| {
                    let (key, value) = match w.text.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (w.text.clone(), None),
                    };
                    KeyValue {
                        key,
                        value,
                        span: ctx.span(text, w.start, w.end),
                    }
                })
                .collect();
            node.args = to_args(words);
        }
        Shape::Health => {
            // The first word is the type (CMD or NONE); the rest is a command in either form.
            let sep = args_text
                .find(char::is_whitespace)
                .unwrap_or(args_text.len());
            if sep > 0 {
                let typ = Arg {
                    text: args_text[..sep].to_string(),
                    span: ctx.span(text, args_off, args_off + sep),
                };
                let cmd_raw = &args_text[sep..];
                let cmd_off = args_off + sep + (cmd_raw.len() - cmd_raw.trim_start().len());
                let cmd = cmd_raw.trim_start();
                node.args = vec![typ];
                if !cmd.is_empty() {
                    match parse_json_array(cmd) {
                        Json::Array(items) => {
                            let span = ctx.span(text, cmd_off, cmd_off + cmd.len());
                            node.args
                                .extend(items.into_iter().map(|t| Arg { text: t, span }));
                            node.exec_form = true;
                        }
                        Json::NotStrings => {
                            return Err(ParseError::new(
                                ctx.span(text, cmd_off, cmd_off + cmd.len()),
                                "when using JSON array syntax, arrays must be comprised of strings only",
                            ));
                        }
                        Json::Shell => node.args.push(Arg {
                            text: cmd.to_string(),
                            span: ctx.span(text, cmd_off, cmd_off + cmd.len()),
                        }),
                    }
                }
            }
        }
        Shape::SubCommand => {
            if !args_text.is_empty() {
                let sub_ctx = LineCtx {
                    map: ctx.map.shifted(text, args_off),
                    escape: ctx.escape,
                };
                let sub = node_from_line(args_text, sub_ctx)?;
                node.args = whole();
                node.trigger = Some(Box::new(sub));
            }
        }
    }
    node.map = owned.map;
    Ok(node)
}

fn name_val(
    node: &mut Node,
    text: &str,
    args_text: &str,
    args_off: usize,
    ctx: &LineCtx,
) -> Result<(), ParseError> {
    let words = split_shell_words(args_text, ctx.escape, args_off);
    let Some(first) = words.first() else {
        return Ok(());
    };
    if !first.text.contains('=') {
        // Legacy `ENV key value`: the first whitespace run separates key and value.
        let key_len = args_text.find(is_delim).unwrap_or(args_text.len());
        let rest = &args_text[key_len..];
        let val_off = key_len + (rest.len() - rest.trim_start_matches(is_delim).len());
        if val_off >= args_text.len() {
            return Err(ParseError::new(
                ctx.span(text, args_off, args_off + args_text.len()),
                format!("{} must have two arguments", node.command()),
            ));
        }
        let key = &args_text[..key_len];
        let value = &args_text[val_off..];
        node.legacy_pair = true;
        node.args = vec![
            Arg {
                text: key.to_string(),
                span: ctx.span(text, args_off, args_off + key_len),
            },
            Arg {
                text: value.to_string(),
                span: ctx.span(text, args_off + val_off, args_off + args_text.len()),
            },
        ];
        node.pairs = vec![KeyValue {
            key: key.to_string(),
            value: Some(value.to_string()),
            span: ctx.span(text, args_off, args_off + args_text.len()),
        }];
        return Ok(());
    }
    for w in &words {
        let Some((k, v)) = w.text.split_once('=') else {
            return Err(ParseError::new(
                ctx.span(text, w.start, w.end),
                format!(
                    "syntax error - can't find = in {:?}. Must be of the form: name=value",
                    w.text
                ),
            ));
        };
        node.pairs.push(KeyValue {
            key: k.to_string(),
            value: Some(v.to_string()),
            span: ctx.span(text, w.start, w.end),
        });
    }
    node.args = words
        .into_iter()
        .map(|w| Arg {
            span: ctx.span(text, w.start, w.end),
            text: w.text,
        })
        .collect();
    Ok(())
}

/// Whether heredoc markers in this node's line are honoured (RUN/COPY/ADD in shell form, also
/// as an ONBUILD trigger).
fn can_contain_heredoc(node: &Node) -> bool {
    let n = node.trigger.as_deref().unwrap_or(node);
    ["run", "copy", "add"]
        .iter()
        .any(|k| k.eq_ignore_ascii_case(n.keyword()))
        && !n.exec_form
}

pub(crate) fn heredoc_markers(node: &Node) -> Vec<super::heredoc::Marker> {
    if can_contain_heredoc(node) && node.logical.contains("<<") {
        markers_in_line(&node.logical)
    } else {
        Vec::new()
    }
}
