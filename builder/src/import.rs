//! `kiln import`: an image from a root filesystem tarball, as `docker import` makes one (the
//! usual way to turn a `debootstrap` tree or a VM's disk into a base image). The tarball may be
//! plain or compressed (gzip, bzip2, xz, zstd: found by its first bytes); its tar becomes the
//! image's one layer as it is, after the layer reader has read every entry of it. The config
//! is this machine's platform (or `--platform`'s) with `--change` instructions applied (as `kiln commit`'s), and
//! one history entry: the message, or `Imported from SOURCE`, as docker writes it.

use std::io::Read;

use kiln_runtime::{
    digest::Digest,
    oci::{self, History, ImageConfig},
    store::Store,
};

/// What to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Where the tarball came from, for the history (`-`, a path, a URL).
    pub source: String,
    /// `REPO[:TAG]` to tag the image with.
    pub tag: Option<String>,
    /// `-m`: the history entry's comment.
    pub message: Option<String>,
    /// `-c`: Dockerfile instructions applied to the config.
    pub changes: Vec<String>,
    /// `--platform`: the platform the config says (default: this machine's).
    pub platform: Option<oci::Platform>,
}

/// Why an import failed, naming the source or the change.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Store(#[from] kiln_runtime::store::StoreError),
    #[error("{source_name}: {why}")]
    Source { source_name: String, why: String },
    #[error("--change {change:?}: {why}")]
    Change { change: String, why: String },
}

/// The compressed stream `r` starts with, decompressed (a plain tar as it is).
fn decompressed<'a>(mut r: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
    let mut head = [0u8; 6];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let whole = std::io::Cursor::new(head[..n].to_vec()).chain(r);
    Ok(match &head[..n] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        [b'B', b'Z', b'h', ..] => Box::new(bzip2::read::BzDecoder::new(whole)),
        [0xfd, b'7', b'z', b'X', b'Z', 0] => {
            // lzma-rs decodes whole streams only: into memory, bounded by what was sent.
            let mut input = std::io::BufReader::new(whole);
            let mut out = Vec::new();
            lzma_rs::xz_decompress(&mut input, &mut out)
                .map_err(|e| std::io::Error::other(format!("xz: {e}")))?;
            Box::new(std::io::Cursor::new(out))
        }
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(zstd::stream::read::Decoder::new(whole)?),
        _ => Box::new(whole),
    })
}

/// The body of an http(s) URL (`kiln import URL`): a non-success status is an error.
pub fn fetch(url: &str) -> Result<impl Read + use<>, ImportError> {
    let bad = |why: String| ImportError::Source {
        source_name: url.to_string(),
        why,
    };
    let resp = ureq::get(url).call().map_err(|e| bad(e.to_string()))?;
    Ok(resp.into_body().into_reader())
}

/// `kiln import`: the tarball `input` as a new image.
pub fn import(
    store: &Store,
    input: impl Read,
    opts: &ImportOptions,
) -> Result<crate::commit::Committed, ImportError> {
    let bad = |why: String| ImportError::Source {
        source_name: opts.source.clone(),
        why,
    };
    let platform = opts.platform.clone().unwrap_or_else(oci::host_platform);
    let mut config = ImageConfig {
        architecture: platform.architecture,
        os: platform.os,
        variant: platform.variant,
        rootfs: oci::RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        },
        ..Default::default()
    };
    for change in &opts.changes {
        crate::commit::apply(&mut config, change).map_err(|why| ImportError::Change {
            change: change.clone(),
            why,
        })?;
    }
    // The layer: the tar as it comes, hashed while written, kept only once every entry of it
    // reads (a file that is not a tar is refused, not stored).
    let mut tar = decompressed(input).map_err(|e| bad(e.to_string()))?;
    let mut blob = store.new_blob_file()?;
    let mut sha = <sha2::Sha256 as sha2::Digest>::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = tar.read(&mut buf).map_err(|e| bad(e.to_string()))?;
        if n == 0 {
            break;
        }
        sha2::Digest::update(&mut sha, &buf[..n]);
        std::io::Write::write_all(&mut blob.file, &buf[..n])
            .map_err(|e| bad(format!("writing the layer: {e}")))?;
        size += n as u64;
    }
    let diff_id = Digest::from_sha256(sha);
    let entries = blob
        .reopen()
        .and_then(|f| kiln_runtime::layer::view::read_entries(std::io::BufReader::new(f)))
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    if entries.is_empty() {
        return Err(bad("not a tar archive: no entries".into()));
    }
    store.commit_blob(blob, &diff_id)?;
    store.record_layer_entries(&diff_id, &entries)?;
    let now = crate::commit::now_rfc3339();
    config.rootfs.diff_ids.push(diff_id.to_string());
    config.history.push(History {
        created: Some(now.clone()),
        created_by: None,
        comment: Some(
            opts.message
                .clone()
                .unwrap_or_else(|| format!("Imported from {}", opts.source)),
        ),
        empty_layer: false,
    });
    config.created = Some(now);
    let layers = vec![crate::commit::tar_layer(&diff_id, size)];
    Ok(crate::commit::store_image(
        store,
        &config,
        layers,
        opts.tag.as_deref(),
    )?)
}
