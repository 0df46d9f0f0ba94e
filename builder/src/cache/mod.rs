//! The build cache: keys ([`key`]) and, to come, the index that maps them to layers.

pub mod key;
