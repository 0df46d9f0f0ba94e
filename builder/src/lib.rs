//! kiln-builder: turns a build context and a parsed Dockerfile into an OCI image.
//!
//! In progress (issue 3). Today: [`context::ignore`], the `.dockerignore` matcher. Still to come,
//! following `../shared/DESIGN.md`: the context snapshot and digests, the stage graph, the
//! parallel executor, the content-hash cache and layer/image writing.

pub mod cache;
pub mod context;
pub mod exec;
pub mod graph;
pub mod image;
