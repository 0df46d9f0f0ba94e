//! Cache keys: one pure, documented function over length-prefixed fields, the step's definition
//! hashed apart from its inputs' content digests (as BuildKit's `CacheMap`).
//!
//! `CacheKey::for_step(parent, step, inputs)` is the only way to make a step's key. It is a pure
//! function: sha256 over a fixed domain tag and length-prefixed fields, so no two different
//! field lists can produce the same byte stream. The op's definition ([`Step`]: its kind and
//! canonical fields, in sorted order) is hashed apart from the content digests of its inputs
//! (files selected from the context, another stage's result), exactly as BuildKit separates an
//! op's digest from its inputs' content. What never enters a key: file mtimes, proxy variables,
//! cache-mount ids and sharing modes, secret values.

use std::collections::BTreeMap;

use kiln_runtime::digest::Digest;
use sha2::{Digest as _, Sha256};

/// A step's definition in canonical form: its kind (`COPY`, `RUN`, ...) and named fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    pub kind: String,
    /// Field name → value; sorted by the map.
    pub fields: BTreeMap<String, String>,
}

impl Step {
    pub fn new(kind: &str) -> Step {
        Step {
            kind: kind.to_string(),
            fields: BTreeMap::new(),
        }
    }

    /// Adds a field (builder style).
    pub fn field(mut self, name: &str, value: impl Into<String>) -> Step {
        self.fields.insert(name.to_string(), value.into());
        self
    }
}

/// A cache key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CacheKey(pub Digest);

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Every key's first field. v2: COPY, ADD and WORKDIR layers carry the directories they write
/// into with the stage's metadata (v1 layers made them 0755 root:root), so no v1 entry is
/// reused.
const DOMAIN: &[u8] = b"kiln.cache.v2";

fn put(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

impl CacheKey {
    /// The key of a stage's starting point: `scratch`, or an image by its manifest digest
    /// (never by tag: a moved tag must miss).
    pub fn for_base(base: &str) -> CacheKey {
        let mut h = Sha256::new();
        put(&mut h, DOMAIN);
        put(&mut h, b"base");
        put(&mut h, base.as_bytes());
        CacheKey(Digest::from_sha256(h))
    }

    /// The key of `step` applied on top of `parent` (`None` for a step that does not depend on
    /// the state before it, such as `COPY --link`), with the content digests of its inputs.
    pub fn for_step(
        parent: Option<&CacheKey>,
        step: &Step,
        inputs: &BTreeMap<String, Digest>,
    ) -> CacheKey {
        let mut h = Sha256::new();
        put(&mut h, DOMAIN);
        put(&mut h, b"step");
        put(
            &mut h,
            parent
                .map(|p| p.0.to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
        // The definition...
        put(&mut h, step.kind.as_bytes());
        h.update((step.fields.len() as u64).to_le_bytes());
        for (k, v) in &step.fields {
            put(&mut h, k.as_bytes());
            put(&mut h, v.as_bytes());
        }
        // ...then the inputs' content, apart.
        h.update((inputs.len() as u64).to_le_bytes());
        for (name, d) in inputs {
            put(&mut h, name.as_bytes());
            put(&mut h, d.to_string().as_bytes());
        }
        CacheKey(Digest::from_sha256(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_step() -> Step {
        Step::new("COPY")
            .field("src", "app.py")
            .field("dest", "/srv/app.py")
    }

    #[test]
    fn pinned_digests() {
        // Literal digests: changing the key function invalidates every
        // cache; it must be deliberate, and these literals change with it. Both were recomputed
        // independently from the documented encoding (length-prefixed fields, u64 LE lengths).
        let base = CacheKey::for_base("scratch");
        assert_eq!(
            base.to_string(),
            "sha256:1be9265b59fde28240959e1174de031e1dc58d2450ecd7d6774e17bf7637a6d1"
        );
        let inputs = BTreeMap::from([("app.py".to_string(), Digest::of(b"print(1)\n"))]);
        let k = CacheKey::for_step(Some(&base), &copy_step(), &inputs);
        assert_eq!(
            k.to_string(),
            "sha256:fb33103b31d1f0342c3ba76900c57fd7ede721d5240b326a6e8cf75cabb0124f"
        );
    }

    #[test]
    fn every_part_matters_and_boundaries_are_unambiguous() {
        let base = CacheKey::for_base("scratch");
        let inputs = BTreeMap::from([("app.py".to_string(), Digest::of(b"print(1)\n"))]);
        let k = CacheKey::for_step(Some(&base), &copy_step(), &inputs);
        let other_content = BTreeMap::from([("app.py".to_string(), Digest::of(b"print(2)\n"))]);
        assert_ne!(
            k,
            CacheKey::for_step(Some(&base), &copy_step(), &other_content)
        );
        assert_ne!(k, CacheKey::for_step(None, &copy_step(), &inputs));
        assert_ne!(
            k,
            CacheKey::for_step(Some(&CacheKey::for_base("sha256:x")), &copy_step(), &inputs)
        );
        assert_ne!(
            k,
            CacheKey::for_step(Some(&base), &copy_step().field("chmod", "755"), &inputs)
        );
        // Moving text between a field name and its value changes the key.
        let a = Step::new("X").field("ab", "c");
        let b = Step::new("X").field("a", "bc");
        let none = BTreeMap::new();
        assert_ne!(
            CacheKey::for_step(None, &a, &none),
            CacheKey::for_step(None, &b, &none)
        );
        // Same inputs in any insertion order: same key.
        let s1 = Step::new("X").field("a", "1").field("b", "2");
        let s2 = Step::new("X").field("b", "2").field("a", "1");
        assert_eq!(
            CacheKey::for_step(None, &s1, &none),
            CacheKey::for_step(None, &s2, &none)
        );
    }
}
