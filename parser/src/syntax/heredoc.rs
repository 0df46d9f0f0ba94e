//! Heredoc markers (`<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`) in RUN, COPY and ADD lines.

use nom::{
    IResult, Parser,
    bytes::complete::{tag, take_while},
    character::complete::{char, digit0},
    combinator::{eof, opt},
};

use crate::{
    directive::is_re2_space,
    shell::{Lexer, NoEnv},
};

/// A heredoc marker found in a line (the body is read later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marker {
    pub name: String,
    pub expand: bool,
    pub chomp: bool,
    pub fd: u32,
}

/// BuildKit's `^(\d*)<<(-?)\s*([^<]*)$`.
fn marker_parts(word: &str) -> IResult<&str, (&str, bool, &str)> {
    let (rest, (fd, _, chomp, _, name, _)) = (
        digit0,
        tag("<<"),
        opt(char('-')),
        take_while(is_re2_space),
        take_while(|c| c != '<'),
        eof,
    )
        .parse(word)?;
    Ok((rest, (fd, chomp.is_some(), name)))
}

/// Parses one word as a heredoc marker; `None` when it is not one.
pub(crate) fn parse_marker(word: &str) -> Option<Marker> {
    let (_, (fd, chomp, rest)) = marker_parts(word).ok()?;
    if rest.is_empty() {
        return None;
    }
    let mut lex = Lexer {
        skip_unset: true,
        ..Lexer::default()
    };
    let plain = lex.expand(rest, &NoEnv).ok()?.words;
    if plain.len() != 1 {
        return None;
    }
    lex.raw_quotes = true;
    let raw = lex.expand(rest, &NoEnv).ok()?.words;
    if raw.len() != 1 {
        return None;
    }
    let quotes = |s: &str| s.chars().filter(|c| *c == '\'' || *c == '"').count();
    Some(Marker {
        expand: quotes(&plain[0]) == quotes(&raw[0]),
        name: plain[0].clone(),
        chomp,
        fd: fd.parse().unwrap_or(0),
    })
}

/// All heredoc markers in a logical line, in order.
pub(crate) fn markers_in_line(line: &str) -> Vec<Marker> {
    let lex = Lexer {
        raw_quotes: true,
        raw_escapes: true,
        ..Lexer::default()
    };
    let Ok(words) = lex.expand(line, &NoEnv).map(|e| e.words) else {
        return Vec::new();
    };
    words.iter().filter_map(|w| parse_marker(w)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_forms() {
        let m = parse_marker("<<EOF").unwrap();
        assert_eq!(
            (m.name.as_str(), m.expand, m.chomp, m.fd),
            ("EOF", true, false, 0)
        );
        let m = parse_marker("<<-'EOT'").unwrap();
        assert_eq!((m.name.as_str(), m.expand, m.chomp), ("EOT", false, true));
        let m = parse_marker("3<<E\"O\"F").unwrap();
        assert_eq!((m.name.as_str(), m.expand, m.fd), ("EOF", false, 3));
        assert!(parse_marker("<<").is_none());
        assert!(parse_marker("a<<EOF").is_none());
        assert!(parse_marker("<<<EOF").is_none());
    }

    #[test]
    fn several_markers() {
        let m = markers_in_line("RUN <<F1 cat > f1 && <<-F2 cat > f2");
        assert_eq!(
            m.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["F1", "F2"]
        );
    }
}
