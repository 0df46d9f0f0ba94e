//! The build cache: keys ([`key`]), why a step missed ([`explain`]) and the records of past
//! builds ([`history`]). The index that maps
//! keys to layers lives in the store (`kiln_runtime::store`).

pub mod explain;
pub mod history;
pub mod key;
pub mod transfer;
