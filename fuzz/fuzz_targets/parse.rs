//! Fuzz target: any input must give Ok or Err from every parser layer and the checks, never a
//! panic or a hang; word expansion runs on every argument too.
#![no_main]

use kiln_parser::shell::{Lexer, NoEnv};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(df) = kiln_parser::parse(text) {
        let _ = kiln_parser::instruction::from_ast(&df);
        let _ = kiln_parser::lint::check(&df);
        let _ = kiln_parser::dump::to_json(&df);
        let lex = Lexer::new(df.escape);
        for n in &df.nodes {
            for a in &n.args {
                let _ = lex.expand(&a.text, &NoEnv);
            }
        }
    }
    let _ = Lexer::default().expand(text, &NoEnv);
});
