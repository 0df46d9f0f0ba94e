//! Output formatting: diagnostics with source snippets, the parse tree view, tables.

pub mod diagnostic;
pub mod explain;
pub mod format;
pub mod progress;
pub mod table;
pub mod time;
pub mod tree;

/// An error with its causes, each said once: `context: cause: cause`. A cause whose text the
/// message already holds (errors that print their source themselves) is not repeated.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_are_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        #[derive(Debug, thiserror::Error)]
        #[error("/x: {source}")]
        struct Named {
            source: std::io::Error,
        }
        let e = anyhow::Error::new(Named { source: io }).context("--env-file");
        assert_eq!(super::error_chain(&e), "--env-file: /x: entity not found");
    }
}
