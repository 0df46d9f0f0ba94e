//! The build context: which files a build may read (`.dockerignore`), and their content digests.

pub mod ignore;
pub mod snapshot;
