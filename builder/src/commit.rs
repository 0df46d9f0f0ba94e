//! `kiln commit`: a new image from a container's changes, as `docker commit`: the image the
//! container runs, plus one layer written from its overlayfs upper directory (the same writer
//! as a RUN step's, so the same changes give the same layer), plus `--change` instructions
//! (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL, ONBUILD) applied to
//! the config, and one history entry with the message and author.

use std::collections::BTreeMap;

use kiln_parser::instruction::{self, Command, Kind};
use kiln_runtime::{
    container::changes,
    digest::Digest,
    layer::diff::Change,
    oci::{self, Descriptor, History, Manifest},
    store::Store,
};

/// What to commit.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    pub container: String,
    /// `REPO[:TAG]` to tag the image with.
    pub tag: Option<String>,
    /// `-m`: the history entry's comment.
    pub message: Option<String>,
    /// `-a`: the config's author.
    pub author: Option<String>,
    /// `-c`: Dockerfile instructions applied to the config.
    pub changes: Vec<String>,
}

/// The new image: its manifest digest and config digest (the image id).
#[derive(Debug, Clone)]
pub struct Committed {
    pub manifest: Digest,
    pub config: Digest,
}

/// Why a commit failed, naming the container or the change.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Container(#[from] kiln_runtime::container::ContainerError),
    #[error(transparent)]
    Store(#[from] kiln_runtime::store::StoreError),
    #[error("--change {change:?}: {why}")]
    Change { change: String, why: String },
    #[error("writing the layer of {container}: {why}")]
    Layer { container: String, why: String },
}

/// `kiln commit`.
pub fn commit(store: &Store, opts: &CommitOptions) -> Result<Committed, CommitError> {
    let c = store.find_container(&opts.container)?.ok_or_else(|| {
        kiln_runtime::container::ContainerError::Config(format!(
            "no such container: {}",
            opts.container
        ))
    })?;
    let manifest = store
        .resolve(&c.image)?
        .ok_or_else(|| kiln_runtime::container::ContainerError::NoImage(c.image.clone()))?;
    let (base, mut config, _) = store.image(&manifest)?;
    let (upper, lower) = changes::layers_of(store, &c.id, &c.image)?;
    for change in &opts.changes {
        apply(&mut config, change).map_err(|why| CommitError::Change {
            change: change.clone(),
            why,
        })?;
    }
    // The layer: everything the container changed but kiln's mount stubs.
    let layer_err = |why: String| CommitError::Layer {
        container: c.name.clone(),
        why,
    };
    let blob = store.new_blob_file()?;
    let file = blob
        .file
        .try_clone()
        .map_err(|e| layer_err(e.to_string()))?;
    let mut w = crate::image::layer::LayerWriter::new(std::io::BufWriter::new(file), None);
    kiln_runtime::layer::diff::walk_upper(&upper, &mut |change| {
        let rel = match &change {
            Change::File(p, ..) => p.as_slice(),
            _ => b"",
        };
        if changes::is_stub(&upper, &lower, rel) {
            return Ok(());
        }
        match change {
            Change::Dir(p, m) => w.dir(&p, &m),
            Change::File(p, m, size, f) => w.file(&p, &m, size, f),
            Change::Symlink(p, t, m) => w.symlink(&p, &t, &m),
            Change::Hardlink(p, t, m) => w.hardlink(&p, &t, &m),
            Change::Special(p, k, m) => w.special(&p, k, &m),
            Change::Whiteout(p) => w.whiteout(&p),
            Change::Opaque(p) => w.opaque(&p),
        }
    })
    .map_err(|e| layer_err(e.to_string()))?;
    let (info, mut out) = w.finish().map_err(|e| layer_err(e.to_string()))?;
    std::io::Write::flush(&mut out).map_err(|e| layer_err(e.to_string()))?;
    drop(out);
    store.commit_blob(blob, &info.diff_id)?;
    store.record_layer_entries(&info.diff_id, &info.entries)?;
    let now = now_rfc3339();
    config.rootfs.diff_ids.push(info.diff_id.to_string());
    config.history.push(History {
        created: Some(now.clone()),
        created_by: Some(format!("kiln commit {}", c.name)),
        comment: opts.message.clone(),
        empty_layer: false,
    });
    config.created = Some(now);
    if let Some(a) = &opts.author {
        config.author = Some(a.clone());
    }
    let mut layers = base.layers.clone();
    layers.push(tar_layer(&info.diff_id, info.size));
    Ok(store_image(store, &config, layers, opts.tag.as_deref())?)
}

/// The descriptor of an uncompressed layer kiln wrote.
pub(crate) fn tar_layer(diff_id: &Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: oci::MEDIA_LAYER_TAR.into(),
        digest: diff_id.to_string(),
        size,
        annotations: BTreeMap::new(),
        platform: None,
    }
}

/// Now, as an image config's `created` says it.
pub(crate) fn now_rfc3339() -> String {
    kiln_runtime::timefmt::rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    )
}

/// Writes `config` and the manifest of it over `layers`, records the image (its ID names it)
/// and tags it `tag`.
pub(crate) fn store_image(
    store: &Store,
    config: &oci::ImageConfig,
    layers: Vec<Descriptor>,
    tag: Option<&str>,
) -> Result<Committed, kiln_runtime::store::StoreError> {
    let config_doc = oci::write_json(config, oci::MEDIA_CONFIG);
    let config_digest = store.put_blob(&config_doc.bytes)?;
    let m = Manifest {
        schema_version: 2,
        media_type: oci::MEDIA_MANIFEST.into(),
        config: config_doc.descriptor,
        layers,
        annotations: BTreeMap::new(),
    };
    let m = oci::write_json(&m, oci::MEDIA_MANIFEST);
    let manifest_digest = store.put_blob(&m.bytes)?;
    store.note_image(&manifest_digest)?;
    if let Some(t) = tag {
        store.set_tag(t, &manifest_digest)?;
    }
    Ok(Committed {
        manifest: manifest_digest,
        config: config_digest,
    })
}

/// One `--change` instruction applied to `config`.
pub(crate) fn apply(config: &mut oci::ImageConfig, change: &str) -> Result<(), String> {
    let df = kiln_parser::parse(&format!("{change}\n")).map_err(|e| e.message)?;
    let parsed = instruction::from_ast(&df).map_err(|e| e.message)?;
    let [ins] = parsed.as_slice() else {
        return Err("expected one instruction".into());
    };
    let c = &mut config.config;
    let wrap = |cmd: &Command, shell: &[String]| match cmd {
        Command::Exec(v) => v.clone(),
        Command::Shell(s) => {
            let mut v = if shell.is_empty() {
                vec!["/bin/sh".to_string(), "-c".to_string()]
            } else {
                shell.to_vec()
            };
            v.push(s.clone());
            v
        }
    };
    match &ins.kind {
        Kind::Cmd(cmd) => c.cmd = Some(wrap(cmd, &c.shell)),
        Kind::Entrypoint(cmd) => c.entrypoint = Some(wrap(cmd, &c.shell)),
        Kind::Env(pairs) => {
            for (k, v) in pairs {
                let entry = format!("{k}={v}");
                match c.env.iter().position(|e| e.split('=').next() == Some(k)) {
                    Some(i) => c.env[i] = entry,
                    None => c.env.push(entry),
                }
            }
        }
        Kind::Label(pairs) => {
            for (k, v) in pairs {
                c.labels.insert(k.clone(), v.clone());
            }
        }
        Kind::Expose(ports) => {
            for p in ports {
                let key = if p.contains('/') {
                    p.to_ascii_lowercase()
                } else {
                    format!("{p}/tcp")
                };
                c.exposed_ports.insert(key, oci::Empty {});
            }
        }
        Kind::Volume(v) => {
            for p in v {
                c.volumes.insert(p.clone(), oci::Empty {});
            }
        }
        Kind::User(u) => c.user = u.clone(),
        Kind::Workdir(w) => c.working_dir = w.clone(),
        Kind::StopSignal(s) => c.stop_signal = s.clone(),
        Kind::OnBuild { expression, .. } => c.on_build.push(expression.clone()),
        _ => {
            return Err(
                "docker commit takes CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, \
                 WORKDIR and STOPSIGNAL"
                    .into(),
            );
        }
    }
    Ok(())
}
