//! Property tests: no input makes any layer panic. Arbitrary bytes, and text built from the
//! characters that steer the parser (escapes, quotes, `$`, braces, heredoc markers, newlines).
#![allow(clippy::unwrap_used)] // a test fails by panicking

use kiln_parser::shell::{Lexer, NoEnv};
use proptest::prelude::*;

fn all_layers(text: &str) {
    if let Ok(df) = kiln_parser::parse(text) {
        let _ = kiln_parser::instruction::from_ast(&df);
        let _ = kiln_parser::lint::check(&df);
        let _ = kiln_parser::dump::to_json(&df);
        for n in &df.nodes {
            for a in &n.args {
                let _ = Lexer::new(df.escape).expand(&a.text, &NoEnv);
            }
        }
    }
    let _ = Lexer::default().expand(text, &NoEnv);
}

fn dockerfile_ish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("FROM alpine AS b\n".to_string()),
        Just("RUN ".to_string()),
        Just("COPY ".to_string()),
        Just("ENV ".to_string()),
        Just("ONBUILD ".to_string()),
        Just("HEALTHCHECK ".to_string()),
        Just("--mount=".to_string()),
        Just("--".to_string()),
        Just("<<EOF".to_string()),
        Just("<<-'E'".to_string()),
        Just("\nEOF\n".to_string()),
        Just("${A:-".to_string()),
        Just("${A/".to_string()),
        Just("${".to_string()),
        Just("}".to_string()),
        Just("[\"a\",".to_string()),
        Just("]".to_string()),
        Just("# escape=`\n".to_string()),
        Just("\\\n".to_string()),
        Just("`\n".to_string()),
        Just("\n".to_string()),
        Just("\r\n".to_string()),
        Just("\t".to_string()),
        "[a-z=\"' #$]{0,6}",
    ];
    prop::collection::vec(token, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        all_layers(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn dockerfile_like_text_never_panics(text in dockerfile_ish()) {
        all_layers(&text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Substitutions nested to any depth (each level one of the modifiers that recurse) give
    /// a result or an error, never a stack overflow; up to the limit they expand.
    #[test]
    fn deep_nesting_is_bounded(
        depth in 1usize..4000,
        ops in prop::collection::vec(prop_oneof![Just(":-"), Just("-"), Just(":+"), Just("+"), Just("#"), Just("%"), Just("/x/")], 1..8),
    ) {
        let mut word = String::new();
        for i in 0..depth {
            word.push_str("${A");
            word.push_str(ops[i % ops.len()]);
        }
        word.push('v');
        word.push_str(&"}".repeat(depth));
        let r = Lexer::default().expand(&word, &NoEnv);
        if depth < kiln_parser::shell::MAX_DEPTH {
            prop_assert!(r.is_ok(), "{depth}: {r:?}");
        } else {
            prop_assert_eq!(r.unwrap_err(), kiln_parser::ShellError::TooDeep(kiln_parser::shell::MAX_DEPTH));
        }
    }
}
