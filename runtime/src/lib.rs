//! kiln-runtime: the image store, layer unpack/diff, registry client and the namespace sandbox.
//!
//! [`store`] (content-addressed blobs, tags, metadata, load/save, verify, prune), [`oci`]
//! (image config, manifest and index documents), [`layer`], [`sandbox`] and [`container`]. It
//! never depends on Dockerfile concepts: `runtime` knows nothing of parsers.

pub mod binfmt;
pub mod bounded;
pub mod container;
pub mod digest;
pub mod inplace;
pub mod layer;
pub mod network;
pub mod oci;
pub mod parallel;
pub mod procid;
pub mod reference;
pub mod registry;
pub mod sandbox;
pub mod store;
pub mod system;
pub mod timefmt;

#[doc(hidden)]
pub mod kxt {
    use std::sync::Mutex;
    pub static T: Mutex<Vec<(&'static str, std::time::Instant, i64)>> = Mutex::new(Vec::new());
    pub fn mark(n: &'static str) {
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
        if let Ok(mut v) = T.lock() {
            v.push((n, std::time::Instant::now(), ru.ru_minflt));
        }
    }
    pub fn dump() {
        if std::env::var_os("KXT").is_none() {
            return;
        }
        if let Ok(v) = T.lock() {
            let mut s = String::new();
            for w in v.windows(2) {
                s += &format!(
                    "{}={:.0} {}.f={} ",
                    w[1].0,
                    (w[1].1 - w[0].1).as_secs_f64() * 1e6,
                    w[1].0,
                    w[1].2 - w[0].2
                );
            }
            eprintln!("KXT {s}");
        }
    }
}
