//! Why a step missed the cache (`kiln build --explain-cache`, `kiln cache explain`).
//!
//! Every build records, for each step that has a key (FROM's base, COPY, ADD, WORKDIR, RUN),
//! what went into it: the parent key, the step's canonical fields and its input digests. The
//! records of the last successful build of the same context, Dockerfile and target are kept in
//! the store. For each stage, the first step whose key differs from that build's is the cause
//! of the first miss after it; [`explain`] names what differs there: the instruction's fields
//! (argv, environment variables with old and new values, user, workdir...), the input files
//! (paths added, removed or changed), or the base image that moved.
//!
//! Pure: no I/O, so the comparison is tested on its own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What went into one step's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The stage label and the step's position in it (`stage-0`, 2).
    pub stage: String,
    pub index: usize,
    /// `[stage-0 2/3] RUN make`, as progress shows it.
    pub name: String,
    /// `FROM`, `COPY`, `RUN`, `MKDIR`...
    pub kind: String,
    pub parent: Option<String>,
    pub fields: BTreeMap<String, String>,
    /// Input path → content digest.
    pub inputs: BTreeMap<String, String>,
    /// Input path → the context path it was copied from, where that differs (`COPY a.txt /a`):
    /// what the explanation names, since that is the file a user edits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, String>,
    pub key: String,
    pub hit: bool,
    /// A hit of an entry imported from a shared cache: where it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// One line of the explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explained {
    pub name: String,
    pub hit: bool,
    /// A hit of an entry imported from a shared cache (`--cache-from`): which.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// For the first miss of a stage: why.
    pub reason: Option<String>,
}

/// Splits `[stage-0 2/3] RUN ...` into (`stage-0`, 2).
pub fn position(name: &str) -> (String, usize) {
    let inner = name
        .strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .map_or("", |(i, _)| i);
    let (stage, pos) = inner.rsplit_once(' ').unwrap_or((inner, ""));
    let index = pos
        .split_once('/')
        .and_then(|(i, _)| i.parse().ok())
        .unwrap_or(0);
    (stage.to_string(), index)
}

const MAX_PATHS: usize = 10;

/// What differs between two records of the same position.
fn difference(cur: &Record, prev: &Record) -> String {
    if cur.kind == "FROM" {
        return format!(
            "the base image moved: {} was {}, is now {}",
            cur.fields.get("image").map_or("?", String::as_str),
            prev.fields.get("digest").map_or("?", String::as_str),
            cur.fields.get("digest").map_or("?", String::as_str),
        );
    }
    let mut parts = Vec::new();
    if cur.kind != prev.kind {
        parts.push(format!(
            "the instruction changed from {} to {}",
            prev.kind, cur.kind
        ));
    }
    let names: std::collections::BTreeSet<&String> =
        cur.fields.keys().chain(prev.fields.keys()).collect();
    for n in names {
        let (a, b) = (prev.fields.get(n), cur.fields.get(n));
        if a == b {
            continue;
        }
        if n == "env" {
            parts.push(env_difference(
                a.map_or("", String::as_str),
                b.map_or("", String::as_str),
            ));
        } else {
            parts.push(format!(
                "{n} changed: {} -> {}",
                a.map_or("(none)", String::as_str),
                b.map_or("(none)", String::as_str)
            ));
        }
    }
    if cur.inputs != prev.inputs {
        let shown = |p: &String| {
            cur.sources
                .get(p)
                .or_else(|| prev.sources.get(p))
                .unwrap_or(p)
                .clone()
        };
        let mut changed = Vec::new();
        for (p, d) in &cur.inputs {
            match prev.inputs.get(p) {
                None => changed.push(format!("{} (added)", shown(p))),
                Some(old) if old != d => changed.push(format!("{} (changed)", shown(p))),
                Some(_) => {}
            }
        }
        for p in prev.inputs.keys() {
            if !cur.inputs.contains_key(p) {
                changed.push(format!("{} (removed)", shown(p)));
            }
        }
        let more = changed.len().saturating_sub(MAX_PATHS);
        changed.truncate(MAX_PATHS);
        let mut line = format!("files changed: {}", changed.join(", "));
        if more > 0 {
            line.push_str(&format!(" and {more} more"));
        }
        parts.push(line);
    }
    if parts.is_empty() && cur.parent != prev.parent {
        parts.push("the step before it produced a different result".into());
    }
    if parts.is_empty() {
        // Same inputs, same key: the entry is gone (pruned) or the build ran with --no-cache.
        return "same inputs as the last build: its cache entry was removed (prune) or \
                --no-cache was given"
            .into();
    }
    parts.join("; ")
}

/// `K=V` lines: which names were added, removed or changed, with values.
fn env_difference(old: &str, new: &str) -> String {
    let parse = |s: &str| -> BTreeMap<String, String> {
        s.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let (a, b) = (parse(old), parse(new));
    let mut out = Vec::new();
    for (k, v) in &b {
        match a.get(k) {
            None => out.push(format!("{k} added ({v:?})")),
            Some(o) if o != v => out.push(format!("{k} changed: {o:?} -> {v:?}")),
            Some(_) => {}
        }
    }
    for k in a.keys() {
        if !b.contains_key(k) {
            out.push(format!("{k} removed"));
        }
    }
    format!("environment: {}", out.join(", "))
}

/// HIT or MISS for every keyed step of `current`, and for the first miss of each stage the
/// first difference from `previous` (the last build of the same Dockerfile and target) at or
/// before it in that stage.
pub fn explain(current: &[Record], previous: Option<&[Record]>) -> Vec<Explained> {
    let prev_at = |stage: &str, index: usize| {
        previous.and_then(|p| p.iter().find(|r| r.stage == stage && r.index == index))
    };
    let mut out = Vec::new();
    let mut explained_stages = std::collections::BTreeSet::new();
    for (i, r) in current.iter().enumerate() {
        if r.kind == "FROM" {
            continue;
        }
        let mut reason = None;
        if !r.hit && explained_stages.insert(r.stage.clone()) {
            reason = Some(match previous {
                None => "no earlier build of this Dockerfile and target to compare with".into(),
                Some(_) => {
                    // The earliest record of this stage, up to this one, whose key changed.
                    let first = current[..=i]
                        .iter()
                        .filter(|c| c.stage == r.stage)
                        .find(|c| prev_at(&c.stage, c.index).is_none_or(|p| p.key != c.key));
                    match first {
                        Some(c) => match prev_at(&c.stage, c.index) {
                            Some(p) => {
                                let d = difference(c, p);
                                if c.index == r.index {
                                    d
                                } else {
                                    format!("{} changed: {d}", c.name)
                                }
                            }
                            None => format!("{} is new since the last build", c.name),
                        },
                        None => difference(r, r),
                    }
                }
            });
        }
        out.push(Explained {
            name: r.name.clone(),
            hit: r.hit,
            from: r.from.clone(),
            reason,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(index: usize, kind: &str, key: &str, hit: bool) -> Record {
        Record {
            stage: "stage-0".into(),
            index,
            name: format!("[stage-0 {index}/3] {kind}"),
            kind: kind.into(),
            parent: None,
            fields: BTreeMap::new(),
            inputs: BTreeMap::new(),
            sources: BTreeMap::new(),
            key: key.into(),
            hit,
            from: None,
        }
    }

    #[test]
    fn positions() {
        assert_eq!(position("[stage-0 2/3] RUN x"), ("stage-0".into(), 2));
        assert_eq!(position("[build 10/12] COPY . /"), ("build".into(), 10));
        assert_eq!(position("nonsense"), ("".into(), 0));
    }

    #[test]
    fn a_changed_file_is_named() {
        let mut prev = rec(2, "COPY", "k1", true);
        prev.inputs.insert("src/a.c".into(), "sha256:1".into());
        prev.inputs.insert("src/b.c".into(), "sha256:2".into());
        let mut cur = prev.clone();
        cur.key = "k2".into();
        cur.hit = false;
        cur.inputs.insert("src/a.c".into(), "sha256:9".into());
        cur.inputs.remove("src/b.c");
        cur.inputs.insert("src/c.c".into(), "sha256:3".into());
        let e = explain(&[cur], Some(&[prev]));
        assert_eq!(
            e[0].reason.as_deref(),
            Some("files changed: src/a.c (changed), src/c.c (added), src/b.c (removed)")
        );
    }

    #[test]
    fn env_values_and_moved_bases_are_named() {
        let mut prev = rec(3, "RUN", "k1", true);
        prev.fields.insert("env".into(), "A=1\nB=2".into());
        let mut cur = prev.clone();
        cur.key = "k2".into();
        cur.hit = false;
        cur.fields.insert("env".into(), "A=1\nB=3\nC=4".into());
        let e = explain(&[cur.clone()], Some(&[prev.clone()]));
        assert_eq!(
            e[0].reason.as_deref(),
            Some("environment: B changed: \"2\" -> \"3\", C added (\"4\")")
        );

        let mut base_prev = rec(1, "FROM", "b1", true);
        base_prev.fields.insert("image".into(), "alpine".into());
        base_prev
            .fields
            .insert("digest".into(), "sha256:old".into());
        let mut base_cur = base_prev.clone();
        base_cur.key = "b2".into();
        base_cur.fields.insert("digest".into(), "sha256:new".into());
        let mut cur = prev.clone();
        cur.key = "k3".into();
        cur.hit = false;
        let e = explain(&[base_cur, cur], Some(&[base_prev, prev]));
        assert_eq!(e.len(), 1, "FROM has no line of its own");
        assert_eq!(
            e[0].reason.as_deref(),
            Some(
                "[stage-0 1/3] FROM changed: the base image moved: alpine was sha256:old, is now \
                 sha256:new"
            )
        );
    }

    #[test]
    fn no_history_and_pruned_entries_say_so() {
        let cur = rec(2, "RUN", "k1", false);
        let e = explain(std::slice::from_ref(&cur), None);
        assert!(
            e[0].reason
                .as_deref()
                .unwrap()
                .starts_with("no earlier build")
        );
        let prev = rec(2, "RUN", "k1", true);
        let e = explain(&[cur], Some(&[prev]));
        assert!(e[0].reason.as_deref().unwrap().contains("removed (prune)"));
    }
}
