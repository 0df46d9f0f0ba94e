//! The scheduler: each needed stage starts on the pool as soon as the stages it needs are
//! built; after a failure no new stage starts.

use std::collections::BTreeMap;

use super::{BuildError, Ctx, StageState, stage::run_stage};
use crate::graph::BuildGraph;

/// Shared state of one scheduler run.
struct Sched {
    done: std::sync::Mutex<BTreeMap<usize, StageState>>,
    /// For each needed stage, how many of its needed dependencies are not built yet.
    waiting: std::sync::Mutex<BTreeMap<usize, usize>>,
    /// The first failure, by stage (the lowest-numbered stage's error is reported).
    failed: std::sync::Mutex<BTreeMap<usize, BuildError>>,
    /// Dry run: stages that stopped at a miss. The stages that need them cannot be keyed and
    /// never start; the others go on, so each independent stage's first miss is found.
    missed: std::sync::atomic::AtomicBool,
}

/// Runs the needed stages, each as soon as the stages it needs are built (independent stages
/// run side by side on the pool). After a failure no new stage starts; running ones finish.
pub(super) fn run_stages(ctx: &Ctx<'_>) -> Result<BTreeMap<usize, StageState>, BuildError> {
    let needed: std::collections::BTreeSet<usize> = ctx.graph.order.iter().copied().collect();
    let waiting: BTreeMap<usize, usize> = needed
        .iter()
        .map(|&s| {
            (
                s,
                ctx.graph.stages[s]
                    .deps
                    .iter()
                    .filter(|d| needed.contains(d))
                    .count(),
            )
        })
        .collect();
    let ready: Vec<usize> = waiting
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(s, _)| *s)
        .collect();
    let sched = Sched {
        done: std::sync::Mutex::new(BTreeMap::new()),
        waiting: std::sync::Mutex::new(waiting),
        failed: std::sync::Mutex::new(BTreeMap::new()),
        missed: std::sync::atomic::AtomicBool::new(false),
    };
    rayon::scope(|scope| {
        for s in ready {
            spawn_stage(scope, ctx, &sched, s);
        }
    });
    let failed = sched.failed.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some((_, e)) = failed.into_iter().next() {
        return Err(e);
    }
    if sched.missed.into_inner() {
        return Err(BuildError::DryRunMiss);
    }
    let done = sched.done.into_inner().unwrap_or_else(|p| p.into_inner());
    if done.len() != needed.len() {
        return Err(BuildError::Other(
            "the stage graph has a dependency that cannot be met".into(),
        ));
    }
    Ok(done)
}

fn spawn_stage<'s>(scope: &rayon::Scope<'s>, ctx: &'s Ctx<'s>, sched: &'s Sched, s: usize) {
    scope.spawn(move |scope| {
        if !sched
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            return;
        }
        // The stages this one reads (its base, --from sources) are all built: take a snapshot.
        let inputs: BTreeMap<usize, StageState> = {
            let done = sched.done.lock().unwrap_or_else(|p| p.into_inner());
            ctx.graph.stages[s]
                .deps
                .iter()
                .filter_map(|d| done.get(d).map(|st| (*d, st.clone())))
                .collect()
        };
        match run_stage(ctx, s, &inputs) {
            Err(BuildError::DryRunMiss) => {
                sched
                    .missed
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            Err(e) => {
                sched
                    .failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(s, e);
            }
            Ok(state) => {
                sched
                    .done
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(s, state);
                // Release every stage for which this was the last missing dependency.
                let mut now_ready = Vec::new();
                {
                    let mut waiting = sched.waiting.lock().unwrap_or_else(|p| p.into_inner());
                    for (&t, n) in waiting.iter_mut() {
                        if ctx.graph.stages[t].deps.contains(&s) && *n > 0 {
                            *n -= 1;
                            if *n == 0 {
                                now_ready.push(t);
                            }
                        }
                    }
                }
                for t in now_ready {
                    spawn_stage(scope, ctx, sched, t);
                }
            }
        }
    });
}

pub(super) fn stage_label(graph: &BuildGraph, s: usize) -> String {
    graph.stages[s]
        .name
        .clone()
        .unwrap_or_else(|| format!("stage-{s}"))
}
