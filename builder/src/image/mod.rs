//! Image writing: deterministic layer tars (and, to come, config, manifest and index).

pub mod layer;
pub mod oci;
