//! `--explain-cache` / `kiln cache explain` output: one line per keyed step, the reason under
//! the first miss of each stage.

use kiln_builder::cache::explain::Explained;

pub fn render(lines: &[Explained]) -> String {
    let mut out = String::new();
    for l in lines {
        out.push_str(if l.hit { "HIT  " } else { "MISS " });
        out.push_str(&l.name);
        if let Some(from) = &l.from {
            out.push_str(&format!("  (from the shared cache {from})"));
        }
        out.push('\n');
        if let Some(r) = &l.reason {
            out.push_str("     because: ");
            out.push_str(r);
            out.push('\n');
        }
    }
    out
}
