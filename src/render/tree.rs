//! `kiln parse --format tree`: the AST as an indented tree for people.

use std::fmt::Write;

use kiln_parser::ast::{Dockerfile, Node};

fn lines(n: &Node) -> String {
    if n.start_line == n.end_line {
        format!("line {}", n.start_line)
    } else {
        format!("lines {}-{}", n.start_line, n.end_line)
    }
}

fn node(out: &mut String, n: &Node, indent: &str) {
    let form = if n.exec_form { " (exec form)" } else { "" };
    let _ = writeln!(out, "{indent}{}  {}{form}", n.command(), lines(n));
    let inner = format!("{indent}    ");
    for f in &n.flags {
        let _ = writeln!(out, "{inner}flag {}", f.raw);
    }
    if let Some(t) = &n.trigger {
        let _ = writeln!(out, "{inner}trigger:");
        node(out, t, &format!("{inner}    "));
        return;
    }
    if !n.pairs.is_empty() {
        for p in &n.pairs {
            match &p.value {
                Some(v) => {
                    let _ = writeln!(out, "{inner}{} = {v}", p.key);
                }
                None => {
                    let _ = writeln!(out, "{inner}{} (no default)", p.key);
                }
            }
        }
    } else {
        for a in &n.args {
            let _ = writeln!(out, "{inner}arg {:?}", a.text);
        }
    }
    for h in &n.heredocs {
        let _ = writeln!(
            out,
            "{inner}heredoc {} (fd {}, {}{}, {} lines)",
            h.name,
            h.fd,
            if h.expand { "expanded" } else { "literal" },
            if h.chomp { ", tabs stripped" } else { "" },
            h.raw_body.lines().count()
        );
    }
}

/// Renders the whole file.
pub fn render(df: &Dockerfile) -> String {
    let mut out = String::new();
    for d in &df.directives {
        let _ = writeln!(out, "# {}={}  line {}", d.name, d.value, d.span.start.line);
    }
    for n in &df.nodes {
        node(&mut out, n, "");
    }
    for w in &df.warnings {
        let _ = writeln!(
            out,
            "warning: line {}: {}: {}",
            w.span.start.line, w.rule, w.message
        );
    }
    out
}
