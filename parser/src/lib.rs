//! kiln-parser: the whole Dockerfile language as BuildKit's frontend accepts it.
//!
//! Three representations, none skipped:
//! 1. [`parse`] → [`ast::Dockerfile`]: the lenient AST (directives, continuation lines,
//!    comments, heredocs, JSON vs shell form), every node with its source text and spans;
//! 2. [`instruction::from_ast`] → typed [`instruction::Instruction`]s with validated flags,
//!    unknown instructions rejected with a "did you mean";
//! 3. the builder's graph (kiln-builder).
//!
//! [`shell`] does word splitting and `${}` expansion; [`lint`] runs BuildKit's build checks.
//! Pure: no I/O anywhere in this crate.

pub mod ast;
pub mod directive;
pub mod dump;
pub mod error;
pub mod instruction;
pub mod lint;
pub mod shell;
pub mod span;
pub mod suggest;
mod syntax;

pub use error::{ParseError, ShellError};
pub use syntax::parse;
