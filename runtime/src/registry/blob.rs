//! One blob from a registry into the store, checked as it streams in (REFERENCE §6.7): the
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
