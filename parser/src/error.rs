//! Parse errors: a message and the span it points at.
//!
//! Every error the parser returns carries the line and column of the offending text, so the CLI
//! can print `Dockerfile:3:5: message` followed by the source line and a caret.

use crate::span::Span;

/// A Dockerfile that could not be parsed or typed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}: {message}", span.start.line, span.start.col)]
pub struct ParseError {
    pub message: String,
    pub span: Span,
}

impl ParseError {
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        ParseError {
            message: message.into(),
            span,
        }
    }
}

/// Errors of the shell-word lexer (`$var` expansion, quoting).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(char),
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("invalid pattern ({pattern}) in substitution: invalid escape '\\{ch}'")]
    InvalidEscape { pattern: String, ch: char },
    #[error("substitutions nested more than {0} deep")]
    TooDeep(usize),
}
