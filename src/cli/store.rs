//! Opening the store named by `--root` / `$KILN_ROOT` / the default.

use std::path::Path;

use anyhow::Context;
use kiln_runtime::store::{Store, default_root};

pub fn open(root: Option<&Path>) -> anyhow::Result<Store> {
    // A wait for another kiln process (a prune behind a running pull) is said, not silent.
    kiln_runtime::store::on_lock_wait(|what| eprintln!("kiln: {what}"));
    let root = default_root(root);
    Store::open(&root).with_context(|| format!("cannot open the store at {}", root.display()))
}
