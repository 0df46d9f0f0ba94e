//! Output formatting: diagnostics with source snippets, the parse tree view.

pub mod diagnostic;
pub mod tree;
