//! The namespace sandbox behind `RUN` and `kiln run` (issue 4, in progress). Today: the overlay
//! root filesystem ([`overlay`]).

pub mod etc;
pub mod overlay;
pub mod process;
