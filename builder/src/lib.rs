//! kiln-builder: turns a build context and a parsed Dockerfile into an OCI image.
//!
//! [`context`] (the build context, `.dockerignore`, snapshots and digests), [`graph`] (stages
//! and their dependencies), [`exec`] (the parallel executor, COPY/ADD, RUN), [`cache`] (keys,
//! explanations), [`image`] (layer writing), [`commit`] and [`import`] (images from a
//! container and from a root filesystem tarball).

pub mod cache;
pub mod commit;
pub mod context;
pub mod exec;
pub mod graph;
pub mod image;
pub mod import;
