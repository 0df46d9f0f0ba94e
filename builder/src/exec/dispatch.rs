//! The dispatch: one step of a stage, as BuildKit's Dockerfile frontend dispatches it: the
//! progress told when it starts and ends, then one handler per instruction ([`super::metadata`]
//! for the config-only instructions, [`super::copy`] for COPY/ADD, [`super::workdir`] and
//! [`super::run`]).

use std::{collections::BTreeMap, time::Instant};

use kiln_parser::instruction::{Instruction, Kind};

use super::{
    BuildError, Ctx, Event, StageState, args_of, copy, metadata, run, schedule::stage_label,
    workdir,
};

/// Runs one instruction of a stage, telling the progress when it starts, ends (cached or
/// done), or fails.
pub(super) fn step(
    ctx: &Ctx<'_>,
    st: &mut StageState,
    inherited: &BTreeMap<String, Option<String>>,
    stage: usize,
    ins: &Instruction,
    name: &str,
    done: &BTreeMap<usize, StageState>,
) -> Result<(), BuildError> {
    let t0 = Instant::now();
    (ctx.on_event)(Event::Started {
        name: name.to_string(),
    });
    st.line = ins.span.start.line();
    let at = At {
        inherited,
        stage,
        name,
        done,
    };
    match dispatch(ctx, st, ins, &at) {
        Ok(true) => (ctx.on_event)(Event::Cached {
            name: name.to_string(),
        }),
        Ok(false) => (ctx.on_event)(Event::Done {
            name: name.to_string(),
            millis: t0.elapsed().as_millis(),
        }),
        Err(e) => {
            (ctx.on_event)(Event::Failed {
                name: name.to_string(),
                // The reason's first line; the output's tail follows with the located error.
                message: e.to_string().lines().next().unwrap_or_default().to_string(),
            });
            return Err(e);
        }
    }
    Ok(())
}

/// Where a step is: its stage, its name in the progress, the ARG values the stage inherited,
/// and the stages built before it.
struct At<'a> {
    inherited: &'a BTreeMap<String, Option<String>>,
    stage: usize,
    name: &'a str,
    done: &'a BTreeMap<usize, StageState>,
}

/// One handler per instruction, each given what it needs; whether the cache answered it (the
/// layer steps; the others never ask it).
fn dispatch(
    ctx: &Ctx<'_>,
    st: &mut StageState,
    ins: &Instruction,
    at: &At<'_>,
) -> Result<bool, BuildError> {
    let At {
        inherited,
        stage,
        name,
        done,
    } = *at;
    let span = ins.span;
    let m = ctx.meta();
    let cached = match &ins.kind {
        Kind::From(_) => false,
        Kind::Arg(decls) => {
            let from = metadata::ArgSources {
                build_args: &ctx.opts.build_args,
                inherited,
                global: &ctx.graph.global_args,
            };
            metadata::arg(&m, st, decls, &from, (args_of(&ins.text), span))?;
            false
        }
        Kind::Env(pairs) => metadata::env(&m, st, pairs, span).map(|()| false)?,
        Kind::Label(pairs) => metadata::label(&m, st, pairs, span).map(|()| false)?,
        Kind::Expose(ports) => metadata::expose(&m, st, ports, span).map(|()| false)?,
        Kind::Volume(paths) => metadata::volume(&m, st, paths, span).map(|()| false)?,
        Kind::User(u) => metadata::user(&m, st, u, span).map(|()| false)?,
        Kind::StopSignal(s) => metadata::stop_signal(&m, st, s, span).map(|()| false)?,
        Kind::Shell(argv) => {
            metadata::shell(&m, st, argv);
            false
        }
        Kind::Cmd(c) => {
            metadata::cmd(&m, st, c);
            false
        }
        Kind::Entrypoint(c) => {
            metadata::entrypoint(&m, st, c);
            false
        }
        Kind::Healthcheck(h) => {
            metadata::healthcheck(&m, st, h);
            false
        }
        Kind::OnBuild { expression, .. } => {
            metadata::on_build(st, expression);
            false
        }
        Kind::Maintainer(name) => {
            metadata::maintainer(&m, st, name);
            false
        }
        Kind::Workdir(w) => workdir::workdir(ctx, st, w, name, span)?,
        Kind::Copy(c) => copy::copy(ctx, st, stage, ins, c, name, done)?,
        Kind::Run(r) => {
            let label = stage_label(ctx.graph, stage);
            run::run(ctx, st, (stage, &label), ins, r, name, done)?
        }
    };
    Ok(cached)
}
