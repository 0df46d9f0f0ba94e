//! `kiln push` and `kiln build --push`: an image of the store to a registry.
//!
//! Layers kiln keeps uncompressed are compressed once, gzip or zstd (several at a time; the
//! compressed form is remembered, so a second push or `kiln save` does not compress again), then every blob the
//! registry lacks is sent, several at once: `HEAD` first (present: nothing to send), then a
//! cross-repository mount when kiln knows another repository of the same registry has the
//! blob, else one upload session with a single streamed `PUT` of the file. The manifest goes
//! last, byte for byte as stored, so its digest is the one `kiln images` shows (or, for an
//! image with uncompressed layers, the digest `kiln save` gives it).

use std::sync::atomic::{AtomicUsize, Ordering};

use ureq::http::Method;

use super::{
    Options, RegistryError, Target,
    client::{Client, Payload, header},
};
use crate::{digest::Digest, oci, store::Store};

/// How to push.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub registry: Options,
    /// Blobs sent at once (0: docker's default of 5).
    pub jobs: usize,
    /// How layers kiln keeps uncompressed are compressed (`--compression`; gzip by default).
    pub compression: crate::store::LayerCompression,
}

/// What happened to each blob.
#[derive(Debug, Clone)]
pub enum PushEvent {
    Exists { digest: Digest },
    Mounted { digest: Digest, from: String },
    Uploaded { digest: Digest, size: u64 },
}

/// A finished push.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub target: Target,
    /// The manifest's digest on the registry.
    pub digest: Digest,
    /// The manifest's size in bytes.
    pub size: u64,
    pub uploaded: usize,
    pub mounted: usize,
    pub existed: usize,
}

/// `url` with `key=value` added to its query.
fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={}", super::auth::query_escape(value))
}

enum Sent {
    Exists,
    Mounted(String),
    Uploaded,
}

/// Sends one blob unless the registry has it.
fn send_blob(
    store: &Store,
    client: &Client,
    target: &Target,
    digest: &Digest,
) -> Result<Sent, RegistryError> {
    let scope = target.scope(true);
    let what = format!("blob {digest}");
    let blob_url = client.url(&target.repo, &format!("blobs/{digest}"));
    let head = client.call(
        Method::HEAD,
        &blob_url,
        std::slice::from_ref(&scope),
        &[],
        Payload::None,
    )?;
    match head.status().as_u16() {
        200 => return Ok(Sent::Exists),
        404 => {}
        _ => return Err(client.failure(head, &blob_url, &what)),
    }
    let uploads = client.url(&target.repo, "blobs/uploads/");
    let mut location = None;
    for from in store
        .blob_sources(digest, &client.registry)?
        .into_iter()
        .filter(|r| r != &target.repo)
        .take(1)
    {
        let url = with_query(
            &with_query(&uploads, "mount", &digest.to_string()),
            "from",
            &from,
        );
        let scopes = [scope.clone(), format!("repository:{from}:pull")];
        let resp = client.call(
            Method::POST,
            &url,
            &scopes,
            &[("content-length", "0")],
            Payload::None,
        )?;
        match resp.status().as_u16() {
            201 => return Ok(Sent::Mounted(from)),
            // Not mounted (the registry cannot, or kiln may not read `from`): an upload
            // session was opened instead.
            202 => location = header(&resp, "location"),
            _ => {}
        }
    }
    // A layer only another registry had (a remote cache hit's) is fetched to be sent.
    if !store.has_blob(digest) && store.ensure_blob(digest).is_err() {
        return Err(RegistryError::Refused {
            what,
            reason: format!(
                "neither kiln's store nor {} has it: pull the image it belongs to first",
                target.repo
            ),
        });
    }
    let location = match location {
        Some(l) => l,
        None => {
            let resp = client.call(
                Method::POST,
                &uploads,
                std::slice::from_ref(&scope),
                &[("content-length", "0")],
                Payload::None,
            )?;
            if resp.status().as_u16() != 202 {
                return Err(client.failure(resp, &uploads, &what));
            }
            header(&resp, "location").ok_or_else(|| RegistryError::Status {
                url: uploads.clone(),
                status: 202,
                message: "the upload session has no Location".into(),
            })?
        }
    };
    let put = with_query(&client.absolute(&location), "digest", &digest.to_string());
    let path = store.blob_path(digest);
    let resp = client.call(
        Method::PUT,
        &put,
        &[scope],
        &[("content-type", "application/octet-stream")],
        Payload::File(&path),
    )?;
    if resp.status().as_u16() != 201 {
        return Err(client.failure(resp, &put, &what));
    }
    Ok(Sent::Uploaded)
}

/// Pushes the store's image `source` (a tag or manifest digest) as `dest`: an image, or an
/// index with each of its images (pushed by digest) before it.
pub fn push(
    store: &Store,
    source: &str,
    dest: &str,
    opts: &PushOptions,
    events: &(dyn Fn(PushEvent) + Sync),
) -> Result<Pushed, RegistryError> {
    let target = Target::parse(dest)?;
    if target.digest.is_some() {
        return Err(RegistryError::Refused {
            what: dest.to_string(),
            reason: "cannot push to a digest; name a tag".into(),
        });
    }
    let _guard = store.build_guard()?;
    let local = store
        .resolve(source)?
        .ok_or_else(|| RegistryError::NotFound {
            what: source.to_string(),
            message: "no such image in kiln's store".into(),
        })?;
    let client = Client::connect(&target.registry, &opts.registry)?;
    let counts = [
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ];
    let tag = target.tag.clone().unwrap_or_else(|| "latest".into());
    let (bytes, digest) = if store.read_index(&local)?.is_some() {
        let (bytes, digest, children) = store.distributable_index(&local, opts.compression)?;
        for (stored, leaving) in &children {
            match leaving {
                Some((m, d)) => {
                    send_blobs(store, &client, &target, m, opts, events, &counts)?;
                    put_manifest(&client, &target, &d.to_string(), m, d)?;
                    store.record_repo_digest(dest, d, stored)?;
                }
                // Not in the store: the registry must have it already (an index joined from
                // images pushed by other runners).
                None => require_manifest(&client, &target, stored)?,
            }
        }
        (bytes, digest)
    } else {
        let (_, bytes, digest) = store.distributable(&local, opts.compression)?;
        send_blobs(store, &client, &target, &bytes, opts, events, &counts)?;
        (bytes, digest)
    };
    put_manifest(&client, &target, &tag, &bytes, &digest)?;
    store.record_repo_digest(dest, &digest, &local)?;
    let [existed, mounted, uploaded] = counts.map(AtomicUsize::into_inner);
    Ok(Pushed {
        target,
        digest,
        size: bytes.len() as u64,
        uploaded,
        mounted,
        existed,
    })
}

/// Sends every blob of the image manifest `bytes` names (its layers and config) that the
/// registry lacks, `opts.jobs` at once; `counts`: existed, mounted, uploaded.
fn send_blobs(
    store: &Store,
    client: &Client,
    target: &Target,
    bytes: &[u8],
    opts: &PushOptions,
    events: &(dyn Fn(PushEvent) + Sync),
    counts: &[AtomicUsize; 3],
) -> Result<(), RegistryError> {
    let m: oci::Manifest = serde_json::from_slice(bytes).map_err(|e| RegistryError::Refused {
        what: format!("manifest {}", Digest::of(bytes)),
        reason: e.to_string(),
    })?;
    let mut blobs: Vec<Digest> = Vec::new();
    for d in m.layers.iter().map(|l| &l.digest).chain([&m.config.digest]) {
        let d = Digest::parse(d).map_err(|e| RegistryError::Refused {
            what: format!("manifest {}", Digest::of(bytes)),
            reason: e.to_string(),
        })?;
        if !blobs.contains(&d) {
            blobs.push(d);
        }
    }
    let jobs = if opts.jobs == 0 { 5 } else { opts.jobs };
    crate::parallel::for_each(&blobs, jobs, |d| {
        let sent = send_blob(store, client, target, d)?;
        let (i, ev) = match sent {
            Sent::Exists => (0, PushEvent::Exists { digest: *d }),
            Sent::Mounted(from) => (1, PushEvent::Mounted { digest: *d, from }),
            Sent::Uploaded => {
                let size = std::fs::metadata(store.blob_path(d))
                    .map(|m| m.len())
                    .unwrap_or(0);
                (2, PushEvent::Uploaded { digest: *d, size })
            }
        };
        counts[i].fetch_add(1, Ordering::Relaxed);
        events(ev);
        store.record_blob_source(d, &client.registry, &target.repo)?;
        Ok::<(), RegistryError>(())
    })
}

/// `PUT`s a manifest or index under `reference` (a tag, or its own digest), checking the
/// digest the registry says it stored.
fn put_manifest(
    client: &Client,
    target: &Target,
    reference: &str,
    bytes: &[u8],
    digest: &Digest,
) -> Result<(), RegistryError> {
    let url = client.url(&target.repo, &format!("manifests/{reference}"));
    let media_type = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["mediaType"].as_str().map(str::to_string))
        .unwrap_or_else(|| oci::MEDIA_MANIFEST.to_string());
    // distribution's filesystem storage writes a repository's link to a blob in place: a
    // manifest checked while another client's upload of the same blob rewrites that link reads
    // a partial digest and is refused as DIGEST_INVALID (seen with two CI runners exporting one
    // cache at once). The link is whole again within milliseconds, so that refusal is retried
    // a few times; any other answer is final.
    let mut attempt = 0u64;
    let resp = loop {
        let resp = client.call(
            Method::PUT,
            &url,
            &[target.scope(true)],
            &[("content-type", &media_type)],
            Payload::Bytes(bytes),
        )?;
        if resp.status().as_u16() == 201 {
            break resp;
        }
        let err = client.failure(resp, &url, &format!("manifest {target}"));
        let raced = matches!(&err, RegistryError::Status { status: 400, message, .. }
            if message.starts_with("digest invalid"));
        attempt += 1;
        if !raced || attempt > 3 {
            return Err(err);
        }
        std::thread::sleep(std::time::Duration::from_millis(50 * attempt));
    };
    if let Some(d) = header(&resp, "docker-content-digest") {
        if d != digest.to_string() {
            return Err(RegistryError::Refused {
                what: format!("manifest {target}"),
                reason: format!("the registry stored it as {d}, kiln sent {digest}"),
            });
        }
    }
    Ok(())
}

/// Checks that the registry has manifest `digest` in `target`'s repository (an index's entry
/// kiln's store lacks).
fn require_manifest(
    client: &Client,
    target: &Target,
    digest: &Digest,
) -> Result<(), RegistryError> {
    let url = client.url(&target.repo, &format!("manifests/{digest}"));
    let accept = [
        oci::MEDIA_MANIFEST,
        oci::MEDIA_INDEX,
        "application/vnd.docker.distribution.manifest.v2+json",
        crate::store::MEDIA_DOCKER_LIST,
    ]
    .join(", ");
    let resp = client.call(
        Method::HEAD,
        &url,
        &[target.scope(true)],
        &[("accept", &accept)],
        Payload::None,
    )?;
    match resp.status().as_u16() {
        200 => Ok(()),
        404 => Err(RegistryError::Refused {
            what: format!("manifest {digest}"),
            reason: format!(
                "the index names it, but neither kiln's store nor {} has it: pull or push that \
                 image first",
                target.repo
            ),
        }),
        _ => Err(client.failure(resp, &url, &format!("manifest {digest}"))),
    }
}
