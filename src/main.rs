//! The `kiln` binary: parse arguments, run the command, map the outcome to an exit code
//! (0 ok, 1 failed, 2 usage). Commands live in `cli/`, output formatting in `render/`.

mod cli;
mod render;

use std::process::ExitCode;

use clap::Parser;

// kiln allocates many small objects (AST nodes, file lists of large contexts); mimalloc is
// markedly faster than glibc malloc at that (README, "Dependencies").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Transparent huge pages make the first touch of every fresh 2 MiB region zero all of it:
    // measured, that was about a third of a touched-context rebuild (kernel `clear_page_erms`,
    // mimalloc advises its arenas for THP before main runs). kiln's runs are short, so small
    // pages win; the kernel checks this flag at fault time, so it covers existing mappings.
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes no memory kiln holds;
    // a failure (old kernel) leaves THP as it was, which is only slower.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    // `KILN_ROOTFS=copy`: the sandbox's root is a copy of the layers instead of an overlayfs
    // mount (the fallback kiln uses by itself where overlayfs cannot be mounted).
    if std::env::var("KILN_ROOTFS").as_deref() == Ok("copy") {
        kiln_runtime::sandbox::overlay::force_copy(true);
    }
    // Not root: kiln becomes root in a user namespace of its own (rootless), before any thread
    // exists. Commands that never touch a store or a sandbox skip it.
    let first = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if !matches!(first.as_deref(), Some("parse" | "check" | "help") | None) {
        if let Err(e) = kiln_runtime::sandbox::userns::enter_if_unprivileged() {
            eprintln!("kiln: warning: {e}; RUN steps and kiln run will fail");
        }
    }
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln: error: {}", render::error_chain(&e));
            ExitCode::from(1)
        }
    }
}
