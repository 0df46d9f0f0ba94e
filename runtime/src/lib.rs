//! kiln-runtime: the image store, layer unpack/diff, registry client and the namespace sandbox.
//!
//! In progress (issues 3 and 4). Today: [`store`] (content-addressed blobs, tags, the file
//! digest cache) and [`oci`] (image config, manifest and index documents). It never
//! depends on Dockerfile concepts (DESIGN.md: `runtime` knows nothing of parsers).

pub mod bounded;
pub mod container;
pub mod digest;
pub mod layer;
pub mod oci;
pub mod procid;
pub mod reference;
pub mod sandbox;
pub mod store;
