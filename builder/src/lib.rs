//! kiln-builder: turns a build context and a parsed Dockerfile into an OCI image.
//!
//! Not built yet (issue 3): context snapshot and `.dockerignore`, the stage graph, the parallel
//! executor, the content-hash cache and layer/image writing will live here, following
//! `../shared/DESIGN.md`. The crate exists now so the workspace has its final shape.
