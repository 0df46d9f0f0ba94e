//! One blob from a registry into the store, checked as it streams in: the
//! compressed bytes go to a blob file in `tmp/` and through one decompressor, whose output is
//! hashed (the diff_id) and, for a layer not unpacked yet, piped to a thread that unpacks it into
//! its ChainID directory and takes its index. Nothing becomes visible before every check passed:
//! digest, size, compression magic, diff_id, and a tar the unpacker could read.

use std::io::{Read, Write};

use sha2::{Digest as _, Sha256};
use ureq::http::Method;

use super::{
    RegistryError, Target,
    client::{Client, Payload},
    refused,
};
use crate::{
    digest::Digest,
    layer::view::RawEntry,
    oci::Descriptor,
    store::{
        Store,
        integrity::{Compression, check_magic},
    },
};

/// What is known of a layer before it arrives, to check and unpack it on the way in.
pub(super) struct LayerPlan<'a> {
    pub compression: Compression,
    pub diff_id: &'a Digest,
    /// Its ChainID, when it is not unpacked yet: it is unpacked while it streams in.
    pub chain: Option<Digest>,
    /// How it is trusted before its last byte arrives.
    pub trust: Trust,
}

/// When a layer's bytes may be decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trust {
    /// Its digest was pinned by the user (`NAME@sha256:...`): nothing is decompressed before
    /// the whole blob is in and has that digest, so no byte a registry made up is expanded.
    VerifyFirst,
    /// Pulled by tag (the registry chose the digest): decompressed as it streams in, but
    /// never to more than this many bytes (a compression bomb must not fill the disk).
    Bounded(Option<u64>),
}

/// Where a layer's uncompressed bytes go: its diff_id hash, and (when it is being unpacked)
/// the pipe to the unpacking thread.
struct Tee {
    sha: Sha256,
    pipe: Option<std::io::PipeWriter>,
    written: u64,
    limit: Option<u64>,
}

/// The error a [`Tee`] stops with when a layer expands past its bound.
#[derive(Debug)]
struct Expanded(u64);

impl std::fmt::Display for Expanded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "it expands to more than {} bytes", self.0)
    }
}

impl std::error::Error for Expanded {}

/// The bound an `io::Error` carries when it is a [`Tee`]'s [`Expanded`].
fn expanded(e: &std::io::Error) -> Option<u64> {
    e.get_ref()?.downcast_ref::<Expanded>().map(|x| x.0)
}

impl Tee {
    fn new(pipe: Option<std::io::PipeWriter>, limit: Option<u64>) -> Tee {
        Tee {
            sha: Sha256::new(),
            pipe,
            written: 0,
            limit,
        }
    }
}

impl Write for Tee {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.written += b.len() as u64;
        if let Some(limit) = self.limit.filter(|l| self.written > *l) {
            return Err(std::io::Error::other(Expanded(limit)));
        }
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

/// What one pass over a blob's bytes found: their digest, a layer's diff_id and the index its
/// unpacker took.
type Passed = (Digest, Option<Digest>, Option<Vec<RawEntry>>);

/// Downloads one blob into the store, checking its size and digest. A layer is checked
/// against its diff_id and unpacked (its index taken on the way): in the same pass as the
/// download when pulled by tag (the compressed bytes go to the blob file and through one
/// decompressor, whose output is hashed and piped to an unpacking thread, bounded by
/// [`Trust::Bounded`]), or from the blob file once its digest is checked when the user pinned
/// it ([`Trust::VerifyFirst`]). The blob and the unpacked directory become visible only once
/// every check passed. A transfer that breaks off is tried again from the start.
pub(super) fn download(
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
    let verify_first = layer
        .as_ref()
        .is_some_and(|l| l.trust == Trust::VerifyFirst);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let resp = client.call_expecting(
            Method::GET,
            &url,
            &[target.scope(false)],
            &[],
            Payload::None,
            desc.size,
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
        let unpack_dir = unpack_to.as_ref().map(|u| u.0.as_path());
        let mut blob = store.new_blob_file()?;
        let result = if verify_first {
            // The bytes first, checked whole; only then decompressed, from the blob file.
            match transfer(store, body, desc, &what, None, None, Some(&mut blob)) {
                Ok(Some((got, _, _))) if got != digest => {
                    Err(refused(&what, format!("its content has digest {got}")))
                }
                Ok(Some(_)) => {
                    let file = blob.reopen().map_err(|e| local(store, e))?;
                    let read = std::io::BufReader::with_capacity(1 << 20, file);
                    transfer(store, read, desc, &what, layer.as_ref(), unpack_dir, None)
                        .and_then(|p| p.ok_or_else(|| refused(&what, "the blob file is short")))
                        .map(Some)
                }
                other => other,
            }
        } else {
            transfer(
                store,
                body,
                desc,
                &what,
                layer.as_ref(),
                unpack_dir,
                Some(&mut blob),
            )
        };
        let (got, diff, index) = match result {
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
            Err(RegistryError::Timeout { .. }) => {
                discard();
                return Err(client.timed_out(&url));
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
            let made = store.place_unpacked(dir, chain, None)?;
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

/// One pass over a blob's bytes: [`stream`], with an unpacking thread reading the layer's tar
/// from a pipe when `unpack_to` is given, and the bytes written to `blob` when given.
/// `Ok(None)`: the transfer broke off (try again).
fn transfer(
    store: &Store,
    body: impl Read + Send,
    desc: &Descriptor,
    what: &str,
    layer: Option<&LayerPlan<'_>>,
    unpack_to: Option<&std::path::Path>,
    blob: Option<&mut crate::store::BlobFile>,
) -> Result<Option<Passed>, RegistryError> {
    // The bound on what the layer expands to, unless its digest was checked first.
    let limit = match layer.map(|l| l.trust) {
        Some(Trust::Bounded(limit)) => limit,
        _ => None,
    };
    let Some(dir) = unpack_to else {
        let tee = Tee::new(None, limit);
        return Ok(stream(store, body, desc, what, layer, tee, blob)?.map(|(g, d)| (g, d, None)));
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
        // The pipe's writer is dropped when `stream` returns: the unpacker sees the end.
        let streamed = stream(
            store,
            body,
            desc,
            what,
            layer,
            Tee::new(Some(w), limit),
            blob,
        );
        let unpacked = unpacker.join();
        let Some((got, diff)) = streamed? else {
            return Ok(None);
        };
        match unpacked {
            Ok(Ok(index)) => Ok(Some((got, diff, Some(index)))),
            Ok(Err(e)) => Err(refused(what, format!("cannot unpack it: {e}"))),
            Err(_) => Err(refused(what, "the unpacking thread failed")),
        }
    })
}

/// Whether a read failed because the request ran past its deadline.
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) || e
        .get_ref()
        .and_then(|x| x.downcast_ref::<ureq::Error>())
        .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}

/// The failure of a decompressor's write or end: a layer past its bound, or damage.
fn damaged(what: &str, name: &str, desc: &Descriptor, e: &std::io::Error) -> RegistryError {
    match expanded(e) {
        Some(limit) => refused(
            what,
            format!(
                "it expands to more than {limit} bytes from {} (a compression bomb?); kiln \
                 bounds layers pulled by tag to max-layer-expansion times their size in the \
                 registry settings file: raise it for an image you trust, or pull it by digest",
                desc.size
            ),
        ),
        None => refused(what, format!("the {name} stream is damaged: {e}")),
    }
}

/// The bytes themselves: written to `blob` (when given) and hashed, a layer decompressed into
/// `tee`. `Ok(None)`: the transfer broke off.
fn stream(
    store: &Store,
    mut body: impl Read,
    desc: &Descriptor,
    what: &str,
    layer: Option<&LayerPlan<'_>>,
    tee: Tee,
    mut blob: Option<&mut crate::store::BlobFile>,
) -> Result<Option<(Digest, Option<Digest>)>, RegistryError> {
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
            Err(e) if is_timeout(&e) => {
                return Err(RegistryError::Timeout {
                    registry: String::new(),
                    url: String::new(),
                });
            }
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
        if let Some(b) = blob.as_deref_mut() {
            b.file.write_all(&buf[..n]).map_err(|e| local(store, e))?;
        }
        if let Some(d) = &mut diff {
            if let Err(e) = d.write_all(&buf[..n]) {
                // A broken pipe means the unpacker stopped: its own error says why.
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(Some((Digest::from_sha256(sha), None)));
                }
                return Err(damaged(what, d.name(), desc, &e));
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
                    .map_err(|e| damaged(what, name, desc, &e))?,
            )
        }
    };
    Ok(Some((Digest::from_sha256(sha), diff)))
}
