//! `FILE:LINE:COL: severity: message`, then the source line and a caret or range underline.

use kiln_parser::{ParseError, span::Span};

/// The source line `n` (1-based) as the parser numbers lines.
fn source_line(src: &str, n: usize) -> Option<&str> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    src.split('\n')
        .nth(n.checked_sub(1)?)
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
}

/// The most characters of a source line shown, and of a message.
const LINE_WINDOW: usize = 160;
const MESSAGE_MAX: usize = 1000;

/// `text` cut to `max` characters, with `...` where it was cut.
fn bounded(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut t: String = text.chars().take(max).collect();
    t.push_str("...");
    t
}

/// Renders one diagnostic. A long source line (a generated Dockerfile, a 50 MB RUN) is shown
/// as a window around the column, so the output stays a few lines whatever the input.
pub fn render(file: &str, src: &str, span: Span, severity: &str, message: &str) -> String {
    let (line, col) = (span.start.line(), span.start.col().max(1));
    let mut out = format!(
        "{file}:{line}:{col}: {severity}: {}\n",
        bounded(message, MESSAGE_MAX)
    );
    if let Some(text) = source_line(src, line) {
        let gutter = line.to_string();
        let pad = " ".repeat(gutter.len());
        // The window: from a little before the column, LINE_WINDOW characters.
        let first = col.saturating_sub(40).max(1);
        let skipped = first > 1;
        let shown: String = text.chars().skip(first - 1).take(LINE_WINDOW).collect();
        let cut = text.chars().count() > first - 1 + LINE_WINDOW;
        let (open, close) = (
            if skipped { "..." } else { "" },
            if cut { "..." } else { "" },
        );
        out.push_str(&format!(" {gutter} | {open}{shown}{close}\n"));
        let lead: String = std::iter::repeat_n(' ', open.len())
            .chain(
                shown
                    .chars()
                    .take(col - first)
                    .map(|c| if c == '\t' { '\t' } else { ' ' }),
            )
            .collect();
        let width = if span.end.line() == line && span.end.col() > col {
            span.end.col() - col
        } else {
            1
        };
        let width = width.min(LINE_WINDOW.saturating_sub(col - first)).max(1);
        out.push_str(&format!(" {pad} | {lead}{}\n", "^".repeat(width)));
    }
    out
}

/// Renders a parse error.
pub fn error(file: &str, src: &str, e: &ParseError) -> String {
    render(file, src, e.span, "error", &e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_is_shown_as_a_window() {
        let line = format!("RUN {}", "x".repeat(50_000_000));
        let src = format!("FROM a\n{line}\n");
        let span = Span::new(
            kiln_parser::span::Pos::new(2, 1),
            kiln_parser::span::Pos::new(2, line.len() + 1),
        );
        let out = render("Dockerfile", &src, span, "error", &line);
        assert!(out.len() < 2000, "{} bytes", out.len());
        assert!(out.starts_with("Dockerfile:2:1: error: RUN xxx"));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with(" 2 | RUN xxx") && lines[1].ends_with("..."));
        assert_eq!(lines[2].matches('^').count(), LINE_WINDOW);
    }
}
