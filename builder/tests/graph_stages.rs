//! The stage graph from real Dockerfiles.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::collections::BTreeMap;

use kiln_builder::graph::{Base, BuildGraph, GraphError, GraphOptions, Source};

fn graph(src: &str, opts: &GraphOptions) -> Result<BuildGraph, GraphError> {
    let df = kiln_parser::parse(src).unwrap();
    let ins = kiln_parser::instruction::from_ast(&df).unwrap();
    BuildGraph::new(&ins, opts)
}

fn opts(target: Option<&str>, args: &[(&str, &str)]) -> GraphOptions {
    GraphOptions {
        target: target.map(str::to_string),
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        platform_args: BTreeMap::from([("TARGETARCH".to_string(), "amd64".to_string())]),
        named_contexts: Default::default(),
    }
}

const MULTI: &str = "\
ARG BASE=alpine:3.19
FROM ${BASE} AS deps
RUN echo deps
FROM golang AS build
COPY --from=deps /x /y
FROM scratch AS unused
COPY --from=0 /a /b
FROM build AS test
RUN --mount=type=bind,from=tools,target=/t true
FROM busybox AS tools
FROM scratch
COPY --from=build /app /app
";

#[test]
fn stages_bases_and_dependencies() {
    let g = graph(MULTI, &opts(None, &[])).unwrap();
    let bases: Vec<&Base> = g.stages.iter().map(|s| &s.base).collect();
    assert_eq!(
        bases,
        vec![
            &Base::Image("alpine:3.19".into()),
            &Base::Image("golang".into()),
            &Base::Scratch,
            &Base::Stage(1),
            &Base::Image("busybox".into()),
            &Base::Scratch,
        ]
    );
    // The default target is the last stage; only what it needs is built, deps first.
    assert_eq!(g.target, 5);
    assert_eq!(g.order, vec![0, 1, 5]);
    // `--from=0` is stage 0 by index; a forward `from=tools` resolves to the later stage.
    assert_eq!(
        g.stages[2].deps.iter().copied().collect::<Vec<_>>(),
        vec![0]
    );
    assert_eq!(
        g.stages[3].deps.iter().copied().collect::<Vec<_>>(),
        vec![1, 4]
    );
    let test_sources: Vec<&Source> = g.stages[3].sources.values().flatten().collect();
    assert_eq!(test_sources, vec![&Source::Stage(4)]);
}

#[test]
fn target_prunes_and_orders() {
    let g = graph(MULTI, &opts(Some("TEST"), &[])).unwrap();
    assert_eq!(g.target, 3);
    assert_eq!(g.order, vec![0, 1, 4, 3]);
    let err = graph(MULTI, &opts(Some("tset"), &[])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "target stage \"tset\" could not be found (did you mean test?)"
    );
}

#[test]
fn build_args_override_global_defaults_in_from() {
    let g = graph(MULTI, &opts(None, &[("BASE", "debian:12")])).unwrap();
    assert_eq!(g.stages[0].base, Base::Image("debian:12".into()));
    // After the automatic platform ARGs, which are global from the start.
    assert_eq!(
        g.global_args.last(),
        Some(&("BASE".to_string(), Some("debian:12".to_string())))
    );
    // Platform ARGs are usable in FROM; an undeclared global expands to nothing.
    let g = graph(
        "FROM base-$TARGETARCH\nFROM img$NOPE AS x\n",
        &opts(None, &[]),
    )
    .unwrap();
    assert_eq!(g.stages[0].base, Base::Image("base-amd64".into()));
    assert_eq!(g.stages[1].base, Base::Image("img".into()));
    let err = graph("ARG IMG\nFROM $IMG\n", &opts(None, &[])).unwrap_err();
    assert!(err.to_string().contains("base name is empty"), "{err}");
    assert_eq!(err.span().unwrap().start.line, 2);
}

#[test]
fn cycles_and_misplaced_instructions_are_rejected_with_locations() {
    let cyc = "FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nCOPY --from=a /y /y\n";
    let err = graph(cyc, &opts(None, &[])).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("circular dependency detected on stage"),
        "{err}"
    );
    let self_ref = "FROM scratch AS a\nCOPY --from=a /x /x\n";
    let err = graph(self_ref, &opts(None, &[])).unwrap_err();
    assert_eq!(err.span().unwrap().start.line, 2);
    let early = "ENV A=1\nFROM scratch\n";
    let err = graph(early, &opts(None, &[])).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("no build stage in current context"),
        "{err}"
    );
    // Stage names are case-insensitive; a later duplicate name does not capture references.
    let dup = "FROM alpine AS App\nFROM busybox AS app\nFROM APP\n";
    let g = graph(dup, &opts(None, &[])).unwrap();
    assert_eq!(g.stages[2].base, Base::Stage(0));
}

#[test]
fn named_contexts_override_stages_and_images() {
    let mut o = opts(None, &[]);
    o.named_contexts = ["tools".to_string(), "alpine".to_string()].into();
    let g = graph(MULTI, &o).unwrap();
    // `from=tools` now names the context, not the stage: the stage drops out of the build.
    let test_sources: Vec<&Source> = g.stages[3].sources.values().flatten().collect();
    assert_eq!(test_sources, vec![&Source::Context("tools".into())]);
    let g = graph("FROM alpine\nFROM alpine AS x\n", &o).unwrap();
    assert_eq!(g.stages[0].base, Base::Context("alpine".into()));
}
