//! One stage: its base (scratch, another stage, or an image resolved and pulled when
//! missing), then its instructions in order through [`super::dispatch::step`].

use std::{collections::BTreeMap, time::Instant};

use kiln_parser::{
    instruction::{self, Instruction},
    span::Span,
};
use kiln_runtime::{
    digest::Digest,
    oci::{ImageConfig, Platform, RootFs},
    store::StoreError,
};

use super::{
    BuildError, Ctx, Event, LayerRef, NamedContext, StageState, copy, dispatch::step,
    schedule::stage_label,
};
use crate::{cache::key::CacheKey, graph::Base};

/// The image manifest `reference` names for `platform`: from the store (a tag's image, or an
/// index's entry for the platform, or a base an earlier build pulled for it), pulled when it
/// is missing (or, with `--pull`, whenever it is named by tag), unless pulling is off.
pub(super) fn resolve_image(
    ctx: &Ctx<'_>,
    reference: &str,
    span: Span,
    platform: &Platform,
) -> Result<Digest, BuildError> {
    let named = ctx.store.resolve(reference)?;
    let local = match named {
        Some(d) => match ctx.store.platform_manifest(&d, Some(platform)) {
            Ok(m) => Some(m),
            Err(StoreError::NoPlatform { .. }) => ctx.store.base_for(reference, platform)?,
            Err(e) => return Err(e.into()),
        },
        None => ctx.store.base_for(reference, platform)?,
    };
    let pinned = kiln_runtime::reference::parse(reference).is_ok_and(|r| r.digest.is_some());
    let wanted = local.is_none() || (ctx.opts.pull_always && !pinned);
    let Some(opts) = ctx
        .opts
        .registry
        .as_ref()
        .filter(|_| wanted && !ctx.opts.dry_run)
    else {
        return local.ok_or_else(|| {
            let message = match named {
                Some(d) => {
                    let have: Vec<String> = ctx
                        .store
                        .platforms_of(&d)
                        .unwrap_or_default()
                        .iter()
                        .map(|(p, _)| p.to_string())
                        .collect();
                    format!(
                        "base image {reference:?} in kiln's store has no image for {platform} \
                         (it has {}) and pulling is off; pull it with `kiln pull --platform \
                         {platform} {reference}`",
                        have.join(", ")
                    )
                }
                None => format!(
                    "base image {reference:?} is not in kiln's store (pulling is off); load it \
                     with `kiln load -i <oci-layout-or-archive>`, pull it with `kiln pull`, or \
                     build it and tag it with `kiln build -t {reference}`"
                ),
            };
            BuildError::at(span, message)
        });
    };
    (ctx.on_event)(Event::Pulling {
        reference: reference.to_string(),
    });
    // The tag keeps naming this machine's image: a base pulled for another platform is kept
    // as a base (the cache's), found again by [`Store::base_for`].
    let opts = kiln_runtime::registry::PullOptions {
        platform: Some(platform.clone()),
        no_tag: !platform.is_host(),
        all_platforms: false,
        ..opts.clone()
    };
    let pulled =
        kiln_runtime::registry::pull(ctx.store, reference, &opts, &|_| {}).map_err(|e| {
            let have = named
                .and_then(|d| ctx.store.platforms_of(&d).ok())
                .filter(|_| local.is_none())
                .map(|have| {
                    let have: Vec<String> = have.iter().map(|(p, _)| p.to_string()).collect();
                    format!(
                        " (kiln's store has no image for {platform} under that name, only {})",
                        have.join(", ")
                    )
                })
                .unwrap_or_default();
            BuildError::at(span, format!("pulling {reference}{have}: {e}"))
        })?;
    Ok(pulled.manifest)
}

pub(super) fn load_image(
    ctx: &Ctx<'_>,
    reference: &str,
    span: Span,
    platform: &Platform,
) -> Result<StageState, BuildError> {
    let manifest = resolve_image(ctx, reference, span, platform)?;
    let (m, config, _) = ctx.store.image(&manifest)?;
    if !ctx.opts.dry_run {
        ctx.store.record_base(reference, &manifest)?;
    }
    let mut st = StageState::nothing(platform);
    st.key = CacheKey::for_base(&manifest.to_string());
    let diff_ids: Vec<Digest> = config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d).map_err(|e| BuildError::Other(format!("{reference}: {e}"))))
        .collect::<Result<_, _>>()?;
    if diff_ids.len() != m.layers.len() {
        return Err(BuildError::Other(format!(
            "{reference}: the config lists {} layers, the manifest {}",
            diff_ids.len(),
            m.layers.len()
        )));
    }
    for (i, (desc, diff_id)) in m.layers.iter().zip(diff_ids).enumerate() {
        let blob = Digest::parse(&desc.digest).map_err(|e| BuildError::Other(e.to_string()))?;
        st.view_later(i, blob);
        st.layers.push(LayerRef {
            descriptor: desc.clone(),
            diff_id,
        });
    }
    st.base_created = config.created.clone();
    st.config = ImageConfig {
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: config.rootfs.diff_ids.clone(),
        },
        // A base image's inline cache is its own, never the new image's.
        inline_cache: None,
        ..config
    };
    st.reindex_env();
    // Every stage has a PATH, as in BuildKit, also when its base image set none.
    if !st.env_index.contains_key("PATH") {
        st.set_env("PATH", kiln_runtime::sandbox::process::DEFAULT_PATH);
    }
    Ok(st)
}

pub(super) fn run_stage(
    ctx: &Ctx<'_>,
    s: usize,
    done: &BTreeMap<usize, StageState>,
) -> Result<StageState, BuildError> {
    let stage = &ctx.graph.stages[s];
    let label = stage_label(ctx.graph, s);
    let total = stage.steps.len() + 1;
    let base_name = match &stage.base {
        Base::Context(n) => format!("context {n}"),
        Base::Scratch => "scratch".to_string(),
        Base::Stage(p) => stage_label(ctx.graph, *p),
        Base::Image(r) => r.clone(),
    };
    let from_name = format!("[{label} 1/{total}] FROM {base_name}");
    (ctx.on_event)(Event::Started {
        name: from_name.clone(),
    });
    let t0 = Instant::now();
    let platform = ctx.stage_platform(s)?;
    let mut st = match &stage.base {
        Base::Scratch => StageState::scratch(&platform),
        Base::Stage(p) => {
            let mut p = done.get(p).cloned().ok_or_else(|| {
                BuildError::Other(format!("stage {p} was not built before {label}"))
            })?;
            // ARGs do not cross FROM: a stage sees its parent's ARGs only
            // when it redeclares them, like global ones.
            p.cmd_set = false;
            p
        }
        Base::Image(r) => load_image(ctx, r, stage.span, &platform)?,
        Base::Context(n) => match ctx.opts.build_contexts.get(n) {
            Some(NamedContext::Image(r)) => load_image(ctx, r, stage.span, &platform)?,
            Some(NamedContext::Dir(dir)) => {
                let mut st = StageState::scratch(&platform);
                st.line = stage.span.start.line();
                copy::dir_as_rootfs(ctx, &mut st, dir, n, stage.span)?;
                st
            }
            None => {
                return Err(BuildError::at(
                    stage.span,
                    format!("no build context named {n:?}"),
                ));
            }
        },
    };
    let digest = match &stage.base {
        Base::Image(r) => ctx.store.resolve(r).ok().flatten().map(|d| d.to_string()),
        _ => None,
    }
    .unwrap_or_else(|| st.key.to_string());
    let from = crate::cache::key::Step::new("FROM")
        .field("image", base_name.clone())
        .field("digest", digest);
    ctx.record(
        &from_name,
        None,
        &from,
        (&BTreeMap::new(), BTreeMap::new()),
        &st.key,
        (true, None),
    )?;
    // A stage keeps its parent's ARG values available for redeclaration, not in scope.
    let inherited: BTreeMap<String, Option<String>> = std::mem::take(&mut st.args);
    (ctx.on_event)(Event::Done {
        name: from_name,
        millis: t0.elapsed().as_millis(),
    });

    // ONBUILD triggers of the base run right after FROM, then are cleared.
    let triggers = std::mem::take(&mut st.config.config.on_build);
    for t in &triggers {
        let df = kiln_parser::parse(t).map_err(|e| {
            BuildError::at(
                stage.span,
                format!("ONBUILD trigger {t:?} of the base image: {}", e.message),
            )
        })?;
        for ins in instruction::from_ast(&df).map_err(|e| {
            BuildError::at(
                stage.span,
                format!("ONBUILD trigger {t:?} of the base image: {}", e.message),
            )
        })? {
            let ins = Instruction {
                span: stage.span,
                ..ins
            };
            step(
                ctx,
                &mut st,
                &inherited,
                s,
                &ins,
                &format!("[{label} 1/{total}] ONBUILD {t}"),
                done,
            )?;
        }
    }
    let steps = stage.steps.clone();
    for (n, &i) in steps.iter().enumerate() {
        let ins = &ctx.instructions[i];
        let name = format!("[{label} {}/{total}] {}", n + 2, ctx.shown(&st, &ins.text));
        step(ctx, &mut st, &inherited, s, ins, &name, done)?;
    }
    ctx.resolve_times(&mut st)?;
    Ok(st)
}
