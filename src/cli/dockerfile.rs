//! Locating and reading the Dockerfile named by `-f` (default `Dockerfile`, then `dockerfile`;
//! `-` is standard input).

use std::path::{Path, PathBuf};

use kiln_runtime::bounded;

/// A Dockerfile's display name and text.
pub struct Source {
    pub name: String,
    pub text: String,
}

pub fn read(file: Option<&Path>) -> anyhow::Result<Source> {
    let path: PathBuf = match file {
        Some(p) if p == Path::new("-") => {
            let bytes = bounded::read_from(
                std::io::stdin(),
                bounded::TEXT_LIMIT,
                "a Dockerfile",
                "<stdin>",
            )?;
            let text = String::from_utf8(bytes).map_err(|e| {
                anyhow::anyhow!(
                    "<stdin>: not valid UTF-8 text at byte {}",
                    e.utf8_error().valid_up_to()
                )
            })?;
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
    let bytes = bounded::read(&path, bounded::TEXT_LIMIT, "a Dockerfile")?;
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
