//! Output formatting: diagnostics with source snippets, the parse tree view, tables.

pub mod diagnostic;
pub mod explain;
pub mod progress;
pub mod table;
pub mod tree;
