//! Parse throughput on a generated ~10 MB Dockerfile, side by side with `parse-dockerfile`
//! (taiki-e's Rust parser) on the same input in the same run.
//! Run: `cargo bench -p kiln-parser --bench parse`. Prints MB/s for each and kiln's ratio.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::time::{Duration, Instant};

// The allocator the `kiln` binary uses, for both parsers alike.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A deterministic Dockerfile of about `target` bytes mixing every instruction shape.
fn generate(target: usize) -> String {
    let mut s = String::from("# syntax=docker/dockerfile:1\nARG BASE=alpine:3.19\n");
    let mut i = 0usize;
    while s.len() < target {
        s.push_str(&format!(
            "FROM ${{BASE}} AS stage{i}\n\
             ENV APP_HOME=/srv/app{i} PATH=\"/srv/bin:$PATH\" MSG='hello world'\n\
             LABEL org.example.index=\"{i}\" version=1.{i}\n\
             WORKDIR /srv/app{i}\n\
             COPY --chown=1000:1000 --chmod=0644 src/ config/*.toml /srv/app{i}/\n\
             RUN --mount=type=cache,target=/root/.cache,id=c{i} \\\n    \
             apk add --no-cache curl && \\\n    \
             # refresh the index\n    \
             echo \"built {i}\" > /built && \\\n    \
             test -f /built\n\
             RUN <<EOF\nset -e\necho heredoc {i}\nEOF\n\
             EXPOSE 80{r}/tcp 443\n\
             USER 1000:1000\n\
             HEALTHCHECK --interval=30s --retries=3 CMD [\"/bin/check\", \"{i}\"]\n\
             CMD [\"/srv/bin/app\", \"--index\", \"{i}\"]\n",
            r = i % 10
        ));
        i += 1;
    }
    s
}

/// One instruction on one line of about `target` bytes with many non-ASCII arguments: any
/// per-argument rescan of the line would make this quadratic.
fn generate_long_line(target: usize) -> String {
    let mut s = String::from("FROM scratch\nLABEL");
    let mut i = 0usize;
    while s.len() < target {
        s.push_str(&format!(" k{i}=\"välue {i}\""));
        i += 1;
    }
    s.push('\n');
    s
}

/// Parses once in this process and prints the seconds it took: `parse-bench --one <which>`.
/// Each measurement runs in a fresh process, as `kiln parse` does, so no run inherits the
/// allocator state (freed chunks to consolidate) of an earlier one.
fn one(which: &str, text: &str) {
    // Each result lives until the clock has stopped and is then leaked: freeing it is not
    // parsing (the CLI exits without freeing), and it costs an owned AST far more than a
    // borrowing one.
    let long;
    let text = if which == "kiln-long" {
        long = generate_long_line(text.len());
        long.as_str()
    } else {
        text
    };
    let t = Instant::now();
    let secs = match which {
        "kiln" | "kiln-long" => {
            let df = std::hint::black_box(kiln_parser::parse(text));
            let secs = t.elapsed().as_secs_f64();
            assert!(df.is_ok(), "kiln rejected the generated file");
            std::mem::forget(df);
            secs
        }
        "kiln-typed" => {
            let df = std::hint::black_box(kiln_parser::parse(text));
            let typed = df.as_ref().map(kiln_parser::instruction::from_ast);
            let secs = t.elapsed().as_secs_f64();
            assert!(
                matches!(typed, Ok(Ok(_))),
                "kiln rejected the generated file"
            );
            std::mem::forget(typed);
            std::mem::forget(df);
            secs
        }
        _ => {
            let df = std::hint::black_box(parse_dockerfile::parse(text));
            let secs = t.elapsed().as_secs_f64();
            assert!(df.is_ok(), "parse-dockerfile rejected the generated file");
            std::mem::forget(df);
            secs
        }
    };
    println!("{secs}");
}

/// The best of `runs` fresh-process timings of `which`.
fn best(which: &str, runs: usize) -> Duration {
    let exe = std::env::current_exe().expect("bench executable");
    (0..runs)
        .map(|_| {
            let out = std::process::Command::new(&exe)
                .args(["--one", which])
                .output()
                .expect("run the bench child");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let secs: f64 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("seconds");
            Duration::from_secs_f64(secs)
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let text = generate(10 * 1024 * 1024);
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--one") {
        one(args.get(i + 1).map_or("kiln", String::as_str), &text);
        return;
    }
    let mb = text.len() as f64 / 1e6;
    let n = kiln_parser::parse(&text)
        .expect("kiln parses the generated file")
        .nodes
        .len();
    let runs = 5;
    let kiln_ast = best("kiln", runs);
    let kiln_typed = best("kiln-typed", runs);
    let peer = best("peer", runs);
    let kiln_long = best("kiln-long", runs);
    let rate = |d: Duration| mb / d.as_secs_f64();
    println!("input: {mb:.1} MB, {n} instructions, best of {runs} runs, one parse per process");
    println!("kiln-parser (AST)            {:>8.1} MB/s", rate(kiln_ast));
    println!(
        "kiln-parser (AST + typed)    {:>8.1} MB/s",
        rate(kiln_typed)
    );
    println!("parse-dockerfile 0.1         {:>8.1} MB/s", rate(peer));
    println!("kiln-parser, one 10 MB line  {:>8.1} MB/s", rate(kiln_long));
    println!(
        "ratio kiln AST time / parse-dockerfile time: {:.2}",
        kiln_ast.as_secs_f64() / peer.as_secs_f64()
    );
}
