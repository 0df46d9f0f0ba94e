//! Layers fetched when they are first needed: a remote cache hit, or an image joined from a
//! registry, names layers the store does not have; the store asks ([`Store::ensure_blob`]) and
//! this fetches the blob from a registry recorded as having it, checked against its digest and
//! its diff_id before it is stored.

use super::{
    Options, Target,
    blob::{LayerPlan, Trust, download},
    client::Client,
};
use crate::{
    digest::Digest,
    store::{Store, StoreError, integrity::layer_compression},
};

/// Lets `store` fetch the layers it lacks from the registries they are recorded on, with
/// `opts` (credentials, TLS, mirrors).
pub fn install_fetcher(store: &Store, opts: &Options) {
    let opts = opts.clone();
    store.set_fetcher(Box::new(move |store, digest| {
        fetch_layer(store, digest, &opts)
    }));
}

/// Fetches the layer blob `digest` from the first registry and repository recorded as having
/// it that serves it. Only a layer recorded with its diff_id ([`Store::record_remote_layer`]) is
/// fetched: its bytes are checked against both before the blob is stored.
fn fetch_layer(store: &Store, digest: &Digest, opts: &Options) -> Result<(), StoreError> {
    let Some(layer) = store.remote_layer(digest)? else {
        return Err(StoreError::MissingBlob(*digest));
    };
    let compression =
        layer_compression(&layer.descriptor.media_type).map_err(|e| StoreError::BadLayer {
            path: store.blob_path(digest),
            reason: e.to_string(),
        })?;
    let mut tried = Vec::new();
    for (registry, repo) in store.blob_sources_anywhere(digest)? {
        let target = Target {
            registry: registry.clone(),
            repo: repo.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        };
        let got = Client::connect(&registry, opts).and_then(|client| {
            // Its digest came from a manifest fetched by tag (the registry's word), as a pull
            // by tag: decompressed as it streams in, within the same bound on expansion.
            let plan = LayerPlan {
                compression,
                diff_id: &layer.diff_id,
                chain: None,
                trust: Trust::Bounded(super::pull::expansion_limit(
                    layer.descriptor.size,
                    opts.max_expansion,
                )),
            };
            download(store, &client, &target, &layer.descriptor, Some(plan))
        });
        match got {
            Ok(_) => return Ok(()),
            Err(e) => tried.push(format!("{registry}/{repo}: {e}")),
        }
    }
    Err(StoreError::Fetch {
        digest: Box::new(*digest),
        reason: if tried.is_empty() {
            "no registry is known to have it".into()
        } else {
            tried.join("; ")
        },
    })
}
