//! Image writing: deterministic layer tars. The OCI documents live in `kiln_runtime::oci`.

pub mod layer;
