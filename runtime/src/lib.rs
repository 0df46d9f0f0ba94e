//! kiln-runtime: the image store, layer unpack/diff, registry client and the namespace sandbox.
//!
//! [`store`] (content-addressed blobs, tags, metadata, load/save, verify, prune), [`oci`]
//! (image config, manifest and index documents), [`layer`], [`sandbox`] and [`container`]. It
//! never depends on Dockerfile concepts: `runtime` knows nothing of parsers.

pub mod binfmt;
pub mod bounded;
pub mod container;
pub mod digest;
pub mod inplace;
pub mod layer;
pub mod network;
pub mod oci;
pub mod parallel;
pub mod procid;
pub mod reference;
pub mod registry;
pub mod sandbox;
pub mod store;
pub mod system;
pub mod timefmt;
