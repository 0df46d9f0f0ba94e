//! The `kiln` binary: parse arguments, run the command, map the outcome to an exit code
//! (0 ok, 1 failed, 2 usage; `kiln run` as `docker run`: 125 for its own failures). Commands live in `cli/`, output formatting in `render/`.

#[macro_use]
mod out;
mod cli;
mod render;

use std::process::ExitCode;

use clap::Parser;

// kiln allocates many small objects (AST nodes, file lists of large contexts); mimalloc is
// markedly faster than glibc malloc at that (docs/architecture.md, "Dependencies").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Transparent huge pages make the first touch of every fresh 2 MiB region zero all of it:
/// measured, that was about a third of a touched-context rebuild (kernel `clear_page_erms`,
/// mimalloc advises its arenas for THP). kiln's runs are short, so small pages win. The flag is
/// set in an ELF constructor, before Rust's runtime starts: the runtime's own first allocation
/// (its thread info, in `lang_start`) already faulted in a huge page of a fresh arena: with the
/// flag set in `main`, perf showed that zeroing (`clear_page_erms` under `lang_start`) as the
/// largest symbol of a `kiln run --rm IMAGE true`; set here it is gone from the profile, though
/// hyperfine puts the gain within noise (1.04 ± 0.52).
extern "C" fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes no memory kiln holds;
    // a failure (old kernel) leaves THP as it was, which is only slower.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

// SAFETY: `.init_array` entries are called once by the dynamic loader before `main`, with no
// arguments; the function only makes one system call and touches no Rust state.
#[used]
#[unsafe(link_section = ".init_array")]
static DISABLE_THP: extern "C" fn() = disable_transparent_huge_pages;

fn main() -> ExitCode {
    leave(command())
}

/// Ends the process with `code` once everything kiln owns has been dropped (its stores closed,
/// temporary files removed: all of that happens inside [`command`]). Standard output is flushed,
/// then `_exit(2)` skips the C library's exit handlers: the allocator's own teardown there (mimalloc
/// purging and unmapping its arenas) cost about 0.7 ms of every command, a twentieth of a
/// `kiln run --rm IMAGE true`, measured, for memory the kernel takes back anyway. Rust runs no
/// destructors of statics, so nothing of kiln's is skipped.
fn leave(code: ExitCode) -> ExitCode {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // `ExitCode` does not give its value back on stable Rust: found among the 256 it can hold.
    let Some(status) = (0..=u8::MAX).find(|n| ExitCode::from(*n) == code) else {
        return code;
    };
    // SAFETY: _exit takes an integer and never returns; no Rust state is used after it.
    unsafe { libc::_exit(i32::from(status)) }
}

fn command() -> ExitCode {
    // Rootless kiln's pause process (it keeps a store's namespaces; started by kiln itself).
    let mut raw = std::env::args_os();
    if raw.next().is_some_and(|a| a == "kiln-pause") {
        if let Some(file) = raw.next() {
            kiln_runtime::sandbox::pause::serve(std::path::Path::new(&file));
        }
    }
    // `KILN_ROOTFS=copy`: the sandbox's root is a copy of the layers instead of an overlayfs
    // mount (the fallback kiln uses by itself where overlayfs cannot be mounted).
    if std::env::var("KILN_ROOTFS").as_deref() == Ok("copy") {
        kiln_runtime::sandbox::overlay::force_copy(true);
    }
    // Not root: kiln becomes root in a user namespace of its own (rootless), before any thread
    // exists. Commands that never touch a store or a sandbox skip it.
    let argv = cli::aliases::rewrite(std::env::args().collect());
    let first = subcommand(argv.iter().skip(1).cloned());
    // Commands that only print: a reader that goes away (`kiln inspect app | head`) ends them
    // quietly, as any Unix tool, instead of a panic on the failed write. Not for the others
    // (their output to a closed pipe is dropped by `out!`, and their work finishes):
    // kiln writes to sockets and pipes of its own there (the ssh agent relay), where a closed
    // peer must be an error, not the death of kiln.
    if matches!(
        first.as_deref(),
        Some(
            "parse"
                | "check"
                | "images"
                | "inspect"
                | "history"
                | "ps"
                | "cache"
                | "system"
                | "logs"
                | "stats"
                | "top"
                | "diff"
                | "version"
                | "info"
        )
    ) {
        // SAFETY: restoring the default disposition of one signal, before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let fast = first
        .as_deref()
        .and_then(|name| cli::fastparse::parse(&argv, name));
    let parsed = match fast {
        Some(args) => Ok(args),
        None => cli::Cli::try_parse_from(argv),
    };
    let args = match parsed {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            // `--help` and `--version` are not errors. A usage error of `kiln run` exits 125, as
            // `docker run` does (scripts tell it from the container's own status by it); others 2.
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ if first.as_deref() == Some("run") => ExitCode::from(125),
                _ => ExitCode::from(2),
            };
        }
    };
    // `exec` joins the user namespace of the container it enters, later, instead.
    if !matches!(
        first.as_deref(),
        Some(
            "parse"
                | "check"
                | "help"
                | "login"
                | "logout"
                | "version"
                | "exec"
                | "completion"
                | "manpages"
        ) | None
    ) {
        // Rootless, the store's namespaces are shared by every kiln process using it.
        let home =
            std::path::absolute(kiln_runtime::store::default_root(args.root.as_deref())).ok();
        if let Err(e) = kiln_runtime::sandbox::userns::enter_if_unprivileged(home.as_deref()) {
            eprintln!("kiln: warning: {e}; RUN steps and kiln run will fail");
        }
    }
    let is_run = matches!(args.command, cli::Command::Run(_));
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln: error: {}", render::error_chain(&e));
            // `docker run` exits 125 when docker itself failed (bad options, no such image).
            ExitCode::from(if is_run { 125 } else { 1 })
        }
    }
}

/// The subcommand's name: the first word that is neither an option nor the value of `--root`
/// (so `kiln --root DIR run` is `run`).
fn subcommand(mut args: impl Iterator<Item = String>) -> Option<String> {
    while let Some(a) = args.next() {
        if a == "--root" {
            args.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}
