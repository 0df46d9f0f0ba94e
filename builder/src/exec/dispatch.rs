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

/// Runs one instruction of a stage, telling the progress when it starts, ends, or fails.
pub(super) fn step(
    ctx: &Ctx<'_>,
    st: &mut StageState,
    inherited: &BTreeMap<String, Option<String>>,
    stage: usize,
    ins: &Instruction,
    name: &str,
    done: &BTreeMap<usize, StageState>,
) -> Result<(), BuildError> {
    let result = step_body(ctx, st, inherited, stage, ins, name, done);
    if let Err(e) = &result {
        let message = e.to_string();
        (ctx.on_event)(Event::Failed {
            name: name.to_string(),
            // The reason's first line; the output's tail follows with the located error.
            message: message.lines().next().unwrap_or_default().to_string(),
        });
    }
    result
}

fn step_body(
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
    let span = ins.span;
    st.line = span.start.line();
    let m = ctx.meta();
    // One handler per instruction, each given what it needs; the layer steps say whether the
    // cache answered them.
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
    (ctx.on_event)(if cached {
        Event::Cached {
            name: name.to_string(),
        }
    } else {
        Event::Done {
            name: name.to_string(),
            millis: t0.elapsed().as_millis(),
        }
    });
    Ok(())
}
