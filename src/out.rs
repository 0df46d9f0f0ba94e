//! Printing to stdout that survives a reader who went away.
//!
//! `kiln pull IMAGE | grep -q Digest` closes the pipe as soon as grep has its line; a command
//! with side effects (a pull, a push, a removal) must still finish its work and exit with its
//! own status, so a script that goes on never finds the work half done. A write to a closed
//! pipe is therefore dropped quietly; any other failure to write says so once on stderr and
//! the command goes on. Commands that only print are ended by SIGPIPE instead (`main.rs`).

use std::io::Write;

/// Writes `args` to stdout (see the module doc).
pub fn write(args: std::fmt::Arguments<'_>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe && !WARNED.swap(true, Ordering::Relaxed) {
            eprintln!("kiln: warning: cannot write to stdout: {e}");
        }
    }
}

/// `print!` that never panics on a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::write(format_args!($($arg)*)) };
}

/// `println!` that never panics on a closed stdout.
macro_rules! outln {
    () => { $crate::out::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::write(format_args!("{}\n", format_args!($($arg)*))) };
}
