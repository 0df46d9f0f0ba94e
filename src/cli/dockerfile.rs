//! Locating and reading the Dockerfile named by `-f` (default `Dockerfile`, then `dockerfile`;
//! `-` is standard input).

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::Context;

/// A Dockerfile's display name and text.
pub struct Source {
    pub name: String,
    pub text: String,
}

pub fn read(file: Option<&Path>) -> anyhow::Result<Source> {
    let path: PathBuf = match file {
        Some(p) if p == Path::new("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the Dockerfile from standard input")?;
            return Ok(Source {
                name: "<stdin>".into(),
                text,
            });
        }
        Some(p) => p.to_path_buf(),
        None if !Path::new("Dockerfile").exists() && Path::new("dockerfile").exists() => {
            PathBuf::from("dockerfile")
        }
        None => PathBuf::from("Dockerfile"),
    };
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not valid UTF-8 text at byte {}",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    Ok(Source {
        name: path.display().to_string(),
        text,
    })
}

/// Parses and types the Dockerfile; on error prints the diagnostic (with the source line and a
/// caret) and returns `None`, which the command turns into exit code 1.
pub fn parse_or_report(src: &Source) -> Option<kiln_parser::ast::Dockerfile> {
    match kiln_parser::parse(&src.text)
        .and_then(|df| kiln_parser::instruction::from_ast(&df).map(|_| df))
    {
        Ok(df) => Some(df),
        Err(e) => {
            eprint!(
                "{}",
                crate::render::diagnostic::error(&src.name, &src.text, &e)
            );
            None
        }
    }
}
