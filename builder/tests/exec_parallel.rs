//! Independent stages run side by side: a fake step runner makes each RUN wait until the other
//! stage's RUN has started too, which can only happen when both run at once.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::{
    sync::{Condvar, Mutex},
    time::Duration,
};

use kiln_builder::exec::{BuildError, BuildOptions, RunJob, StepRunner, build};
use kiln_parser::instruction::Instruction;
use kiln_runtime::store::Store;

/// Each RUN waits (bounded) until `expected` RUNs have arrived.
struct Rendezvous {
    arrived: Mutex<Vec<String>>,
    cv: Condvar,
    expected: usize,
    wait: Duration,
}

impl StepRunner for Rendezvous {
    fn run(&self, stage: &str, ins: &Instruction, _job: &RunJob<'_>) -> Result<i32, BuildError> {
        let mut arrived = self.arrived.lock().unwrap();
        arrived.push(stage.to_string());
        self.cv.notify_all();
        let (arrived, timeout) = self
            .cv
            .wait_timeout_while(arrived, self.wait, |a| a.len() < self.expected)
            .unwrap();
        if timeout.timed_out() {
            return Err(BuildError::at(
                ins.span,
                format!("stage {stage} ran alone: {arrived:?}"),
            ));
        }
        Ok(0)
    }
}

const DF: &str = "FROM scratch AS a
COPY <<EOF /a
a
EOF
RUN step-a
FROM scratch AS b
COPY <<EOF /b
b
EOF
RUN step-b
FROM scratch
COPY --from=a /a /a
COPY --from=b /b /b
";

fn opts(jobs: usize) -> BuildOptions {
    BuildOptions {
        context: std::env::temp_dir(),
        dockerfile_text: DF.to_string(),
        jobs,
        no_cache: true,
        ..Default::default()
    }
}

#[test]
fn independent_stages_run_at_the_same_time() {
    let st = tempfile::tempdir().unwrap();
    let store = Store::open(st.path()).unwrap();
    let runner = Rendezvous {
        arrived: Mutex::new(Vec::new()),
        cv: Condvar::new(),
        expected: 2,
        wait: Duration::from_secs(30),
    };
    build(&store, &opts(2), &runner, &|_| {}).unwrap();
    let mut arrived = runner.arrived.into_inner().unwrap();
    arrived.sort();
    assert_eq!(arrived, vec!["a", "b"]);
}

#[test]
fn jobs_one_runs_stages_one_at_a_time() {
    let st = tempfile::tempdir().unwrap();
    let store = Store::open(st.path()).unwrap();
    let runner = Rendezvous {
        arrived: Mutex::new(Vec::new()),
        cv: Condvar::new(),
        expected: 2,
        wait: Duration::from_millis(300),
    };
    let err = build(&store, &opts(1), &runner, &|_| {}).unwrap_err();
    assert!(err.to_string().contains("ran alone"), "{err}");
}

#[test]
fn a_stage_starts_as_soon_as_its_own_inputs_are_ready() {
    // `b` is independent and waits (in its RUN) for `c`'s RUN; `c` needs only the quick stage
    // `a`. A round-by-round scheduler would hold `c` until `b` finished, and `b` would time out.
    let df = "FROM scratch AS a
COPY <<EOF /a
a
EOF
FROM scratch AS b
RUN waits-for-c
FROM a AS c
RUN meets-b
FROM scratch
COPY --from=b / /
COPY --from=c /a /a
";
    let st = tempfile::tempdir().unwrap();
    let store = Store::open(st.path()).unwrap();
    let runner = Rendezvous {
        arrived: Mutex::new(Vec::new()),
        cv: Condvar::new(),
        expected: 2,
        wait: Duration::from_secs(30),
    };
    let opts = BuildOptions {
        context: std::env::temp_dir(),
        dockerfile_text: df.to_string(),
        jobs: 2,
        no_cache: true,
        ..Default::default()
    };
    let err = build(&store, &opts, &runner, &|_| {}).err();
    // The final COPY --from=b / finds nothing to copy (b has no files): that error is fine; what
    // matters is that both RUNs met.
    let mut arrived = runner.arrived.into_inner().unwrap();
    arrived.sort();
    assert_eq!(arrived, vec!["b", "c"], "{err:?}");
}
