//! `kiln pull` and the pulls a build makes: manifest (through an index to this machine's
//! platform, or the one asked for), config, then the layers the store lacks, several at once.
//!
//! Each layer is streamed once: the bytes go to a blob file in the store's `tmp/` while they are
//! hashed and, at the same time, decompressed into a second hash; so the blob's digest, its
//! size and its diff_id are all checked when the last byte arrives, with no second read and no
//! uncompressed copy. Only a blob that passed is renamed into the store; an interrupted pull
//! leaves no partial blob visible, and the next pull fetches only what is still missing. The
//! manifest is stored last, after the store's integrity check of the whole image, and only
//! then is the tag set.

use std::{
    io::{Read, Write},
    sync::Mutex,
};

use sha2::{Digest as _, Sha256};
use ureq::http::Method;

use super::{
    Options, RegistryError, Target,
    client::{Client, Payload, read_small},
};
use crate::{
    digest::Digest,
    layer::view::RawEntry,
    oci::{self, Descriptor, ImageConfig, Index, Manifest, Platform},
    store::{
        Store,
        integrity::{Compression, layer_compression},
    },
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

fn refused(what: impl Into<String>, reason: impl Into<String>) -> RegistryError {
    RegistryError::Refused {
        what: what.into(),
        reason: reason.into(),
    }
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
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type").unwrap_or_default();
    let claimed = header("docker-content-digest");
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

fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// The manifest for `want` in an index: same os and architecture, and the variant when one
/// is asked for (else the first, as containerd's default matcher orders them).
fn pick<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
    index.manifests.iter().find(|m| {
        m.platform.as_ref().is_some_and(|p| {
            p.os == want.os
                && p.architecture == want.architecture
                && (want.variant.is_none() || p.variant == want.variant)
        })
    })
}

/// What is known of a layer before it arrives, to check and unpack it on the way in.
struct LayerPlan<'a> {
    compression: Compression,
    diff_id: &'a Digest,
    /// Its ChainID, when it is not unpacked yet: it is unpacked while it streams in.
    chain: Option<Digest>,
}

/// Where a layer's uncompressed bytes go: its diff_id hash, and (when it is being unpacked)
/// the pipe to the unpacking thread.
struct Tee {
    sha: Sha256,
    pipe: Option<std::io::PipeWriter>,
}

impl Write for Tee {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.sha.update(b);
        if let Some(p) = &mut self.pipe {
            p.write_all(b)?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A decompressor writing into a [`Tee`] (the tee itself for an uncompressed layer).
trait Unpacking: Write + Send {
    /// The compression, for messages.
    fn name(&self) -> &'static str;
    /// Ends the stream (an incomplete one is an error); the content's digest.
    fn finish_digest(self: Box<Self>) -> std::io::Result<Digest>;
}

impl Unpacking for Tee {
    fn name(&self) -> &'static str {
        "tar"
    }
    fn finish_digest(self: Box<Self>) -> std::io::Result<Digest> {
        Ok(Digest::from_sha256(self.sha))
    }
}

impl Unpacking for flate2::write::MultiGzDecoder<Tee> {
    fn name(&self) -> &'static str {
        "gzip"
    }
    fn finish_digest(self: Box<Self>) -> std::io::Result<Digest> {
        Ok(Digest::from_sha256((*self).finish()?.sha))
    }
}

impl Unpacking for zstd::stream::write::Decoder<'static, Tee> {
    fn name(&self) -> &'static str {
        "zstd"
    }
    fn finish_digest(mut self: Box<Self>) -> std::io::Result<Digest> {
        self.flush()?;
        Ok(Digest::from_sha256(self.into_inner().sha))
    }
}

/// A verified transfer: the blob file (not yet visible), its digest, a layer's diff_id.
type Transfer = (crate::store::BlobFile, Digest, Option<Digest>);

/// Downloads one blob into the store, checking its size and digest. A layer is checked
/// against its diff_id and unpacked (its index taken on the way) in the same pass: the
/// compressed bytes go to the blob file and through one decompressor, whose output is hashed
/// and piped to an unpacking thread. The blob and the unpacked directory become visible only
/// once every check passed. A transfer that breaks off is tried again from the start.
fn download(
    store: &Store,
    client: &Client,
    target: &Target,
    desc: &Descriptor,
    layer: Option<LayerPlan<'_>>,
) -> Result<Digest, RegistryError> {
    let digest = Digest::parse(&desc.digest)
        .map_err(|e| refused(format!("blob {}", desc.digest), e.to_string()))?;
    let what = format!("blob {digest}");
    let url = client.url(&target.repo, &format!("blobs/{digest}"));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let resp = client.call(
            Method::GET,
            &url,
            &[target.scope(false)],
            &[],
            Payload::None,
        )?;
        if resp.status().as_u16() != 200 {
            return Err(client.failure(resp, &url, &what));
        }
        let body = resp.into_body().into_reader();
        let unpack_to = match layer.as_ref().and_then(|l| l.chain.as_ref()) {
            Some(chain) => Some((store.unpack_dir(chain)?, chain)),
            None => None,
        };
        let discard = || {
            if let Some((dir, _)) = &unpack_to {
                let _ = std::fs::remove_dir_all(dir);
            }
        };
        let result = transfer(
            store,
            body,
            desc,
            &what,
            layer.as_ref(),
            unpack_to.as_ref().map(|u| u.0.as_path()),
        );
        let (blob, got, diff, index) = match result {
            Ok(Some(x)) => x,
            Ok(None) if attempt <= 3 => {
                discard();
                continue;
            }
            Ok(None) => {
                discard();
                return Err(RegistryError::Network {
                    registry: client.registry.clone(),
                    reason: format!("{what}: the transfer broke off, {attempt} times"),
                });
            }
            Err(e) => {
                discard();
                return Err(e);
            }
        };
        let wrong = if got != digest {
            Some(format!("its content has digest {got}"))
        } else {
            match (&layer, &diff) {
                (Some(plan), Some(actual)) if actual != plan.diff_id => Some(format!(
                    "its content has diff_id {actual}, the config says {}",
                    plan.diff_id
                )),
                _ => None,
            }
        };
        if let Some(reason) = wrong {
            discard();
            return Err(refused(&what, reason));
        }
        store.commit_blob(blob, &digest)?;
        if let (Some((dir, chain)), Some(index), Some(plan)) = (&unpack_to, index, &layer) {
            store.record_layer_entries(&digest, &index)?;
            let made = store.place_unpacked(dir, chain)?;
            store.note_unpacked(&[(chain.hex().to_string(), plan.diff_id.to_string(), made)])?;
        }
        return Ok(digest);
    }
}

fn local(store: &Store, e: std::io::Error) -> RegistryError {
    RegistryError::Local {
        path: store.root().join("tmp"),
        reason: e.to_string(),
    }
}

/// One attempt: [`stream`], with an unpacking thread reading the layer's tar from a pipe when
/// `unpack_to` is given. `Ok(None)`: the transfer broke off (try again).
#[allow(clippy::type_complexity)]
fn transfer(
    store: &Store,
    body: impl Read + Send,
    desc: &Descriptor,
    what: &str,
    layer: Option<&LayerPlan<'_>>,
    unpack_to: Option<&std::path::Path>,
) -> Result<
    Option<(
        crate::store::BlobFile,
        Digest,
        Option<Digest>,
        Option<Vec<RawEntry>>,
    )>,
    RegistryError,
> {
    let Some(dir) = unpack_to else {
        let tee = Tee {
            sha: Sha256::new(),
            pipe: None,
        };
        return Ok(stream(store, body, desc, what, layer, tee)?.map(|(b, g, d)| (b, g, d, None)));
    };
    let (r, w) = std::io::pipe().map_err(|e| local(store, e))?;
    std::thread::scope(|s| {
        let unpacker = s.spawn(move || {
            let mut r = std::io::BufReader::with_capacity(1 << 20, r);
            let index = crate::layer::unpack::unpack_indexed(&mut r, dir);
            // The tar's trailing padding: read to the end so the writer never blocks.
            let _ = std::io::copy(&mut r, &mut std::io::sink());
            index
        });
        let tee = Tee {
            sha: Sha256::new(),
            pipe: Some(w),
        };
        // The pipe's writer is dropped when `stream` returns: the unpacker sees the end.
        let streamed = stream(store, body, desc, what, layer, tee);
        let unpacked = unpacker.join();
        let Some((blob, got, diff)) = streamed? else {
            return Ok(None);
        };
        match unpacked {
            Ok(Ok(index)) => Ok(Some((blob, got, diff, Some(index)))),
            Ok(Err(e)) => Err(refused(what, format!("cannot unpack it: {e}"))),
            Err(_) => Err(refused(what, "the unpacking thread failed")),
        }
    })
}

/// The transfer itself: the blob file written and hashed, a layer decompressed into `tee`.
/// `Ok(None)`: the transfer broke off.
fn stream(
    store: &Store,
    mut body: impl Read,
    desc: &Descriptor,
    what: &str,
    layer: Option<&LayerPlan<'_>>,
    tee: Tee,
) -> Result<Option<Transfer>, RegistryError> {
    let mut blob = store.new_blob_file()?;
    let mut sha = Sha256::new();
    let mut diff: Option<Box<dyn Unpacking>> = match layer.map(|l| l.compression) {
        Some(Compression::None) => Some(Box::new(tee)),
        Some(Compression::Gzip) => Some(Box::new(flate2::write::MultiGzDecoder::new(tee))),
        Some(Compression::Zstd) => Some(Box::new(
            zstd::stream::write::Decoder::new(tee)
                .map_err(|e| refused(what, format!("cannot start the zstd decoder: {e}")))?,
        )),
        None => None,
    };
    let mut size = 0u64;
    // The first two bytes: the compression's magic, or not.
    let mut head: Vec<u8> = Vec::with_capacity(2);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(_) => return Ok(None),
        };
        let had = head.len();
        head.extend(buf[..n].iter().take(2 - had));
        if had < 2 && (head.len() == 2 || n as u64 + size >= desc.size) {
            if let Some(plan) = layer {
                check_magic(plan.compression, &head).map_err(|e| refused(what, e))?;
            }
        }
        size += n as u64;
        if size > desc.size {
            return Err(refused(
                what,
                format!(
                    "the registry sent more than the {} bytes its descriptor says",
                    desc.size
                ),
            ));
        }
        sha.update(&buf[..n]);
        blob.file
            .write_all(&buf[..n])
            .map_err(|e| local(store, e))?;
        if let Some(d) = &mut diff {
            if let Err(e) = d.write_all(&buf[..n]) {
                // A broken pipe means the unpacker stopped: its own error says why.
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(Some((blob, Digest::from_sha256(sha), None)));
                }
                return Err(refused(
                    what,
                    format!("the {} stream is damaged: {e}", d.name()),
                ));
            }
        }
    }
    if size < desc.size {
        return Ok(None);
    }
    let diff = match diff {
        None => None,
        Some(d) => {
            let name = d.name();
            Some(
                d.finish_digest()
                    .map_err(|e| refused(what, format!("the {name} stream is damaged: {e}")))?,
            )
        }
    };
    Ok(Some((blob, Digest::from_sha256(sha), diff)))
}

/// The content's first bytes are what its media type says (as the store's integrity check
/// says it of a loaded layer).
fn check_magic(compression: Compression, head: &[u8]) -> Result<(), &'static str> {
    let gzip = head == [0x1f, 0x8b];
    match compression {
        Compression::None if gzip => Err("the media type says uncompressed, the content is gzip"),
        Compression::Gzip if !gzip => Err("the media type says gzip, the content is not gzip"),
        Compression::Zstd if head != [0x28, 0xb5] => {
            Err("the media type says zstd, the content is not zstd")
        }
        _ => Ok(()),
    }
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

/// Pulls `reference` into `store`, tagging it with the reference's name (unless it is pinned
/// by digest only). Holds off `kiln cache prune` until the image is tagged.
pub fn pull(
    store: &Store,
    reference: &str,
    opts: &PullOptions,
    events: &(dyn Fn(PullEvent) + Sync),
) -> Result<Pulled, RegistryError> {
    let target = Target::parse(reference)?;
    let _guard = store.build_guard()?;
    let mut last_err = None;
    let mut found = None;
    for registry in candidates(&target, &opts.registry) {
        let attempt = Client::connect(&registry, &opts.registry)
            .and_then(|c| fetch_manifest(&c, &target, target.reference()).map(|f| (c, f)));
        match attempt {
            Ok(x) => {
                found = Some(x);
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let (client, top) = match (found, last_err) {
        (Some(x), _) => x,
        (None, Some(e)) => return Err(e),
        (None, None) => {
            return Err(RegistryError::Network {
                registry: target.registry.clone(),
                reason: "no registry to try".into(),
            });
        }
    };
    events(PullEvent::Resolved {
        digest: top.digest.clone(),
    });
    let resolved = top.digest.clone();
    let manifest_doc = match top.media_type.as_str() {
        oci::MEDIA_INDEX | DOCKER_LIST => {
            let index: Index = serde_json::from_slice(&top.bytes)
                .map_err(|e| refused(format!("index {target}"), e.to_string()))?;
            let want = opts.platform.clone().unwrap_or_else(oci::host_platform);
            let desc = pick(&index, &want).ok_or_else(|| {
                let have: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref().map(platform_string))
                    .collect();
                refused(
                    format!("{target}"),
                    format!(
                        "no image for {} (the index has {})",
                        platform_string(&want),
                        if have.is_empty() {
                            "none".into()
                        } else {
                            have.join(", ")
                        }
                    ),
                )
            })?;
            let child = fetch_manifest(&client, &target, &desc.digest)?;
            if child.bytes.len() as u64 != desc.size {
                return Err(refused(
                    format!("manifest {}", desc.digest),
                    format!(
                        "it has {} bytes, the index says {}",
                        child.bytes.len(),
                        desc.size
                    ),
                ));
            }
            child
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
        manifest_doc.media_type.as_str(),
        oci::MEDIA_MANIFEST | DOCKER_MANIFEST
    ) {
        return Err(refused(
            format!("manifest {}", manifest_doc.digest),
            format!(
                "an index must list image manifests, not {:?}",
                manifest_doc.media_type
            ),
        ));
    }
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
        download(store, &client, &target, &manifest.config, None)?;
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
    let chains: Vec<Option<Digest>> = (0..diff_ids.len())
        .map(|i| crate::oci::chain_id(&diff_ids[..=i]))
        .collect();
    // Layers: those missing, `jobs` at a time.
    let mut todo = Vec::new();
    let mut present = 0;
    for (i, l) in manifest.layers.iter().enumerate() {
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
    crate::parallel::for_each(&todo, jobs, |&i| {
        let desc = &manifest.layers[i];
        let plan = LayerPlan {
            compression: compressions[i],
            diff_id: &diff_ids[i],
            chain: chains[i].clone().filter(|c| !store.is_unpacked(c)),
        };
        let d = download(store, &client, &target, desc, Some(plan)).map_err(|e| match e {
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
    store
        .check_image_memo(&manifest, &mut good)
        .map_err(|e| refused(&image_what, e))?;
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
    // docker tags what was pulled by tag; a reference pinned by digest sets no tag.
    let tag = match target.digest {
        None => Some(store.set_tag(reference, &stored)?),
        Some(_) => None,
    };
    Ok(Pulled {
        target,
        manifest: stored,
        resolved,
        tag,
        downloaded: todo.len(),
        present,
    })
}
