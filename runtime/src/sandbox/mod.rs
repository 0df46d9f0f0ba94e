//! The namespace sandbox behind `RUN` and `kiln run`: the overlay root filesystem
//! ([`overlay`]), the process in its namespaces ([`process`]), the mounts it gets besides its
//! root ([`mounts`], [`etc`]), resource limits and the device allow-list ([`cgroup`], [`devices`]), the system call filter ([`seccomp`]) and the ssh agent relay ([`agent`]).

pub mod agent;
pub mod cgroup;
pub mod copyroot;
pub mod devices;
pub mod etc;
pub mod exec;
pub mod mounts;
pub mod overlay;
pub mod process;
pub mod seccomp;
pub mod userns;
