//! Work spread over a few threads: layers downloaded, uploaded, compressed or unpacked side
//! by side. Scoped threads pulling items off a shared counter, so a slow item never holds up
//! the others; the first error wins and stops new items from starting.

use std::sync::{
    Mutex,
    atomic::{AtomicUsize, Ordering},
};

/// Runs `f` on every item, `jobs` at a time (0: one per core).
pub fn for_each<T: Sync, E: Send>(
    items: &[T],
    jobs: usize,
    f: impl Fn(&T) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let jobs = if jobs == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        jobs
    }
    .min(items.len());
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<E>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if failure.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                        return;
                    }
                    if let Err(e) = f(item) {
                        failure
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_once_and_the_error_comes_back() {
        let seen = Mutex::new(Vec::new());
        let items: Vec<u32> = (0..50).collect();
        for_each(&items, 3, |&i| {
            seen.lock().unwrap_or_else(|p| p.into_inner()).push(i);
            Ok::<(), ()>(())
        })
        .unwrap_or_else(|()| panic!("no error expected"));
        let mut seen = seen.into_inner().unwrap_or_else(|p| p.into_inner());
        seen.sort_unstable();
        assert_eq!(seen, items);
        let r = for_each(&items, 0, |&i| if i == 7 { Err(i) } else { Ok(()) });
        assert_eq!(r, Err(7));
        assert_eq!(for_each(&[] as &[u32], 4, |_| Err(1)), Ok(()));
    }
}
