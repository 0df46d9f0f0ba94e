//! `docs/docker-cli.md` against the binary: for each row, every flag said to be in kiln is in
//! `kiln COMMAND --help`, and no flag said to be missing is, so the table cannot go stale.
#![allow(clippy::unwrap_used)]

use std::process::Command;

const TABLE: &str = include_str!("../docs/docker-cli.md");

/// The flags `kiln COMMAND --help` lists.
fn help_flags(command: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(command.split_whitespace())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "kiln {command} --help");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut flags = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        for word in line.split([' ', ',', '=', '<']) {
            if word.starts_with('-') && word.len() > 1 {
                flags.push(word.to_string());
            }
        }
    }
    flags
}

/// The flags of a table cell: words starting with `-` inside backquotes.
fn cell_flags(cell: &str) -> Vec<String> {
    cell.replace('`', " ")
        .split_whitespace()
        .filter(|w| w.starts_with('-'))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_docker_table_says_what_kiln_has() {
    let mut rows = 0;
    for line in TABLE.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| command | has | not yet |`, skipping the header and its rule.
        if cells.len() != 5 || !cells[1].starts_with('`') {
            continue;
        }
        let commands: Vec<String> = cells[1]
            .split(',')
            .map(|c| c.trim().trim_matches('`').to_string())
            .collect();
        for command in commands {
            let flags = help_flags(&command);
            for f in cell_flags(cells[2]) {
                assert!(flags.contains(&f), "kiln {command} has no {f}: {flags:?}");
            }
            for f in cell_flags(cells[3]) {
                assert!(
                    !flags.contains(&f),
                    "kiln {command} lists {f}, which the table says it has not"
                );
            }
            rows += 1;
        }
    }
    assert!(rows >= 35, "the table has {rows} commands");
}

/// `kiln completion SHELL`: a script the shell itself accepts, naming kiln's commands and flags.
#[test]
fn completion_scripts_are_valid_and_complete() {
    let run = |shell: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = run("bash");
    for word in ["build", "network", "volume", "--publish", "--volumes-from"] {
        assert!(bash.contains(word), "bash completion lacks {word}");
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("kiln.bash");
    std::fs::write(&script, &bash).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(syntax.success(), "bash -n refuses the script");
    assert!(run("zsh").starts_with("#compdef kiln"));
    assert!(run("fish").contains("complete -c kiln"));
}

/// `kiln manpages DIR`: one page per command, from the same definitions as `--help`.
#[test]
fn man_pages_cover_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("manpages")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "kiln.1",
        "kiln-run.1",
        "kiln-network-create.1",
        "kiln-volume-prune.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH "), "{page}");
    }
    let run = std::fs::read_to_string(dir.path().join("kiln-run.1")).unwrap();
    assert!(
        run.contains("publish") && run.contains("volumes\\-from"),
        "the run page"
    );
}
