//! Table-driven test of `.dockerignore` matching against `testdata/dockerignore/match.txt`
//! (format in the file's header). Adding a row needs no Rust code.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use kiln_builder::context::ignore::Matcher;

#[test]
fn dockerignore_table() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/dockerignore/match.txt"
    );
    let table = std::fs::read_to_string(path).unwrap();
    let (mut rows, mut failures) = (0, Vec::new());
    for (no, line) in table.lines().enumerate() {
        let no = no + 1;
        // File comments start with `//`; rows may start with `#` (a comment pattern).
        if line.starts_with("//") {
            continue;
        }
        let Some((patterns, rest)) = line.split_once(" :: ") else {
            continue;
        };
        let (path, want) = rest.split_once(" => ").unwrap();
        rows += 1;
        let text = if patterns == "-" {
            String::new()
        } else {
            patterns.split(" ; ").collect::<Vec<_>>().join("\n")
        };
        let got = match Matcher::from_file_text(&text) {
            Err(_) => "error",
            Ok(m) if m.excludes(path) => "excluded",
            Ok(_) => "included",
        };
        if got != want {
            failures.push(format!("{no}: [{patterns}] {path}: want {want}, got {got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {rows} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        rows >= 100,
        "the table must keep at least 100 rows, has {rows}"
    );
}
