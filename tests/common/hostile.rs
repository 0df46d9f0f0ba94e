//! A generator of hostile images: OCI layouts that lie about their content, for the tests that
//! check kiln refuses them (`kiln load` now; pulled images are checked by the same code).
//! Every layout is written from nothing but the bundled busybox base's diff_id, so each case is
//! exactly one lie:
//! - [`Hostile::PoisonedDiffId`]: a layer holding `/POISONED` whose config claims busybox's
//!   diff_id (it would share, and fill, busybox's unpacked directory);
//! - [`Hostile::LyingSize`]: a correct layer whose descriptor says it is 1 TB;
//! - [`Hostile::TruncatedGzip`]: a gzip layer cut short, with the diff_id of the whole;
//! - [`Hostile::MediaType`]: a layer with a media type kiln cannot use (given);
//! - [`Hostile::GzipCalledTar`]: gzip content under the uncompressed media type;
//! - [`Hostile::DiffIdCount`]: two layers, one diff_id;
//! - [`Hostile::LayerBomb`]: one layer listed N times.

use std::path::Path;

use sha2::Digest as _;

/// The diff_id of the bundled busybox layer.
pub const BUSYBOX_DIFF_ID: &str =
    "sha256:b3bf6c420abfc7c7ec8540f5ff5542f2cb19c664e8201f3222b1345e03978da9";

#[derive(Debug, Clone)]
pub enum Hostile {
    PoisonedDiffId,
    LyingSize,
    TruncatedGzip,
    MediaType(String),
    GzipCalledTar,
    DiffIdCount,
    LayerBomb(usize),
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// An uncompressed layer with one file.
pub fn tar_layer(path: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, path, content).unwrap();
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, data).unwrap();
    e.finish().unwrap()
}

/// Writes blobs and returns their digests.
struct Layout<'a> {
    dir: &'a Path,
}

impl Layout<'_> {
    fn blob(&self, data: &[u8]) -> String {
        let d = sha(data);
        let p = self.dir.join("blobs/sha256");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join(d.trim_start_matches("sha256:")), data).unwrap();
        d
    }
}

/// Writes the layout for `kind` into `dir`, tagged `hostile/<name>:latest`; returns the tag.
pub fn write_layout(dir: &Path, kind: &Hostile) -> String {
    let l = Layout { dir };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let gz_type = "application/vnd.oci.image.layer.v1.tar+gzip";
    let tar_type = "application/vnd.oci.image.layer.v1.tar";
    let plain = tar_layer("hostile.txt", b"hostile\n");
    // (media type, blob digest, size in the descriptor) per layer, and the config's diff_ids.
    type Layers = Vec<(String, String, u64)>;
    let (name, layers, diff_ids): (&str, Layers, Vec<String>) = match kind {
        Hostile::PoisonedDiffId => {
            let bytes = gzip(&tar_layer("POISONED", b"poisoned\n"));
            let d = l.blob(&bytes);
            (
                "poisoned",
                vec![(gz_type.into(), d, bytes.len() as u64)],
                vec![BUSYBOX_DIFF_ID.into()],
            )
        }
        Hostile::LyingSize => {
            let bytes = gzip(&plain);
            let d = l.blob(&bytes);
            (
                "lying-size",
                vec![(gz_type.into(), d, 1 << 40)],
                vec![sha(&plain)],
            )
        }
        Hostile::TruncatedGzip => {
            let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
            let whole = tar_layer("big.bin", &big);
            let mut bytes = gzip(&whole);
            bytes.truncate(bytes.len() / 2);
            let d = l.blob(&bytes);
            (
                "truncated",
                vec![(gz_type.into(), d, bytes.len() as u64)],
                vec![sha(&whole)],
            )
        }
        Hostile::MediaType(t) => {
            let bytes = gzip(&plain);
            let d = l.blob(&bytes);
            (
                "media-type",
                vec![(t.clone(), d, bytes.len() as u64)],
                vec![sha(&plain)],
            )
        }
        Hostile::GzipCalledTar => {
            let bytes = gzip(&plain);
            let d = l.blob(&bytes);
            (
                "gzip-called-tar",
                vec![(tar_type.into(), d.clone(), bytes.len() as u64)],
                vec![d],
            )
        }
        Hostile::DiffIdCount => {
            let d = l.blob(&plain);
            (
                "diff-id-count",
                vec![
                    (tar_type.into(), d.clone(), plain.len() as u64),
                    (tar_type.into(), d.clone(), plain.len() as u64),
                ],
                vec![d],
            )
        }
        Hostile::LayerBomb(n) => {
            let d = l.blob(&plain);
            (
                "layer-bomb",
                vec![(tar_type.into(), d.clone(), plain.len() as u64); *n],
                vec![d; *n],
            )
        }
    };
    finish_layout(&l, &format!("hostile/{name}:latest"), &layers, &diff_ids)
}

/// An image of one uncompressed layer, `layer` (a tar), as an OCI layout in `dir` tagged
/// `test/<name>:latest`; returns the tag.
pub fn write_image(dir: &Path, name: &str, layer: &[u8]) -> String {
    write_image_layers(dir, name, &[layer])
}

/// [`write_image`] with several uncompressed layers, bottom first.
pub fn write_image_layers(dir: &Path, name: &str, tars: &[&[u8]]) -> String {
    let l = Layout { dir };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for t in tars {
        let d = l.blob(t);
        layers.push((
            "application/vnd.oci.image.layer.v1.tar".to_string(),
            d.clone(),
            t.len() as u64,
        ));
        diff_ids.push(d);
    }
    finish_layout(&l, &format!("test/{name}:latest"), &layers, &diff_ids)
}

/// The config, manifest and index of a layout whose layer blobs are written.
fn finish_layout(
    l: &Layout<'_>,
    tag: &str,
    layers: &[(String, String, u64)],
    diff_ids: &[String],
) -> String {
    let dir = l.dir;
    let config = serde_json::json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string();
    let config_digest = l.blob(config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layers.iter().map(|(t, d, s)| serde_json::json!({
            "mediaType": t, "digest": d, "size": s,
        })).collect::<Vec<_>>(),
    })
    .to_string();
    let manifest_digest = l.blob(manifest.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    })
    .to_string();
    std::fs::write(dir.join("index.json"), index).unwrap();
    tag.to_string()
}
