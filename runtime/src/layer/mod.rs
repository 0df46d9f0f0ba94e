//! Layers: reading layer tars (plain or gzip, detected by content) and the merged view of a
//! stack of layers, with whiteouts applied.

pub mod diff;
pub mod unpack;
pub mod view;
