//! `FILE:LINE:COL: severity: message`, then the source line and a caret or range underline.

use kiln_parser::{ParseError, span::Span};

/// The source line `n` (1-based) as the parser numbers lines.
fn source_line(src: &str, n: usize) -> Option<&str> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    src.split('\n')
        .nth(n.checked_sub(1)?)
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
}

/// Renders one diagnostic.
pub fn render(file: &str, src: &str, span: Span, severity: &str, message: &str) -> String {
    let (line, col) = (span.start.line(), span.start.col().max(1));
    let mut out = format!("{file}:{line}:{col}: {severity}: {message}\n");
    if let Some(text) = source_line(src, line) {
        let gutter = line.to_string();
        let pad = " ".repeat(gutter.len());
        out.push_str(&format!(" {gutter} | {text}\n"));
        let lead: String = text
            .chars()
            .take(col - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let width = if span.end.line() == line && span.end.col() > col {
            span.end.col() - col
        } else {
            1
        };
        out.push_str(&format!(" {pad} | {lead}{}\n", "^".repeat(width)));
    }
    out
}

/// Renders a parse error.
pub fn error(file: &str, src: &str, e: &ParseError) -> String {
    render(file, src, e.span, "error", &e.message)
}
