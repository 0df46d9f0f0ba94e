//! Snapshot tests of `kiln parse` and `kiln check`: every folder under `testdata/cli/` holds
//! `cmd` (the arguments), the files it reads, optionally `stdin`, and `expected` (exit code,
//! stdout, stderr). The command runs with the folder as its working directory.
//! `KILN_BLESS=1 cargo test --test cli_parse` rewrites `expected`; review the diff.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

fn run_case(dir: &Path) -> String {
    let args = std::fs::read_to_string(dir.join("cmd")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args.split_whitespace())
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = std::fs::read(dir.join("stdin")).unwrap_or_default();
    // kiln may refuse before reading stdin; EPIPE is then expected, the output tells.
    let _ = child.stdin.take().unwrap().write_all(&input);
    let out = child.wait_with_output().unwrap();
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status
            .code()
            .map_or("signal".to_string(), |c| c.to_string()),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn cli_snapshots() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/cli");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("cmd").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 10,
        "expected the CLI snapshot cases in {}",
        root.display()
    );
    let bless = std::env::var_os("KILN_BLESS").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for dir in dirs {
        let actual = run_case(&dir);
        let path = dir.join("expected");
        if bless {
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{}\n--- expected\n{expected}--- actual\n{actual}",
                dir.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn parse_error_never_shows_a_panic_or_debug_dump() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM a\nHEALTHCHECK --retries=x CMD y\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["parse"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.starts_with("Dockerfile:2:13: error: invalid value \"x\" for --retries"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("ParseError {"),
        "{err}"
    );
}
