//! The namespace sandbox behind `RUN` and `kiln run`: the overlay root filesystem
//! ([`overlay`]), the process in its namespaces ([`process`]: the parent's side; `spawn`: starting the child without copying kiln; `child`, `identity` and `attach`: the child's phases between clone and exec; `signals`: `--sig-proxy`), the mounts it gets besides its
//! root ([`mounts`], [`etc`]), resource limits and the device allow-list ([`cgroup`], [`devices`]), the system call filter ([`seccomp`]) and the ssh agent relay ([`agent`]).

pub mod agent;
mod attach;
pub mod cgroup;
mod child;
pub mod copyroot;
pub mod devices;
pub mod etc;
pub mod exec;
pub mod identity;
pub mod init;
pub mod mounts;
pub mod overlay;
pub mod pause;
pub mod process;
pub mod pty;
pub mod seccomp;
mod signals;
mod spawn;
pub mod userns;
