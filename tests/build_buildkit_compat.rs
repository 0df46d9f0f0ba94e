//! Behaviour that must match BuildKit's (checked against dockerd 20.10's BuildKit and its
//! `dockerfile2llb` source), where kiln differed silently:
//! - every stage's config has a PATH (the default one when its base gave none), and `FROM
//!   scratch` has the working directory `/`, as BuildKit's empty image;
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::{context, kiln};

fn config(root: &std::path::Path, tag: &str) -> serde_json::Value {
    let (code, out, err) = kiln(root, &["inspect", tag]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let v = if v.is_array() { v[0].clone() } else { v };
    v["Config"].clone()
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[test]
fn every_stage_has_a_path() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // FROM scratch: what `docker build` gives for the same Dockerfile.
    let ctx = context("FROM scratch\nLABEL a=b\n");
    let (code, _, err) = kiln(r, &["build", "-q", "-t", "s", ctx.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let c = config(r, "s");
    assert_eq!(c["Env"], serde_json::json!([DEFAULT_PATH]));
    assert_eq!(c["WorkingDir"], "/");
    assert_eq!(c["Labels"]["a"], "b");
    // A base image whose config has no Env at all.
    let layout = tempfile::tempdir().unwrap();
    let tag = common::hostile::write_layout(layout.path(), &common::hostile::Hostile::LayerBomb(1));
    let (code, _, err) = kiln(r, &["load", "-i", layout.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let ctx = context(&format!("FROM {tag}\nENV A=1\n"));
    let (code, _, err) = kiln(r, &["build", "-q", "-t", "p", ctx.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(config(r, "p")["Env"], serde_json::json!([DEFAULT_PATH, "A=1"]));
}
