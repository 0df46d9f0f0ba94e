//! The build progress view: live lines on a terminal (this test opens its own pty through
//! util-linux `script`), plain lines without escape codes otherwise.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::process::Command;

const BASE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/base/busybox-oci");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/example");

fn store() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root.path())
        .args(["load", "-i", BASE])
        .output()
        .unwrap();
    assert!(st.status.success());
    root
}

#[test]
fn tty_view_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "util-linux `script` missing under CI"
        );
        eprintln!("skipped: tty_view_on_a_terminal: no `script` to open a pty with");
        return;
    }
    let root = store();
    let cmd = format!(
        "{} --root {} build -t ex {EXAMPLE}",
        env!("CARGO_BIN_EXE_kiln"),
        root.path().display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("\u{1b}["),
        "live lines use terminal escapes: {text}"
    );
    assert!(
        text.contains("✔ [build 1/4] FROM kiln.local/busybox:latest"),
        "{text}"
    );
    assert!(
        text.contains("✔ [stage-1 4/7] COPY --from=build /src/greet.sh /usr/local/bin/greet"),
        "{text}"
    );
    assert!(
        !text.contains("#1 "),
        "no plain-mode lines on a terminal: {text}"
    );
}

#[test]
fn plain_text_when_not_a_terminal() {
    let root = store();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root.path())
        .args(["build", "-t", "ex", EXAMPLE])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains('\u{1b}'), "no escape codes in logs: {err}");
    assert!(
        err.starts_with("#1 [build 1/4] FROM kiln.local/busybox:latest\n#1 DONE"),
        "{err}"
    );
}
