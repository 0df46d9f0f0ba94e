//! The differential suite: every case of `testdata/compat/cases/` built with kiln and compared
//! with what BuildKit (dockerd 20.10) made of it, recorded in the case's `expected.json` by
//! `bench/same-as-buildkit.sh`. The comparison goes through `testdata/compat/flatten.py`, the
//! same canonical form the recorder wrote: every path's type, mode, owner, size, content digest,
//! link target and xattr names, hard-link groups, the config fields a user sees, and the history
//! lines. A case where kiln differs on purpose says why in its `known-difference.md`; every other
//! case must agree.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/compat/cases");
const FLATTEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/compat/flatten.py");

fn kiln_ok(root: &Path, args: &[&str]) -> Result<String, String> {
    let (code, out, err) = common::kiln(root, args);
    if code == 0 { Ok(out) } else { Err(err) }
}

/// Copies a case into `work`, runs its setup, and returns (Dockerfile, context, build flags).
fn prepare(case: &Path, work: &Path) -> (PathBuf, PathBuf, Vec<String>) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", case.display()))
        .arg(work)
        .status()
        .unwrap();
    assert!(status.success());
    let ctx = work.join("context");
    std::fs::create_dir_all(&ctx).unwrap();
    if work.join("setup.sh").exists() {
        let out = Command::new("sh")
            .arg("setup.sh")
            .current_dir(work)
            .env(
                "COMPAT",
                concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/compat"),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: setup: {}",
            case.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let args = std::fs::read_to_string(work.join("args"))
        .map(|a| {
            a.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    (work.join("Dockerfile"), ctx, args)
}

/// Builds a prepared case: the flattened filesystem and `kiln inspect` of the image, in `work`.
fn build(
    root: &Path,
    work: &Path,
    tag: &str,
    (df, ctx, args): &(PathBuf, PathBuf, Vec<String>),
) -> Result<(PathBuf, PathBuf), String> {
    let fs = work.join("fs.tar");
    let mut base: Vec<String> = vec!["build".into(), "-q".into()];
    base.extend(args.iter().cloned());
    base.extend(["-f".into(), df.display().to_string()]);
    let run = |extra: &[String]| {
        let mut a: Vec<String> = base.clone();
        a.extend_from_slice(extra);
        a.push(ctx.display().to_string());
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        kiln_ok(root, &a)
    };
    run(&["-o".into(), format!("type=tar,dest={}", fs.display())])?;
    run(&["-t".into(), tag.into()])?;
    let inspect = kiln_ok(root, &["inspect", tag])?;
    let image = work.join("image.json");
    std::fs::write(&image, inspect).unwrap();
    Ok((fs, image))
}

fn flatten(fs: &Path, image: &Path, base: &(PathBuf, PathBuf)) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(FLATTEN)
        .args([fs, image, &base.0, &base.1])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The first few places where two results differ, for the failure message.
fn differences(got: &serde_json::Value, want: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for part in ["files", "deleted", "hardlinks", "config", "history"] {
        let (g, w) = (&got[part], &want[part]);
        if g == w {
            continue;
        }
        match (g.as_object(), w.as_object()) {
            (Some(g), Some(w)) => {
                for k in g.keys().chain(w.keys()) {
                    if g.get(k) != w.get(k)
                        && !out
                            .iter()
                            .any(|l: &String| l.starts_with(&format!("{part}.{k}:")))
                    {
                        out.push(format!(
                            "{part}.{k}: kiln {} buildkit {}",
                            g.get(k).unwrap_or(&serde_json::Value::Null),
                            w.get(k).unwrap_or(&serde_json::Value::Null)
                        ));
                    }
                }
            }
            _ => out.push(format!("{part}: kiln {g} buildkit {w}")),
        }
    }
    out.truncate(8);
    out
}

#[test]
fn same_as_buildkit() {
    if !common::can_sandbox("same_as_buildkit") || !common::have("python3", "same_as_buildkit") {
        return;
    }
    let root = common::store_with_base();
    let r = root.path();
    let base_work = tempfile::tempdir().unwrap();
    std::fs::write(
        base_work.path().join("Dockerfile"),
        "FROM kiln.local/busybox\n",
    )
    .unwrap();
    let base_prep = (
        base_work.path().join("Dockerfile"),
        base_work.path().to_path_buf(),
        Vec::new(),
    );
    let base = build(r, base_work.path(), "compat-base", &base_prep).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(CASES)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 100, "the suite has {} cases", names.len());
    let results = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while let Some(name) =
                    names.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    let case = Path::new(CASES).join(name);
                    let work = tempfile::tempdir().unwrap();
                    let prep = prepare(&case, work.path());
                    let want: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(case.join("expected.json")).unwrap())
                            .unwrap();
                    let known = case.join("known-difference.md").exists();
                    let verdict = match build(r, work.path(), &format!("compat-{name}"), &prep) {
                        Err(e) if want["fails"] == true => Ok(format!(
                            "both refuse it ({})",
                            e.lines().last().unwrap_or("")
                        )),
                        Err(e) => Err(vec![format!("kiln failed: {}", e.trim())]),
                        Ok(_) if want["fails"] == true => {
                            Err(vec!["BuildKit refuses it, kiln built it".into()])
                        }
                        Ok((fs, image)) => {
                            let got = flatten(&fs, &image, &base);
                            if got == want {
                                Ok("same".into())
                            } else {
                                Err(differences(&got, &want))
                            }
                        }
                    };
                    results.lock().unwrap().push((name.clone(), known, verdict));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let agree = results.iter().filter(|r| r.2.is_ok()).count();
    eprintln!("same as BuildKit: {agree} of {} cases", results.len());
    let mut failures = Vec::new();
    for (name, known, verdict) in &results {
        match (verdict, known) {
            (Ok(_), true) => failures.push(format!(
                "{name}: agrees now; remove its known-difference.md"
            )),
            (Err(d), true) => eprintln!("known difference {name}: {}", d.join("; ")),
            (Err(d), false) => failures.push(format!("{name}:\n    {}", d.join("\n    "))),
            (Ok(_), false) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases differ from BuildKit:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
