//! `kiln check`: BuildKit's build checks; exit 1 when the file is invalid or `error=true` is set
//! in the `check` directive and a check fired.

use std::{path::PathBuf, process::ExitCode};

use super::dockerfile;
use crate::render;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Dockerfile (default ./Dockerfile; - for standard input).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let src = dockerfile::read(args.file.as_deref())?;
    let Some(df) = dockerfile::parse_or_report(&src) else {
        return Ok(ExitCode::from(1));
    };
    let report = kiln_parser::lint::check(&df);
    let severity = if report.config.error {
        "error"
    } else {
        "warning"
    };
    for w in &report.warnings {
        eprint!(
            "{}",
            render::diagnostic::render(
                &src.name,
                &src.text,
                w.span,
                severity,
                &format!("{}: {}", w.rule, w.message)
            )
        );
    }
    let n = report.warnings.len();
    if n == 0 {
        eprintln!("{}: no problems found", src.name);
    } else {
        eprintln!(
            "{}: {n} {}",
            src.name,
            if n == 1 { "finding" } else { "findings" }
        );
    }
    Ok(if report.is_error() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
