//! Differential test against `parse-dockerfile` (taiki-e), an independent Rust Dockerfile parser: on
//! every golden fixture both parsers accept, they must agree on the instruction sequence and on
//! the line each instruction starts at. The peer is a syntax-level parser (it does not validate
//! flags or values as BuildKit's typed layer does), so it is compared with kiln's syntax layer;
//! cases where only one accepts must be the known differences below.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::path::Path;

/// Fixtures where kiln deliberately differs (kiln follows BuildKit; the peer is stricter or
/// looser). Each entry: (case, what differs).
const KNOWN: &[(&str, &str)] = &[
    (
        "err-duplicate-directive",
        "BuildKit rejects a repeated directive; the peer keeps one",
    ),
    (
        "err-env-legacy-one-arg",
        "BuildKit's line parser rejects `ENV KEY` without a value",
    ),
    (
        "err-env-no-equals",
        "BuildKit's line parser rejects a pair without `=` in `ENV a=1 b`",
    ),
    (
        "err-json-not-strings",
        "BuildKit rejects a JSON array with non-string elements",
    ),
    (
        "run-heredoc-fd",
        "BuildKit accepts fd-prefixed heredocs (`3<<EOF`); the peer does not",
    ),
    (
        "run-heredoc-multiple",
        "BuildKit accepts several heredocs on one line; the peer does not",
    ),
];

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].matches('\n').count() + 1
}

#[test]
fn agrees_with_parse_dockerfile() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/parser");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    let (mut compared, mut failures, mut only_one) = (0, Vec::new(), Vec::new());
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let Ok(text) = std::fs::read_to_string(case.join("Dockerfile")) else {
            continue;
        };
        let ours = kiln_parser::parse(&text);
        let typed_ok = ours
            .as_ref()
            .is_ok_and(|df| kiln_parser::instruction::from_ast(df).is_ok());
        let theirs = parse_dockerfile::parse(&text);
        let (ours, theirs) = match (ours, theirs) {
            (Ok(o), Ok(t)) => (o, t),
            // The peer rejects what kiln's typed layer rejects too: agreement.
            (Ok(_), Err(_)) if !typed_ok => continue,
            (Err(_), Err(_)) => continue,
            (o, t) => {
                only_one.push(format!(
                    "{name}: kiln {} / parse-dockerfile {}",
                    if o.is_ok() { "accepts" } else { "rejects" },
                    if t.is_ok() { "accepts" } else { "rejects" }
                ));
                continue;
            }
        };
        compared += 1;
        let body = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let ours: Vec<(String, usize)> = ours
            .nodes
            .iter()
            .map(|n| (n.command(), n.start_line))
            .collect();
        let json = serde_json::to_value(&theirs).unwrap();
        let theirs: Vec<(String, usize)> = json["instructions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let kind = i["kind"].as_str().unwrap().to_string();
                // The keyword's span is the first span in the instruction object.
                let key = kind.to_ascii_lowercase();
                let start = i[&key]["span"]["start"].as_u64().unwrap() as usize;
                (kind, line_of(body, start))
            })
            .collect();
        if ours != theirs {
            failures.push(format!("{name}:\n  kiln  {ours:?}\n  peer  {theirs:?}"));
        }
    }
    let unexpected: Vec<&String> = only_one
        .iter()
        .filter(|l| !KNOWN.iter().any(|(c, _)| l.starts_with(&format!("{c}:"))))
        .collect();
    eprintln!(
        "compared {compared} cases; accepted by only one parser:\n{}",
        only_one.join("\n")
    );
    assert!(compared >= 100, "only {compared} cases compared");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        unexpected.is_empty(),
        "undocumented differences: {unexpected:?}"
    );
}
