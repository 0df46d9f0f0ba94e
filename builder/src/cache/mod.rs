//! The build cache: keys ([`key`]) and why a step missed ([`explain`]). The index that maps
//! keys to layers lives in the store (`kiln_runtime::store`).

pub mod explain;
pub mod key;
