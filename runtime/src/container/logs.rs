//! A detached container's output, kept as docker's `json-file` driver keeps it, so tools that
//! read those files work: `containers/<id>/<id>-json.log`, one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"2026-11-29T03:12:00.123456789Z"}`. A line longer
//! than 16 KiB is split as docker splits it (the pieces without their `\n`).

use std::{
    io::{BufRead, BufReader, Read, Seek, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

/// docker's longest log message: longer lines are split.
const MAX_LINE: usize = 16 * 1024;

/// The log file of container `id` under the store root.
pub fn path(root: &Path, id: &str) -> PathBuf {
    root.join("containers")
        .join(id)
        .join(format!("{id}-json.log"))
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// docker's `--log-opt max-size=` and `max-file=`: the log is rotated once it passes
/// `max_size` bytes, keeping `max_file` files in all (the current one included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rotation {
    pub max_size: u64,
    pub max_file: usize,
}

/// The open log: its file, its size, where it is and how it rotates.
#[derive(Debug)]
struct Open {
    file: std::fs::File,
    size: u64,
    path: PathBuf,
    rotation: Option<Rotation>,
}

/// Appends entries to a container's log; shared by the stdout and stderr readers.
#[derive(Debug, Clone)]
pub struct Writer(Arc<Mutex<Open>>);

fn create(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// The rotated file `n` of the log at `path` (`ID-json.log.1` the newest).
fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

impl Writer {
    /// Opens (creating) the log at `path`, mode 0640 as docker's; rotated as `rotation` says
    /// (unbounded without one, as docker's default).
    pub fn open(path: &Path, rotation: Option<Rotation>) -> std::io::Result<Writer> {
        let file = create(path)?;
        let size = file.metadata()?.len();
        Ok(Writer(Arc::new(Mutex::new(Open {
            file,
            size,
            path: path.to_path_buf(),
            rotation,
        }))))
    }

    fn put(&self, stream: &str, text: &[u8]) -> std::io::Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let e = Entry {
            log: String::from_utf8_lossy(text).into_owned(),
            stream: stream.to_string(),
            time: crate::timefmt::rfc3339_nanos(now.as_secs() as i64, now.subsec_nanos()),
        };
        let mut line = serde_json::to_vec(&e).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // One write per entry under the lock: the two streams never interleave within a line.
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = open.rotation {
            if open.size > 0 && open.size + line.len() as u64 > r.max_size {
                // The oldest goes; each other moves one up; the current becomes `.1`.
                let _ = std::fs::remove_file(rotated(&open.path, r.max_file.max(1) - 1));
                for n in (1..r.max_file.max(1) - 1).rev() {
                    let _ = std::fs::rename(rotated(&open.path, n), rotated(&open.path, n + 1));
                }
                if r.max_file > 1 {
                    std::fs::rename(&open.path, rotated(&open.path, 1))?;
                } else {
                    std::fs::remove_file(&open.path)?;
                }
                open.file = create(&open.path)?;
                open.size = 0;
            }
        }
        open.file.write_all(&line)?;
        open.size += line.len() as u64;
        Ok(())
    }

    /// Copies `r` (a container's stdout or stderr) into the log, a line per entry, until it
    /// ends.
    pub fn capture(&self, r: impl Read, stream: &str) -> std::io::Result<()> {
        let mut r = BufReader::with_capacity(64 * 1024, r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = (&mut r).take(MAX_LINE as u64).read_until(b'\n', &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            self.put(stream, &buf)?;
        }
    }
}

/// Reads the entries of the log at `path` from byte `offset`; returns them and the offset after
/// the last whole line (a line being written is left for the next read).
pub fn read_from(path: &Path, offset: u64) -> std::io::Result<(Vec<Entry>, u64)> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(e),
    };
    f.seek(std::io::SeekFrom::Start(offset))?;
    let mut r = BufReader::new(f);
    let mut out = Vec::new();
    let mut pos = offset;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok((out, pos));
        }
        pos += n as u64;
        if let Ok(e) = serde_json::from_slice::<Entry>(&line) {
            out.push(e);
        }
    }
}

/// `kiln logs`: hands `out` the container's entries (the last `tail` when given), then, when
/// `follow`, what it writes later, until it has ended and all is read.
pub fn show(
    store: &crate::store::Store,
    id: &str,
    tail: Option<usize>,
    follow: bool,
    mut out: impl FnMut(Vec<Entry>),
) -> Result<(), crate::store::StoreError> {
    let path = path(store.root(), id);
    let io = |e| crate::store::StoreError::Io {
        path: path.clone(),
        source: e,
    };
    // Rotated files first, oldest first, then the current one.
    let mut entries = Vec::new();
    let mut n = 1;
    let mut older = Vec::new();
    while rotated(&path, n).exists() {
        older.push(rotated(&path, n));
        n += 1;
    }
    for p in older.iter().rev() {
        entries.extend(read_from(p, 0).map_err(io)?.0);
    }
    let (current, offset) = read_from(&path, 0).map_err(io)?;
    entries.extend(current);
    if let Some(n) = tail {
        entries.drain(..entries.len().saturating_sub(n));
    }
    out(entries);
    if !follow {
        return Ok(());
    }
    follow_from(store, id, offset, out)
}

/// Hands `out` what container `id` writes to its log past byte `offset`, until it has ended
/// (restarts included) and all is read.
pub fn follow_from(
    store: &crate::store::Store,
    id: &str,
    mut offset: u64,
    mut out: impl FnMut(Vec<Entry>),
) -> Result<(), crate::store::StoreError> {
    let path = path(store.root(), id);
    let io = |e| crate::store::StoreError::Io {
        path: path.clone(),
        source: e,
    };
    loop {
        // Whether it ran before reading: what it wrote before ending is in the file then.
        let running = store
            .find_container(id)?
            .is_some_and(|c| c.state().is_live());
        // Rotated meanwhile: the rest of the old file is `.1` now; the new file from its start.
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        if len < offset {
            out(read_from(&rotated(&path, 1), offset).map_err(io)?.0);
            offset = 0;
        }
        let (more, next) = read_from(&path, offset).map_err(io)?;
        offset = next;
        out(more);
        if !running {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_bounds_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c-json.log");
        let rotation = Rotation {
            max_size: 2000,
            max_file: 3,
        };
        let w = Writer::open(&p, Some(rotation)).unwrap();
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        w.capture(text.as_bytes(), "stdout").unwrap();
        let files: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 3, "{files:?}");
        for f in &files {
            assert!(std::fs::metadata(f).unwrap().len() <= 2000, "{f:?}");
        }
        // The newest lines are kept, in order across the files.
        let mut all = Vec::new();
        for f in [rotated(&p, 2), rotated(&p, 1), p.clone()] {
            all.extend(read_from(&f, 0).unwrap().0);
        }
        assert_eq!(all.last().unwrap().log, "line 999\n");
        let nums: Vec<u32> = all
            .iter()
            .map(|e| e.log.trim().trim_start_matches("line ").parse().unwrap())
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
        // One file: truncated in place, as docker's max-file=1.
        let one = dir.path().join("one-json.log");
        let w = Writer::open(
            &one,
            Some(Rotation {
                max_size: 500,
                max_file: 1,
            }),
        )
        .unwrap();
        w.capture(text.as_bytes(), "stdout").unwrap();
        assert!(std::fs::metadata(&one).unwrap().len() <= 500);
        assert!(!rotated(&one, 1).exists());
    }

    #[test]
    fn lines_in_docker_json_file_form() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c-json.log");
        let w = Writer::open(&p, None).unwrap();
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("one\ntwo\n{long}\nno newline");
        w.capture(input.as_bytes(), "stdout").unwrap();
        w.capture(&b"err\n"[..], "stderr").unwrap();
        let (entries, end) = read_from(&p, 0).unwrap();
        let logs: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e.log.as_str(), e.stream.as_str()))
            .collect();
        assert_eq!(logs[0], ("one\n", "stdout"));
        assert_eq!(logs[1], ("two\n", "stdout"));
        assert_eq!(logs[2].0.len(), MAX_LINE, "split as docker splits");
        assert_eq!(logs[3].0, "x".repeat(10) + "\n");
        assert_eq!(logs[4], ("no newline", "stdout"));
        assert_eq!(logs[5], ("err\n", "stderr"));
        assert!(entries[0].time.ends_with('Z') && entries[0].time.contains('T'));
        assert_eq!(end, std::fs::metadata(&p).unwrap().len());
        // A partial line is left for the next read.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"log\":\"half")
            .unwrap();
        let (more, end2) = read_from(&p, end).unwrap();
        assert!(more.is_empty());
        assert_eq!(end2, end);
    }
}
