//! Table-driven test of `${}` expansion and word splitting against `testdata/shell/expand.txt`
//! (format in the file's header). Adding a row needs no Rust code.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::{collections::BTreeMap, path::Path};

use kiln_parser::shell::Lexer;

#[test]
fn expansion_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/shell/expand.txt");
    let table = std::fs::read_to_string(&path).unwrap();
    let mut env = BTreeMap::new();
    let mut lex = Lexer::default();
    let (mut rows, mut failures) = (0, Vec::new());
    for (no, line) in table.lines().enumerate() {
        let no = no + 1;
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(kv) = line.strip_prefix("env ") {
            let (k, v) = kv.split_once('=').unwrap();
            env.insert(k.to_string(), v.to_string());
            continue;
        }
        if let Some(c) = line.strip_prefix("escape ") {
            lex = Lexer::new(c.chars().next().unwrap());
            continue;
        }
        let (input, rest) = line
            .split_once(" => ")
            .unwrap_or_else(|| panic!("line {no}: {line}"));
        let (expected, words) = match rest.split_once(" || ") {
            Some((e, w)) => (e, Some(w)),
            None => (rest, None),
        };
        rows += 1;
        let got = lex.expand(input, &env);
        match (expected.strip_prefix("error: "), got) {
            (Some(msg), Err(e)) if e.to_string() == msg => {}
            (Some(msg), other) => {
                failures.push(format!("{no}: {input}: want error {msg:?}, got {other:?}"))
            }
            (None, Err(e)) => failures.push(format!("{no}: {input}: unexpected error {e}")),
            (None, Ok(r)) => {
                let want = if expected == "∅" { "" } else { expected };
                if r.value != want {
                    failures.push(format!("{no}: {input}: want {want:?}, got {:?}", r.value));
                }
                if let Some(w) = words {
                    let want: Vec<&str> = w.split('|').collect();
                    if r.words != want {
                        failures.push(format!(
                            "{no}: {input}: want words {want:?}, got {:?}",
                            r.words
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {rows} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        rows >= 150,
        "the table must keep at least 150 rows, has {rows}"
    );
}
