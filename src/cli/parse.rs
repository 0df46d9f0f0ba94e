//! `kiln parse`: parse and validate a Dockerfile, print it as JSON or a tree.

use std::{path::PathBuf, process::ExitCode};

use clap::ValueEnum;

use super::dockerfile;
use crate::render;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Json,
    Tree,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Dockerfile (default ./Dockerfile; - for standard input).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let src = dockerfile::read(args.file.as_deref())?;
    let Some(df) = dockerfile::parse_or_report(&src) else {
        return Ok(ExitCode::from(1));
    };
    match args.format {
        Format::Json => out!("{}", kiln_parser::dump::to_json(&df)),
        Format::Tree => out!("{}", render::tree::render(&df)),
    }
    Ok(ExitCode::SUCCESS)
}
