//! Golden tests (folders, no Rust code per case): every folder under `testdata/parser/` holds a
//! `Dockerfile` and either `expected.json` (the `kiln parse` dump) or `expected.err`
//! (`LINE:COL: message`); every folder under `testdata/check/` a `Dockerfile` and `expected`
//! (one `LINE:COL Rule: message` per finding, then `error: true|false`).
//! Adding a case needs no Rust code. `KILN_BLESS=1 cargo test -p kiln-parser --test golden`
//! rewrites the expected files; review the diff before committing it.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::{fs, path::Path};

fn cases(area: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(area);
    let mut v: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    v.sort();
    v
}

fn bless() -> bool {
    std::env::var_os("KILN_BLESS").is_some_and(|v| v == "1")
}

/// Compares `actual` with the file at `path`, or writes it when blessing.
fn compare(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if bless() {
        fs::write(path, actual).unwrap();
        return;
    }
    match fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{}:\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        )),
        Err(_) => failures.push(format!(
            "{}: missing (run with KILN_BLESS=1)",
            path.display()
        )),
    }
}

#[test]
fn parser_cases() {
    let mut failures = Vec::new();
    let (mut ok, mut bad) = (0, 0);
    for case in cases("parser") {
        let src = fs::read_to_string(case.join("Dockerfile")).unwrap();
        let result = kiln_parser::parse(&src)
            .and_then(|df| kiln_parser::instruction::from_ast(&df).map(|_| df));
        let (json, err) = (case.join("expected.json"), case.join("expected.err"));
        match result {
            Ok(df) => {
                ok += 1;
                if err.exists() && !bless() {
                    failures.push(format!(
                        "{}: expected an error, parsed fine",
                        case.display()
                    ));
                    continue;
                }
                compare(&json, &kiln_parser::dump::to_json(&df), &mut failures);
            }
            Err(e) => {
                bad += 1;
                if json.exists() && !bless() {
                    failures.push(format!("{}: unexpected error {e}", case.display()));
                    continue;
                }
                compare(&err, &format!("{e}\n"), &mut failures);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The issue asks for at least 80 positive and 30 negative cases; keep it that way.
    assert!(
        ok >= 80 && bad >= 30,
        "only {ok} positive and {bad} negative cases"
    );
}

#[test]
fn check_cases() {
    let mut failures = Vec::new();
    for case in cases("check") {
        let src = fs::read_to_string(case.join("Dockerfile")).unwrap();
        let df = kiln_parser::parse(&src).unwrap_or_else(|e| panic!("{}: {e}", case.display()));
        let report = kiln_parser::lint::check(&df);
        let mut out = String::new();
        for w in &report.warnings {
            out.push_str(&format!("{} {}: {}\n", w.span.start, w.rule, w.message));
        }
        out.push_str(&format!("error: {}\n", report.is_error()));
        compare(&case.join("expected"), &out, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
