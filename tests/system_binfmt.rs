//! `kiln system binfmt` against the kernel's real binfmt_misc: a handler installed (a
//! `binfmt.d` line, as Debian's qemu-user-static ships them) is registered with the fix-binary
//! flag, runs the files its magic names, shows in `kiln info`, and is removed. The handler's
//! magic (`KILNTEST`) matches no real binary, and its interpreter is `/bin/true`.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

const NAME: &str = "qemu-riscv64";

fn kiln(args: &[&str], conf: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("KILN_BINFMT_D", conf)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Removes the test's handler when the test ends, passed or not.
struct Unregister;

impl Drop for Unregister {
    fn drop(&mut self) {
        let p = Path::new("/proc/sys/fs/binfmt_misc").join(NAME);
        if p.exists() {
            let _ = std::fs::write(p, "-1");
        }
    }
}

#[test]
fn installed_emulators_are_registered_listed_and_removed() {
    if !common::can_sandbox("installed_emulators_are_registered_listed_and_removed") {
        return;
    }
    if Path::new("/proc/sys/fs/binfmt_misc").join(NAME).exists() {
        eprintln!(
            "skipped: installed_emulators_are_registered_listed_and_removed: a real {NAME} is registered"
        );
        return;
    }
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(
        conf.path().join(format!("{NAME}.conf")),
        format!("# as qemu-user-static writes them\n:{NAME}:M::KILNTEST::/bin/true:\n"),
    )
    .unwrap();
    let _cleanup = Unregister;
    let (code, out, err) = kiln(&["system", "binfmt", "--install"], conf.path());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("registered {NAME} (linux/riscv64)\n"));
    // Registered with the fix-binary flag kiln adds.
    let (_, listed, _) = kiln(&["system", "binfmt"], conf.path());
    let row = listed.lines().find(|l| l.starts_with(NAME)).unwrap();
    assert!(
        row.contains("linux/riscv64") && row.contains("yes   "),
        "{listed}"
    );
    let flags = std::fs::read_to_string(Path::new("/proc/sys/fs/binfmt_misc").join(NAME)).unwrap();
    assert!(flags.contains("flags: F"), "{flags}");
    // The kernel runs a file with the magic through the interpreter.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("foreign");
    std::fs::write(&file, b"KILNTEST and whatever follows").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(Command::new(&file).status().unwrap().success());
    let (_, info, _) = kiln(&["info", "--format", "{{json .Emulators}}"], conf.path());
    assert!(
        info.contains(&format!("linux/riscv64 ({NAME}, fix-binary)")),
        "{info}"
    );
    // Again: nothing to do.
    let (code, out, _) = kiln(&["system", "binfmt", "--install"], conf.path());
    assert_eq!((code, out.as_str()), (0, ""));
    let (code, out, err) = kiln(&["system", "binfmt", "--uninstall", NAME], conf.path());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("removed {NAME}\n"));
    assert!(!Path::new("/proc/sys/fs/binfmt_misc").join(NAME).exists());
    let (code, _, err) = kiln(&["system", "binfmt", "--uninstall", NAME], conf.path());
    assert_eq!(code, 1);
    assert!(err.contains("no binfmt_misc handler"), "{err}");
    // No emulator installed: the error names the package.
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = kiln(&["system", "binfmt", "--install"], empty.path());
    assert_eq!(code, 1);
    assert!(err.contains("qemu-user-static"), "{err}");
}
