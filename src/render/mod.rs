//! Output formatting: diagnostics with source snippets, the parse tree view, tables.

pub mod diagnostic;
pub mod table;
pub mod tree;
