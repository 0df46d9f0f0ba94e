//! `kiln pull` and the pulls a build makes: manifest (through an index to this machine's
//! platform, or the one asked for), config, then the layers the store lacks, several at once.
//!
//! Each layer is streamed once ([`super::blob`]): written to a blob file in the store's `tmp/`,
//! hashed, and decompressed into a second hash and the unpacker; so the blob's digest, its size
//! and its diff_id are all checked, and the layer unpacked, when the last byte arrives, with no
//! second read and no uncompressed copy. Only what passed is renamed into the store; an
//! interrupted pull leaves nothing partial visible, and the next pull fetches only what is
//! still missing. The manifest is stored last, after the store's integrity check of the whole
//! image, and only then is the tag set.

use std::sync::Mutex;

use ureq::http::Method;

use super::{
    Options, RegistryError, Target,
    blob::{LayerPlan, Trust, download},
    client::{Client, Payload, header, read_small},
    refused,
};
use crate::{
    digest::Digest,
    oci::{self, Descriptor, ImageConfig, Index, Manifest, Platform},
    store::{Store, integrity::layer_compression},
};

/// Manifest media types kiln asks for, in its order of preference.
pub(crate) const MANIFEST_TYPES: [&str; 4] = [
    oci::MEDIA_INDEX,
    "application/vnd.docker.distribution.manifest.list.v2+json",
    oci::MEDIA_MANIFEST,
    "application/vnd.docker.distribution.manifest.v2+json",
];

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub registry: Options,
    /// The platform to pick from an index (default: this machine's).
    pub platform: Option<Platform>,
    /// Layers fetched at once (0: docker's default of 3).
    pub jobs: usize,
    /// Set no tag: a build's base for another platform, which must not move the tag off this
    /// machine's image.
    pub no_tag: bool,
    /// `--all-platforms`: every image of an index, and the tag names the index.
    pub all_platforms: bool,
}

/// What happens during a pull, for the CLI to show.
#[derive(Debug, Clone)]
pub enum PullEvent {
    /// The manifest `digest` was found for the reference.
    Resolved { digest: Digest },
    /// A layer is in the store already.
    Exists { digest: Digest },
    /// A layer was fetched and verified.
    Downloaded { digest: Digest, size: u64 },
}

/// A finished pull.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub target: Target,
    /// The image manifest's digest (the platform's, when the reference named an index).
    pub manifest: Digest,
    /// The digest the reference resolved to (the index's, for a multi-platform image).
    pub resolved: Digest,
    /// The local tag set (none for a reference pinned by digest only).
    pub tag: Option<String>,
    /// Layers fetched, and how many were in the store already.
    pub downloaded: usize,
    pub present: usize,
}

/// A manifest (or index) fetched by `reference`, its bytes checked against the digest that
/// names it: the reference's own digest when pinned, else the registry's
/// `Docker-Content-Digest`.
struct Fetched {
    bytes: Vec<u8>,
    media_type: String,
    digest: Digest,
}

fn fetch_manifest(
    client: &Client,
    target: &Target,
    reference: &str,
) -> Result<Fetched, RegistryError> {
    let url = client.url(&target.repo, &format!("manifests/{reference}"));
    let accept = MANIFEST_TYPES.join(", ");
    let resp = client.call(
        Method::GET,
        &url,
        &[target.scope(false)],
        &[("accept", &accept)],
        Payload::None,
    )?;
    let what = format!("{}/{}:{reference}", client.registry, target.repo);
    if resp.status().as_u16() != 200 {
        let e = client.failure(resp, &url, &format!("manifest {what}"));
        return Err(match e {
            RegistryError::NotFound { .. } => RegistryError::NotFound {
                what: format!("manifest for {what} not found"),
                message: "manifest unknown".into(),
            },
            e => e,
        });
    }
    let content_type = header(&resp, "content-type").unwrap_or_default();
    let claimed = header(&resp, "docker-content-digest");
    let bytes = read_small(resp, &url)?;
    let digest = Digest::of(&bytes);
    let expected = if reference.starts_with("sha256:") {
        Some(reference.to_string())
    } else {
        claimed
    };
    if let Some(e) = expected.filter(|e| e.starts_with("sha256:")) {
        if e != digest.to_string() {
            return Err(refused(
                format!("manifest {what}"),
                format!("its content has digest {digest}, the registry says {e}"),
            ));
        }
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| refused(format!("manifest {what}"), format!("not JSON: {e}")))?;
    let media_type = v["mediaType"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| {
            content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        });
    if v["schemaVersion"] == 1
        || media_type.starts_with("application/vnd.docker.distribution.manifest.v1")
    {
        return Err(refused(
            format!("manifest {what}"),
            "Docker image manifest schema 1 is not supported (deprecated since 2017); push \
             the image again with a current docker, podman or skopeo",
        ));
    }
    // An index with no declared type (`manifests` but no `layers`) is still an index.
    let media_type = if media_type.is_empty() && v.get("manifests").is_some() {
        oci::MEDIA_INDEX.to_string()
    } else if media_type.is_empty() {
        oci::MEDIA_MANIFEST.to_string()
    } else {
        media_type
    };
    Ok(Fetched {
        bytes,
        media_type,
        digest,
    })
}

/// The manifest for `want` in an index: same os and architecture, and the variant when one
/// is asked for (else the first, as containerd's default matcher orders them).
fn pick<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
    index.manifests.iter().find(|m| {
        m.platform.as_ref().is_some_and(|p| {
            p.os == want.os
                && p.architecture == want.architecture
                && (want.variant.is_none() || p.matches(want))
        })
    })
}

/// The registries to try for `target`: docker.io's mirrors first, then the registry itself.
fn candidates(target: &Target, opts: &Options) -> Vec<String> {
    let mut out = Vec::new();
    if target.registry == "docker.io" {
        for m in &opts.mirrors {
            let host = m
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            out.push(host.to_string());
        }
    }
    out.push(target.registry.clone());
    out
}

/// The first registry (mirrors first, for docker.io) that has the reference's manifest.
fn resolve(target: &Target, opts: &Options) -> Result<(Client, Fetched), RegistryError> {
    let mut last_err = None;
    for registry in candidates(target, opts) {
        let attempt = Client::connect(&registry, opts)
            .and_then(|c| fetch_manifest(&c, target, target.reference()).map(|f| (c, f)));
        match attempt {
            Ok(x) => return Ok(x),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| RegistryError::Network {
        registry: target.registry.clone(),
        reason: "no registry to try".into(),
    }))
}

/// The image manifest `top` names: itself, or the one for `want` in an index.
fn image_manifest(
    client: &Client,
    target: &Target,
    top: Fetched,
    want: &Platform,
) -> Result<Fetched, RegistryError> {
    let doc = match top.media_type.as_str() {
        oci::MEDIA_INDEX | DOCKER_LIST => {
            let index: Index = serde_json::from_slice(&top.bytes)
                .map_err(|e| refused(format!("index {target}"), e.to_string()))?;
            let desc = pick(&index, want).ok_or_else(|| {
                let have: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref().map(Platform::to_string))
                    .collect();
                refused(
                    format!("{target}"),
                    format!(
                        "no image for {} (the index has {})",
                        want,
                        if have.is_empty() {
                            "none".into()
                        } else {
                            have.join(", ")
                        }
                    ),
                )
            })?;
            child_manifest(client, target, desc)?
        }
        oci::MEDIA_MANIFEST | DOCKER_MANIFEST => top,
        other => {
            return Err(refused(
                format!("manifest {target}"),
                format!("unsupported manifest media type {other:?}"),
            ));
        }
    };
    if !matches!(
        doc.media_type.as_str(),
        oci::MEDIA_MANIFEST | DOCKER_MANIFEST
    ) {
        return Err(refused(
            format!("manifest {}", doc.digest),
            format!(
                "an index must list image manifests, not {:?}",
                doc.media_type
            ),
        ));
    }
    Ok(doc)
}

/// What a layer of `size` compressed bytes pulled by tag may expand to: `ratio` times its
/// size, at least [`super::EXPANSION_FLOOR`]; `None` (no bound) for a ratio of 0.
pub(super) fn expansion_limit(size: u64, ratio: u64) -> Option<u64> {
    (ratio > 0).then(|| size.saturating_mul(ratio).max(super::EXPANSION_FLOOR))
}

/// Pulls `reference` into `store`, tagging it with the reference's name (unless it is pinned
/// by digest only, or `no_tag`). For an index, the image for `opts.platform` (this machine's by
/// default); with `all_platforms`, every image of it, and the index itself is what the tag
/// names. Holds off `kiln cache prune` until the image is tagged.
pub fn pull(
    store: &Store,
    reference: &str,
    opts: &PullOptions,
    events: &(dyn Fn(PullEvent) + Sync),
) -> Result<Pulled, RegistryError> {
    let target = Target::parse(reference)?;
    let _guard = store.build_guard()?;
    let (client, top) = resolve(&target, &opts.registry)?;
    events(PullEvent::Resolved { digest: top.digest });
    let resolved = top.digest;
    let is_index = matches!(top.media_type.as_str(), oci::MEDIA_INDEX | DOCKER_LIST);
    let (stored, downloaded, present) = if is_index && opts.all_platforms {
        let index: Index = serde_json::from_slice(&top.bytes)
            .map_err(|e| refused(format!("index {target}"), e.to_string()))?;
        let (mut downloaded, mut present) = (0, 0);
        for entry in &index.manifests {
            if crate::store::entry_platform(entry).is_none() {
                continue;
            }
            let child = child_manifest(&client, &target, entry)?;
            let got = pull_image(store, &client, &target, child, opts, events, true)?;
            downloaded += got.1;
            present += got.2;
        }
        // The index last, as the registry served it: its digest is the reference's.
        let stored = store.put_blob(&top.bytes)?;
        (stored, downloaded, present)
    } else {
        let want = opts.platform.clone().unwrap_or_else(oci::host_platform);
        let manifest_doc = image_manifest(&client, &target, top, &want)?;
        pull_image(store, &client, &target, manifest_doc, opts, events, true)?
    };
    store.note_image(&stored)?;
    store.record_repo_digest(reference, &resolved, &stored)?;
    // docker tags what was pulled by tag; a reference pinned by digest sets no tag.
    let tag = match target.digest {
        None if !opts.no_tag => Some(store.set_tag(reference, &stored)?),
        _ => None,
    };
    Ok(Pulled {
        target,
        manifest: stored,
        resolved,
        tag,
        downloaded,
        present,
    })
}

/// The images `reference` names, without their layers: each image manifest (every platform's,
/// for an index) and config stored, the layers recorded as being in the registry (so a push
/// to that registry mounts them). What `kiln manifest create` joins; returns the manifests'
/// digests.
pub fn fetch_images(
    store: &Store,
    reference: &str,
    opts: &PullOptions,
) -> Result<Vec<Digest>, RegistryError> {
    let target = Target::parse(reference)?;
    let _guard = store.build_guard()?;
    let (client, top) = resolve(&target, &opts.registry)?;
    let mut out = Vec::new();
    if matches!(top.media_type.as_str(), oci::MEDIA_INDEX | DOCKER_LIST) {
        let index: Index = serde_json::from_slice(&top.bytes)
            .map_err(|e| refused(format!("index {target}"), e.to_string()))?;
        for entry in &index.manifests {
            if crate::store::entry_platform(entry).is_none() {
                continue;
            }
            let child = child_manifest(&client, &target, entry)?;
            out.push(pull_image(store, &client, &target, child, opts, &|_| {}, false)?.0);
        }
    } else {
        out.push(pull_image(store, &client, &target, top, opts, &|_| {}, false)?.0);
    }
    Ok(out)
}

/// The manifest or index `reference` names, as the registry serves it (its digest checked):
/// `kiln manifest inspect`. Returns its bytes, media type and digest.
pub fn fetch_raw(
    reference: &str,
    opts: &Options,
) -> Result<(Vec<u8>, String, Digest), RegistryError> {
    let target = Target::parse(reference)?;
    let (_, top) = resolve(&target, opts)?;
    Ok((top.bytes, top.media_type, top.digest))
}

/// An index entry's manifest, fetched by digest and checked against the entry's size.
fn child_manifest(
    client: &Client,
    target: &Target,
    entry: &Descriptor,
) -> Result<Fetched, RegistryError> {
    let child = fetch_manifest(client, target, &entry.digest)?;
    if child.bytes.len() as u64 != entry.size {
        return Err(refused(
            format!("manifest {}", entry.digest),
            format!(
                "it has {} bytes, the index says {}",
                child.bytes.len(),
                entry.size
            ),
        ));
    }
    Ok(child)
}

/// One image manifest's config and (with `layers`) its layers fetched, checked and stored,
/// then the manifest itself; returns its digest, and how many layers were fetched and how
/// many the store had. Without `layers`, only where each layer is is recorded.
fn pull_image(
    store: &Store,
    client: &Client,
    target: &Target,
    manifest_doc: Fetched,
    opts: &PullOptions,
    events: &(dyn Fn(PullEvent) + Sync),
    layers: bool,
) -> Result<(Digest, usize, usize), RegistryError> {
    let manifest: Manifest = serde_json::from_slice(&manifest_doc.bytes)
        .map_err(|e| refused(format!("manifest {}", manifest_doc.digest), e.to_string()))?;
    let image_what = format!("image {target} ({})", manifest_doc.digest);
    if manifest.layers.len() > crate::store::MAX_LAYERS {
        return Err(refused(
            &image_what,
            format!(
                "{} layers: at most {} are supported",
                manifest.layers.len(),
                crate::store::MAX_LAYERS
            ),
        ));
    }
    // Every layer's type is usable before anything is fetched.
    let mut compressions = Vec::new();
    for (i, l) in manifest.layers.iter().enumerate() {
        compressions.push(
            layer_compression(&l.media_type)
                .map_err(|e| refused(&image_what, format!("layer {}: {e}", i + 1)))?,
        );
    }
    // The config: small, fetched first; its diff_ids are what the layers are checked against.
    let config_digest = Digest::parse(&manifest.config.digest)
        .map_err(|e| refused(&image_what, format!("config: {e}")))?;
    if manifest.config.size > 16 << 20 {
        return Err(refused(&image_what, "the config is larger than 16 MiB"));
    }
    if !store.has_blob(&config_digest) {
        download(store, client, target, &manifest.config, None)?;
    }
    let config: ImageConfig = serde_json::from_slice(&store.read_blob(&config_digest)?)
        .map_err(|e| refused(&image_what, format!("config {config_digest}: {e}")))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(refused(
            &image_what,
            format!(
                "the manifest lists {} layers, the config {} diff_ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    let mut diff_ids = Vec::new();
    for d in &config.rootfs.diff_ids {
        diff_ids.push(Digest::parse(d).map_err(|e| refused(&image_what, format!("diff_id: {e}")))?);
    }
    if !layers {
        // Each layer is known to be this registry's, as what it is: fetched when needed.
        for (l, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            store.record_remote_layer(l, diff_id)?;
        }
    }
    let chains: Vec<Option<Digest>> = (0..diff_ids.len())
        .map(|i| crate::oci::chain_id(&diff_ids[..=i]))
        .collect();
    // Layers: those missing, `jobs` at a time.
    let mut todo = Vec::new();
    let mut present = 0;
    for (i, l) in manifest.layers.iter().enumerate().filter(|_| layers) {
        let d = Digest::parse(&l.digest).map_err(|e| refused(&image_what, e.to_string()))?;
        if store.has_blob(&d) {
            present += 1;
            events(PullEvent::Exists { digest: d });
        } else if !todo
            .iter()
            .any(|&j: &usize| manifest.layers[j].digest == l.digest)
        {
            todo.push(i);
        }
    }
    let jobs = if opts.jobs == 0 { 3 } else { opts.jobs };
    let verified: Mutex<std::collections::BTreeSet<(String, String)>> = Mutex::default();
    // The layers this pull unpacked: their made-up parent directories are filled in below.
    let unpacked_now: Mutex<Vec<usize>> = Mutex::default();
    crate::parallel::for_each(&todo, jobs, |&i| {
        let desc = &manifest.layers[i];
        let chain = chains[i].filter(|c| !store.is_unpacked(c));
        if chain.is_some() {
            unpacked_now
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(i);
        }
        let plan = LayerPlan {
            compression: compressions[i],
            diff_id: &diff_ids[i],
            chain,
            trust: if target.digest.is_some() {
                Trust::VerifyFirst
            } else {
                Trust::Bounded(expansion_limit(desc.size, opts.registry.max_expansion))
            },
        };
        let d = download(store, client, target, desc, Some(plan)).map_err(|e| match e {
            RegistryError::Refused { what, reason } => RegistryError::Refused {
                what: format!(
                    "{image_what}: layer {} of {} ({what})",
                    i + 1,
                    manifest.layers.len()
                ),
                reason,
            },
            e => e,
        })?;
        verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((desc.digest.clone(), diff_ids[i].to_string()));
        events(PullEvent::Downloaded {
            digest: d,
            size: desc.size,
        });
        Ok::<(), RegistryError>(())
    })?;
    // The whole image, as `kiln load` checks it; layers verified while they streamed in are
    // not read again.
    let mut good = verified.into_inner().unwrap_or_else(|p| p.into_inner());
    if layers {
        store
            .check_image_memo(&manifest, &mut good)
            .map_err(|e| refused(&image_what, e))?;
    }
    let stack: Vec<(Digest, Digest)> = chains
        .iter()
        .zip(&manifest.layers)
        .filter_map(|(c, l)| Some(((*c)?, Digest::parse(&l.digest).ok()?)))
        .collect();
    if layers && stack.len() == manifest.layers.len() {
        store.fill_made_up_parents(
            &stack,
            unpacked_now.into_inner().unwrap_or_else(|p| p.into_inner()),
        )?;
    }
    for l in manifest
        .layers
        .iter()
        .map(|l| &l.digest)
        .chain([&manifest.config.digest])
    {
        if let Ok(d) = Digest::parse(l) {
            store.record_blob_source(&d, &client.registry, &target.repo)?;
        }
    }
    let stored = store.put_blob(&manifest_doc.bytes)?;
    Ok((stored, todo.len(), present))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_bounds() {
        // 100× the blob, never under the floor; 0 means no bound.
        assert_eq!(expansion_limit(1 << 20, 100), Some(100 << 20));
        assert_eq!(
            expansion_limit(1000, 100),
            Some(super::super::EXPANSION_FLOOR)
        );
        assert_eq!(expansion_limit(u64::MAX, 100), Some(u64::MAX));
        assert_eq!(expansion_limit(1 << 20, 0), None);
    }
}
