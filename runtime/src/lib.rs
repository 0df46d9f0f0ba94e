//! kiln-runtime: the image store, layer unpack/diff, registry client and the namespace sandbox.
//!
//! Not built yet (issues 3 and 4). The crate exists now so the workspace has its final shape;
//! it will never depend on Dockerfile concepts (DESIGN.md: `runtime` knows nothing of parsers).
