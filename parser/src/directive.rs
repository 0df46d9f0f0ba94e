//! Parser directives (`# syntax=`, `# escape=`, `# check=`), recognised only at the top of the
//! file, before the first comment, blank line or instruction (BuildKit's parser directives).

use nom::{
    IResult, Parser,
    bytes::complete::take_while,
    character::complete::{char, satisfy},
    combinator::recognize,
    sequence::pair,
};
use serde::Serialize;

use crate::{error::ParseError, span::Span};

/// One directive as written; `name` is lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    pub name: String,
    pub value: String,
    pub span: Span,
}

/// The directives recognised by BuildKit; any other `# key=value` ends the directive block.
pub const KNOWN: [&str; 3] = ["syntax", "escape", "check"];

/// Go RE2's `\s`.
pub(crate) fn is_re2_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0c' | '\r')
}

fn key_value(input: &str) -> IResult<&str, &str> {
    let (rest, (_, _, key, _, _, _)) = (
        char('#'),
        take_while(is_re2_space),
        recognize(pair(
            satisfy(|c| c.is_ascii_alphabetic()),
            take_while(|c: char| c.is_ascii_alphanumeric()),
        )),
        take_while(is_re2_space),
        char('='),
        take_while(is_re2_space),
    )
        .parse(input)?;
    Ok((rest, key))
}

/// Splits a `# key=value` line (leading whitespace already removed) into key and value.
pub(crate) fn split_directive(line: &str) -> Option<(&str, &str)> {
    let (rest, key) = key_value(line).ok()?;
    let value = rest.trim_end_matches(is_re2_space);
    (!value.is_empty()).then_some((key, value))
}

/// The directive scanner's state while the top of the file is read.
#[derive(Debug)]
pub(crate) struct DirectiveScanner {
    done: bool,
    pub escape: char,
    pub found: Vec<Directive>,
}

impl DirectiveScanner {
    pub fn new() -> Self {
        DirectiveScanner {
            done: false,
            escape: '\\',
            found: Vec::new(),
        }
    }

    /// Feeds one physical line; `lead` is the number of whitespace characters removed before it.
    pub fn feed(&mut self, line: &str, line_no: usize, lead: usize) -> Result<(), ParseError> {
        if self.done {
            return Ok(());
        }
        let Some((key, value)) = split_directive(line) else {
            self.done = true;
            return Ok(());
        };
        let name = key.to_ascii_lowercase();
        if !KNOWN.contains(&name.as_str()) {
            self.done = true;
            return Ok(());
        }
        let col = lead + 1;
        let span = Span::new(
            crate::span::Pos::new(line_no, col),
            crate::span::Pos::new(line_no, col + line.chars().count()),
        );
        if self.found.iter().any(|d| d.name == name) {
            return Err(ParseError::new(
                span,
                format!("only one {name} parser directive can be used"),
            ));
        }
        if name == "escape" {
            self.escape = match value {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(ParseError::new(
                        span,
                        format!("invalid escape token '{other}' does not match ` or \\"),
                    ));
                }
            };
        }
        self.found.push(Directive {
            name,
            value: value.to_string(),
            span,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_forms() {
        assert_eq!(split_directive("# escape=`"), Some(("escape", "`")));
        assert_eq!(
            split_directive("#Syntax = a/b:1  "),
            Some(("Syntax", "a/b:1"))
        );
        assert_eq!(split_directive("# escape="), None);
        assert_eq!(split_directive("# 1x=y"), None);
        assert_eq!(split_directive("# just a comment"), None);
    }
}
