//! The store under concurrent use and after interrupted writes.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use kiln_runtime::{digest::Digest, store::Store};

#[test]
fn blobs_round_trip_and_are_verified() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let d = store.put_blob(b"hello").unwrap();
    assert_eq!(d, Digest::of(b"hello"));
    assert_eq!(store.read_blob(&d).unwrap(), b"hello");
    // Storing again is a no-op; the content is unchanged.
    assert_eq!(store.put_blob(b"hello").unwrap(), d);
    // A blob altered on disk is detected, not served.
    std::fs::write(store.blob_path(&d), b"tampered").unwrap();
    let err = store.read_blob(&d).unwrap_err().to_string();
    assert!(err.contains("wrong content"), "{err}");
    let missing = Digest::of(b"absent");
    assert!(
        store
            .read_blob(&missing)
            .unwrap_err()
            .to_string()
            .contains("not in the store")
    );
}

#[test]
fn no_partial_blob_is_ever_visible() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // A reader that fails half-way (as a killed writer would) leaves nothing in blobs/.
    struct Failing(usize);
    impl std::io::Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("interrupted"));
            }
            self.0 -= 1;
            buf[0] = b'x';
            Ok(1)
        }
    }
    assert!(store.put_blob_from(Failing(100)).is_err());
    let blobs: Vec<_> = std::fs::read_dir(dir.path().join("blobs/sha256"))
        .unwrap()
        .collect();
    assert!(blobs.is_empty(), "{blobs:?}");
    let tmp: Vec<_> = std::fs::read_dir(dir.path().join("tmp")).unwrap().collect();
    assert!(
        tmp.is_empty(),
        "the failed write's temporary file was not removed"
    );
}

#[test]
fn concurrent_stores_share_blobs_and_tags() {
    let dir = tempfile::tempdir().unwrap();
    // Each thread opens its own store (its own SQLite connection), as separate kiln processes do.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let root = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let store = Store::open(&root).unwrap();
                for i in 0..50 {
                    let shared = store.put_blob(format!("shared-{i}").as_bytes()).unwrap();
                    let own = store.put_blob(format!("own-{t}-{i}").as_bytes()).unwrap();
                    store.set_tag(&format!("app{t}:v{i}"), &own).unwrap();
                    store.set_tag("shared:latest", &shared).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let tags = store.tags().unwrap();
    assert_eq!(tags.len(), 4 * 50 + 1);
    for t in 0..4 {
        for i in 0..50 {
            let d = store.resolve_tag(&format!("app{t}:v{i}")).unwrap().unwrap();
            assert_eq!(
                store.read_blob(&d).unwrap(),
                format!("own-{t}-{i}").as_bytes()
            );
        }
    }
    let shared = store.resolve_tag("shared").unwrap().unwrap();
    assert!(store.read_blob(&shared).unwrap().starts_with(b"shared-"));
    assert!(store.remove_tag("shared").unwrap());
    assert!(!store.remove_tag("shared").unwrap());
    assert_eq!(store.resolve_tag("shared").unwrap(), None);
}
