//! A stage's state while it is built: its layers, its merged filesystem view (read lazily),
//! its image config, its ARGs and the variables its steps see, and its cache key.

use std::collections::BTreeMap;

use kiln_runtime::{
    digest::Digest,
    layer::view::View,
    oci::{self, Descriptor, ImageConfig, RootFs},
    store::Store,
};

use super::BuildError;
use crate::cache::key::CacheKey;

/// A layer of a stage: its manifest descriptor and diff_id.
#[derive(Debug, Clone)]
pub(crate) struct LayerRef {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
}

/// Everything a stage has built so far.
#[derive(Debug, Clone)]
pub(crate) struct StageState {
    pub layers: Vec<LayerRef>,
    /// The merged filesystem view of `layers`, less those in `view_pending`: a layer is read
    /// into it only when a later step looks ([`StageState::sync_view`]), so a cached
    /// 30,000-file COPY followed by RUNs is never read back.
    pub(super) view: View,
    /// Layers (index, blob) not yet in `view`, in order.
    pub(super) view_pending: Vec<(usize, Digest)>,
    pub config: ImageConfig,
    /// ARGs in scope with their values (`None`: declared, no value).
    pub args: BTreeMap<String, Option<String>>,
    /// The cache key of the filesystem so far.
    pub key: CacheKey,
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    pub cmd_set: bool,
    /// When the filesystem last changed (seconds): the time of the last layer step, reused from
    /// the cache on a hit, so a fully cached rebuild gives the same image.
    pub time: Option<i64>,
    /// The base image's `created`, for a stage that has not changed its filesystem yet.
    pub base_created: Option<String>,
    /// The Dockerfile line of the step being built (for cache entry descriptions).
    pub line: usize,
    /// Where each ENV name is in `config.config.env`: lookups and `ENV` updates take log n,
    /// not n, so a Dockerfile of n instructions builds in n log n ([`StageState::reindex_env`]
    /// after the config is replaced).
    pub(super) env_index: BTreeMap<String, usize>,
    /// The variables steps see (BuildKit's LLB state env): every ENV and every ARG with a
    /// value, the later of the two winning, as in BuildKit where `ARG V` after `ENV V=x`
    /// overrides it for expansion and RUN while the config keeps `V=x`. A stage built on
    /// another starts with that one's.
    pub(super) state_env: BTreeMap<String, String>,
    /// Every ARG this stage (and the stage it is built on) declared, in order, repeats
    /// included: BuildKit's `buildArgs`, which prefix a RUN's history (`|2 A=1 B= ...`).
    pub arg_order: Vec<String>,
    /// Metadata history entries whose time is still to be looked up (index in the history, the
    /// step's key): [`Ctx::resolve_times`] asks the store for all of them at once.
    pub(super) pending_times: Vec<(usize, String)>,
}

impl StageState {
    /// An empty stage for `platform`, as BuildKit's `emptyImage`: the working directory `/`
    /// and the default PATH in its config.
    pub(super) fn scratch(platform: &oci::Platform) -> StageState {
        let mut st = StageState::nothing(platform);
        st.config.config.working_dir = "/".into();
        st.set_env("PATH", kiln_runtime::sandbox::process::DEFAULT_PATH);
        st
    }

    /// A stage for `platform` with an empty config (filled from a base image by the caller).
    pub(super) fn nothing(platform: &oci::Platform) -> StageState {
        let p = platform.clone();
        StageState {
            layers: Vec::new(),
            view: View::default(),
            view_pending: Vec::new(),
            config: ImageConfig {
                architecture: p.architecture,
                os: p.os,
                variant: p.variant,
                rootfs: RootFs {
                    kind: "layers".into(),
                    diff_ids: Vec::new(),
                },
                ..Default::default()
            },
            args: BTreeMap::new(),
            key: CacheKey::for_base("scratch"),
            cmd_set: false,
            time: None,
            base_created: None,
            line: 0,
            env_index: BTreeMap::new(),
            state_env: BTreeMap::new(),
            arg_order: Vec::new(),
            pending_times: Vec::new(),
        }
    }

    /// The platform the stage's image is for, as its config says (normalized).
    pub(super) fn platform(&self) -> oci::Platform {
        self.config.platform().normalized()
    }

    /// Applies the layers added since the view was last brought up to date, from the store's
    /// index of each (its tar is not read).
    pub fn sync_view(&mut self, store: &Store) -> Result<(), BuildError> {
        for (index, blob) in std::mem::take(&mut self.view_pending) {
            self.view.apply_entries(index, &store.layer_entries(&blob)?);
        }
        Ok(())
    }

    /// The filesystem view; [`StageState::sync_view`] must have brought it up to date.
    pub fn view(&self) -> Result<&View, BuildError> {
        if self.view_pending.is_empty() {
            Ok(&self.view)
        } else {
            Err(BuildError::Other(
                "internal error: the filesystem view was read before its layers were applied"
                    .into(),
            ))
        }
    }

    /// Adds layer `index`, whose blob is `blob`, to the view when it is next brought up to date.
    pub fn view_later(&mut self, index: usize, blob: Digest) {
        self.view_pending.push((index, blob));
    }

    /// The variables steps see ([`StageState::state_env`]).
    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.state_env
    }

    pub fn workdir(&self) -> String {
        let w = &self.config.config.working_dir;
        if w.is_empty() {
            "/".to_string()
        } else {
            w.clone()
        }
    }

    /// Rebuilds the ENV index after `config` was replaced (a base image's config).
    pub(super) fn reindex_env(&mut self) {
        self.state_env = self
            .config
            .config
            .env
            .iter()
            .map(|e| {
                let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        self.env_index = self
            .config
            .config
            .env
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    e.split_once('=').map_or(e.as_str(), |(k, _)| k).to_string(),
                    i,
                )
            })
            .collect();
    }

    pub(super) fn set_env(&mut self, key: &str, value: &str) {
        self.state_env.insert(key.to_string(), value.to_string());
        let entry = format!("{key}={value}");
        let env = &mut self.config.config.env;
        match self.env_index.get(key) {
            Some(&i) => env[i] = entry,
            None => {
                self.env_index.insert(key.to_string(), env.len());
                env.push(entry);
            }
        }
    }

    pub fn add_layer(&mut self, layer: LayerRef, key: CacheKey) {
        self.config.rootfs.diff_ids.push(layer.diff_id.to_string());
        self.layers.push(layer);
        self.key = key;
    }
}
