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

/// Appends entries to a container's log; shared by the stdout and stderr readers.
#[derive(Debug, Clone)]
pub struct Writer(Arc<Mutex<std::fs::File>>);

impl Writer {
    /// Opens (creating) the log at `path`, mode 0640 as docker's.
    pub fn open(path: &Path) -> std::io::Result<Writer> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)?;
        Ok(Writer(Arc::new(Mutex::new(f))))
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
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&line)
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
    let (mut entries, mut offset) = read_from(&path, 0).map_err(io)?;
    if let Some(n) = tail {
        entries.drain(..entries.len().saturating_sub(n));
    }
    out(entries);
    if !follow {
        return Ok(());
    }
    loop {
        // Whether it ran before reading: what it wrote before ending is in the file then.
        let running = store
            .find_container(id)?
            .is_some_and(|c| c.state() == crate::store::ContainerState::Running);
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
    fn lines_in_docker_json_file_form() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c-json.log");
        let w = Writer::open(&p).unwrap();
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
