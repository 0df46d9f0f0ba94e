//! The build graph: stages, what each depends on (`FROM <stage>`, `COPY --from`, `RUN --mount
//! from=`), pruned to what `--target` needs, with cycles and unknown targets rejected.
//!
//! FROM lines are expanded here with the global ARGs (their defaults, overridden by
//! `--build-arg`) and the automatic platform ARGs, as BuildKit does.

use std::collections::{BTreeMap, BTreeSet};

use kiln_parser::{
    instruction::{Instruction, Kind},
    shell::Lexer,
    span::Span,
};

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    Scratch,
    /// An earlier stage, by index.
    Stage(usize),
    /// An image reference, after ARG expansion.
    Image(String),
    /// A named build context (`--build-context NAME=...`).
    Context(String),
}

/// Where a `--from` / `from=` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stage(usize),
    Image(String),
    /// A named build context.
    Context(String),
}

/// One stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub index: usize,
    /// Lowercased `AS` name.
    pub name: Option<String>,
    pub base: Base,
    pub platform: Option<String>,
    /// The FROM instruction's span.
    pub span: Span,
    /// Indices (into the instruction list) of the stage's instructions after FROM.
    pub steps: Vec<usize>,
    /// Stages this one needs.
    pub deps: BTreeSet<usize>,
    /// `--from`/`from=` sources per step index.
    pub sources: BTreeMap<usize, Vec<Source>>,
}

/// Options that shape the graph.
#[derive(Debug, Clone, Default)]
pub struct GraphOptions {
    /// `--target`; default: the last stage.
    pub target: Option<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// Values of the automatic platform ARGs (`TARGETPLATFORM`, `BUILDARCH`, ...).
    pub platform_args: BTreeMap<String, String>,
    /// Names given with `--build-context`: they answer `FROM NAME` and `--from=NAME`, over a
    /// stage or an image of the same name.
    pub named_contexts: std::collections::BTreeSet<String>,
}

/// The graph of a Dockerfile.
#[derive(Debug, Clone)]
pub struct BuildGraph {
    pub stages: Vec<Stage>,
    /// Global ARGs (before the first FROM) with their effective values.
    pub global_args: Vec<(String, Option<String>)>,
    pub target: usize,
    /// The stages to build, each after the stages it needs.
    pub order: Vec<usize>,
}

/// Why a graph could not be built; each error points at the instruction at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("the Dockerfile has no FROM instruction")]
    NoStage,
    #[error("{message}")]
    At { span: Span, message: String },
    #[error("target stage {target:?} could not be found{hint}")]
    UnknownTarget { target: String, hint: String },
}

impl GraphError {
    fn at(span: Span, message: impl Into<String>) -> Self {
        GraphError::At {
            span,
            message: message.into(),
        }
    }

    /// The source span, when the error is about one instruction.
    pub fn span(&self) -> Option<Span> {
        match self {
            GraphError::At { span, .. } => Some(*span),
            _ => None,
        }
    }
}

fn resolve_source(
    name: &str,
    stages: &[Stage],
    by_name: &BTreeMap<String, usize>,
    named: &std::collections::BTreeSet<String>,
) -> Source {
    // A named context overrides a stage of the same name (BuildKit: "when the Dockerfile defines
    // a stage with the same name it's overwritten").
    if named.contains(name) {
        return Source::Context(name.to_string());
    }
    let lower = name.to_ascii_lowercase();
    if let Some(&i) = by_name.get(&lower) {
        return Source::Stage(i);
    }
    if let Ok(i) = name.parse::<usize>() {
        if i < stages.len() {
            return Source::Stage(i);
        }
    }
    Source::Image(name.to_string())
}

impl BuildGraph {
    /// Builds the graph of `instructions` (typed, in file order).
    pub fn new(
        instructions: &[Instruction],
        opts: &GraphOptions,
    ) -> Result<BuildGraph, GraphError> {
        let lex = Lexer::default();
        // The automatic platform ARGs are in the global scope from the start, so `ARG
        // TARGETARCH` in a stage has BuildKit's value.
        let mut global_args: Vec<(String, Option<String>)> = opts
            .platform_args
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        let mut stages: Vec<Stage> = Vec::new();
        let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
        // Values FROM lines may use: platform ARGs, then global ARGs as declared so far.
        let mut from_env: Vec<(String, String)> = opts
            .platform_args
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();

        for (i, ins) in instructions.iter().enumerate() {
            match &ins.kind {
                Kind::Arg(decls) if stages.is_empty() => {
                    for d in decls {
                        let value = match opts.build_args.get(&d.name) {
                            Some(v) => Some(v.clone()),
                            None => match &d.default {
                                Some(def) => Some(lex.expand_str(def, &from_env).map_err(|e| {
                                    GraphError::at(ins.span, format!("ARG {}: {e}", d.name))
                                })?),
                                // `ARG TARGETOS` keeps its automatic value.
                                None => opts.platform_args.get(&d.name).cloned(),
                            },
                        };
                        if let Some(v) = &value {
                            from_env.push((d.name.clone(), v.clone()));
                        }
                        global_args.push((d.name.clone(), value));
                    }
                }
                Kind::From(f) => {
                    let image = lex
                        .expand_str(&f.image, &from_env)
                        .map_err(|e| GraphError::at(ins.span, format!("FROM {}: {e}", f.image)))?;
                    if image.is_empty() {
                        return Err(GraphError::at(
                            ins.span,
                            format!("FROM {}: base name is empty after expanding ARGs", f.image),
                        ));
                    }
                    let platform = match &f.platform {
                        Some(p) => Some(lex.expand_str(p, &from_env).map_err(|e| {
                            GraphError::at(ins.span, format!("FROM --platform={p}: {e}"))
                        })?),
                        None => None,
                    };
                    let base = if opts.named_contexts.contains(&image) {
                        // A named context overrides a stage or image of the same name.
                        Base::Context(image)
                    } else if image.eq_ignore_ascii_case("scratch") {
                        Base::Scratch
                    } else if let Some(&s) = by_name.get(&image.to_ascii_lowercase()) {
                        Base::Stage(s)
                    } else {
                        Base::Image(image)
                    };
                    let index = stages.len();
                    if let Some(name) = &f.name {
                        // A repeated name refers to the first stage (BuildKit warns via
                        // DuplicateStageName); later references keep resolving to it.
                        by_name.entry(name.clone()).or_insert(index);
                    }
                    let mut deps = BTreeSet::new();
                    if let Base::Stage(s) = base {
                        deps.insert(s);
                    }
                    stages.push(Stage {
                        index,
                        name: f.name.clone(),
                        base,
                        platform,
                        span: ins.span,
                        steps: Vec::new(),
                        deps,
                        sources: BTreeMap::new(),
                    });
                }
                _ => match stages.last_mut() {
                    Some(st) => st.steps.push(i),
                    None => {
                        return Err(GraphError::at(
                            ins.span,
                            "no build stage in current context: only ARG may come before the first FROM",
                        ));
                    }
                },
            }
        }
        if stages.is_empty() {
            return Err(GraphError::NoStage);
        }

        // Resolve --from / from= now that every stage name is known (forward references are
        // allowed; cycles are not).
        for si in 0..stages.len() {
            let steps = stages[si].steps.clone();
            for step in steps {
                let names: Vec<String> = match &instructions[step].kind {
                    Kind::Copy(c) => c.from.iter().cloned().collect(),
                    Kind::Run(r) => r.mounts.iter().filter_map(|m| m.from.clone()).collect(),
                    _ => Vec::new(),
                };
                for name in names {
                    let src = resolve_source(&name, &stages, &by_name, &opts.named_contexts);
                    if let Source::Stage(d) = src {
                        if d == si {
                            return Err(GraphError::at(
                                instructions[step].span,
                                format!("circular dependency detected on stage: {name}"),
                            ));
                        }
                        stages[si].deps.insert(d);
                    }
                    stages[si].sources.entry(step).or_default().push(src);
                }
            }
        }

        let target = match &opts.target {
            None => stages.len() - 1,
            Some(t) => match by_name.get(&t.to_ascii_lowercase()) {
                Some(&i) => i,
                None => {
                    let names: Vec<&str> = by_name.keys().map(String::as_str).collect();
                    let hint = kiln_parser::suggest::closest(t, &names)
                        .map(|c| format!(" (did you mean {c}?)"))
                        .unwrap_or_default();
                    return Err(GraphError::UnknownTarget {
                        target: t.clone(),
                        hint,
                    });
                }
            },
        };

        // Depth-first from the target: the needed stages in dependency order, cycles rejected.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        let mut marks = vec![Mark::New; stages.len()];
        let mut order = Vec::new();
        // Iterative DFS: (stage, whether its deps were pushed).
        let mut stack = vec![(target, false)];
        while let Some((s, expanded)) = stack.pop() {
            if expanded {
                marks[s] = Mark::Done;
                order.push(s);
                continue;
            }
            match marks[s] {
                Mark::Done => continue,
                Mark::Active => continue,
                Mark::New => {}
            }
            marks[s] = Mark::Active;
            stack.push((s, true));
            for &d in stages[s].deps.iter().rev() {
                match marks[d] {
                    Mark::Active => {
                        let name = stages[d].name.clone().unwrap_or_else(|| d.to_string());
                        return Err(GraphError::at(
                            stages[s].span,
                            format!("circular dependency detected on stage: {name}"),
                        ));
                    }
                    Mark::New => stack.push((d, false)),
                    Mark::Done => {}
                }
            }
        }
        Ok(BuildGraph {
            stages,
            global_args,
            target,
            order,
        })
    }
}
