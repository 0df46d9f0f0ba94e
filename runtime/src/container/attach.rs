//! `kiln attach`: a detached container's output as it comes, and (`-i`) its input, through a
//! unix socket its monitor listens on (`containers/ID/attach.sock`, mode 0600: root's only),
//! as conmon's attach socket. The monitor copies every chunk the container writes to each
//! attached client as it goes to the log; a client's keystrokes go to the container's
//! terminal (`-t`) or stdin pipe (`-i`), and its window size to the terminal.
//!
//! Frames, monitor to client: `[stream: 1 stdout | 2 stderr][len: u32 BE][bytes]`. Client to
//! monitor: `[kind: 0 input | 1 window size (rows, cols: u16 BE) | 2 end of input][len: u16
//! BE][bytes]`. A client that cannot keep up is dropped: the container never waits for one.

use super::ContainerError;
use crate::store::Store;
use std::{
    io::{Read, Write},
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

/// The socket's name in a container's directory.
pub const SOCKET: &str = "attach.sock";

/// The path to bind or connect to for the socket in `dir`: through a descriptor of the
/// directory, so a long store path does not pass the 108 bytes a socket address holds.
fn short_path(dir: &Path) -> std::io::Result<(OwnedFd, PathBuf)> {
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let path = PathBuf::from(format!("/proc/self/fd/{}/{SOCKET}", fd.as_raw_fd()));
    Ok((fd, path))
}

/// What the monitor shares between the container and its attached clients.
#[derive(Debug, Default)]
pub struct Hub {
    /// Each client's queue of frames, written by a thread of its own.
    clients: Mutex<Vec<std::sync::mpsc::SyncSender<Vec<u8>>>>,
    /// Where clients' input goes: the terminal's master, or the write end of stdin's pipe.
    input: Mutex<Option<std::fs::File>>,
    /// The terminal, for window sizes.
    terminal: Mutex<Option<OwnedFd>>,
}

impl Hub {
    /// Listens on `dir/attach.sock` and serves clients from a thread of its own.
    pub fn listen(dir: &Path) -> std::io::Result<Arc<Hub>> {
        let (_dir, path) = short_path(dir)?;
        let _ = std::fs::remove_file(&path);
        // Created as root's alone: the umask would leave it to others.
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let hub = Arc::new(Hub::default());
        let served = hub.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let hub = served.clone();
                std::thread::spawn(move || hub.serve(client));
            }
        });
        Ok(hub)
    }

    /// Reads one client's frames until it goes.
    fn serve(&self, client: UnixStream) {
        let Ok(mut writer) = client.try_clone() else {
            return;
        };
        let mut reader = client;
        // Output goes through a bounded queue to a writer thread: a client that cannot keep up
        // is dropped once its queue is full, and the container never waits for it.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(256);
        std::thread::spawn(move || {
            for frame in rx {
                if writer.write_all(&frame).is_err() {
                    break;
                }
            }
            let _ = writer.shutdown(std::net::Shutdown::Both);
        });
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        let mut head = [0u8; 3];
        while reader.read_exact(&mut head).is_ok() {
            let len = usize::from(u16::from_be_bytes([head[1], head[2]]));
            let mut data = vec![0u8; len];
            if reader.read_exact(&mut data).is_err() {
                break;
            }
            match head[0] {
                0 => {
                    if let Some(w) = self
                        .input
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_mut()
                    {
                        let _ = w.write_all(&data);
                    }
                }
                1 if data.len() == 4 => {
                    if let Some(t) = self
                        .terminal
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_ref()
                    {
                        let size = rustix::termios::Winsize {
                            ws_row: u16::from_be_bytes([data[0], data[1]]),
                            ws_col: u16::from_be_bytes([data[2], data[3]]),
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        let _ = rustix::termios::tcsetwinsize(t, size);
                    }
                }
                // End of input: a stdin pipe is closed (a terminal has no end).
                2 => {
                    let mut input = self.input.lock().unwrap_or_else(|p| p.into_inner());
                    if self
                        .terminal
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .is_none()
                    {
                        input.take();
                    }
                }
                _ => {}
            }
        }
    }

    /// Sends `data` the container wrote on `stream` (1 stdout, 2 stderr) to every client.
    pub fn broadcast(&self, stream: u8, data: &[u8]) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.is_empty() {
            return;
        }
        let mut frame = Vec::with_capacity(5 + data.len());
        frame.push(stream);
        frame.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
        frame.extend_from_slice(data);
        clients.retain(|c| c.try_send(frame.clone()).is_ok());
    }

    /// Where input goes from now on (a new run of the container gets new ones).
    pub fn set_input(&self, input: Option<std::fs::File>, terminal: Option<OwnedFd>) {
        *self.input.lock().unwrap_or_else(|p| p.into_inner()) = input;
        *self.terminal.lock().unwrap_or_else(|p| p.into_inner()) = terminal;
    }

    /// The container is gone for good: every client sees the end of the stream.
    pub fn close(&self, dir: &Path) {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.set_input(None, None);
        let _ = std::fs::remove_file(dir.join(SOCKET));
    }
}

/// A reader that also hands what it reads to the hub (a container's stdout or stderr pipe, or
/// its terminal's output, on its way to the log).
#[derive(Debug)]
pub struct TeeReader<R> {
    pub inner: R,
    pub hub: Arc<Hub>,
    pub stream: u8,
}

impl<R: Read> Read for TeeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hub.broadcast(self.stream, &buf[..n]);
        Ok(n)
    }
}

/// The client's side: a connection to container `id`'s monitor.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Connects to the monitor of container `id` in `store_root`.
    pub fn connect(store_root: &Path, id: &str) -> std::io::Result<Client> {
        let (_dir, path) = short_path(&store_root.join("containers").join(id))?;
        Ok(Client {
            stream: UnixStream::connect(path)?,
        })
    }

    /// A writer of client frames (another thread's).
    pub fn sender(&self) -> std::io::Result<Sender> {
        Ok(Sender(self.stream.try_clone()?))
    }

    /// The next chunk of output: (stream, bytes); `None` at the end.
    pub fn next_chunk(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; 5];
        self.stream.read_exact(&mut head).ok()?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut data = vec![0u8; len];
        self.stream.read_exact(&mut data).ok()?;
        Some((head[0], data))
    }
}

/// Sends a client's frames.
#[derive(Debug)]
pub struct Sender(UnixStream);

impl Sender {
    fn frame(&mut self, kind: u8, data: &[u8]) -> std::io::Result<()> {
        for chunk in data.chunks(usize::from(u16::MAX)) {
            let mut f = vec![kind];
            f.extend_from_slice(&u16::try_from(chunk.len()).unwrap_or(0).to_be_bytes());
            f.extend_from_slice(chunk);
            self.0.write_all(&f)?;
        }
        if data.is_empty() {
            self.0.write_all(&[kind, 0, 0])?;
        }
        Ok(())
    }

    pub fn input(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.frame(0, data)
    }

    pub fn window(&mut self, rows: u16, cols: u16) -> std::io::Result<()> {
        let mut d = rows.to_be_bytes().to_vec();
        d.extend_from_slice(&cols.to_be_bytes());
        self.frame(1, &d)
    }

    pub fn end_input(&mut self) -> std::io::Result<()> {
        self.frame(2, &[])
    }
}

/// `kiln attach`: the container's output from now on and, when it was started with `-i` and
/// `stdin` is set, the input typed here, until it ends (its exit code is returned) or the
/// `keys` are typed (this process exits 0 at once, its terminal restored; the container runs
/// on).
pub fn attach(
    store: &Store,
    what: &str,
    stdin_wanted: bool,
    keys: &[u8],
) -> Result<i32, ContainerError> {
    use std::{io::IsTerminal, os::fd::AsFd};
    let keys = keys.to_vec();
    let c = store
        .find_container(what)?
        .ok_or_else(|| ContainerError::Config(format!("no such container: {what}")))?;
    if !c.state().is_live() {
        return Err(ContainerError::Config(
            "you cannot attach to a stopped container, start it first".into(),
        ));
    }
    let opts = super::kept_options(store, &c.id).unwrap_or_default();
    let cannot = |e: std::io::Error| {
        ContainerError::Config(format!(
            "cannot attach to {}: {e} (was it started with kiln run -d?)",
            c.name
        ))
    };
    let mut client = Client::connect(store.root(), &c.id).map_err(cannot)?;
    let stdin = std::io::stdin();
    let typing = stdin_wanted && opts.interactive;
    // With a terminal on both sides, keystrokes go through raw, as docker's.
    let raw: Arc<Mutex<Option<super::tty::RawMode>>> = Arc::new(Mutex::new(
        (opts.tty && typing && stdin.is_terminal())
            .then(|| stdin.as_fd().try_clone_to_owned().ok())
            .flatten()
            .and_then(|fd| super::tty::RawMode::enter(&fd)),
    ));
    if opts.tty {
        let out = std::io::stdout();
        if let Ok(fd) = out.as_fd().try_clone_to_owned() {
            let mut sender = client.sender().map_err(cannot)?;
            let send = move |sender: &mut Sender| {
                if let Ok(size) = rustix::termios::tcgetwinsize(&fd) {
                    let _ = sender.window(size.ws_row, size.ws_col);
                }
            };
            send(&mut sender);
            if let Ok(mut signals) =
                signal_hook::iterator::Signals::new([signal_hook::consts::SIGWINCH])
            {
                std::thread::spawn(move || {
                    for _ in signals.forever() {
                        send(&mut sender);
                    }
                });
            }
        }
    }
    if typing {
        let mut sender = client.sender().map_err(cannot)?;
        let raw = raw.clone();
        std::thread::spawn(move || {
            let mut input = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            let mut matched = 0;
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = sender.end_input();
                        return;
                    }
                    Ok(n) => n,
                };
                let mut out = Vec::with_capacity(n);
                for &b in &buf[..n] {
                    if !keys.is_empty() && b == keys[matched] {
                        matched += 1;
                        if matched == keys.len() {
                            let _ = sender.input(&out);
                            // Detached: the terminal restored, the container runs on.
                            raw.lock().unwrap_or_else(|p| p.into_inner()).take();
                            std::process::exit(0);
                        }
                        continue;
                    }
                    // A partial match that did not go on: those keys were meant as input.
                    out.extend_from_slice(&keys[..matched]);
                    matched = 0;
                    out.push(b);
                }
                if sender.input(&out).is_err() {
                    return;
                }
            }
        });
    }
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some((stream, data)) = client.next_chunk() {
        let w: &mut dyn Write = if stream == 2 { &mut err } else { &mut out };
        let _ = w.write_all(&data);
        let _ = w.flush();
    }
    raw.lock().unwrap_or_else(|p| p.into_inner()).take();
    super::control::wait(store, &c.id)
}

/// docker's `--detach-keys` (`ctrl-p,ctrl-q` by default): the bytes that detach a client.
pub fn detach_keys(spec: &str) -> Result<Vec<u8>, String> {
    spec.split(',')
        .map(|k| {
            let k = k.trim();
            match k.strip_prefix("ctrl-") {
                Some(c) if c.len() == 1 => {
                    let b = c.as_bytes()[0].to_ascii_lowercase();
                    match b {
                        b'a'..=b'z' => Ok(b - b'a' + 1),
                        b'@' => Ok(0),
                        b'[' => Ok(27),
                        b'\\' => Ok(28),
                        b']' => Ok(29),
                        b'^' => Ok(30),
                        b'_' => Ok(31),
                        _ => Err(format!("--detach-keys {spec}: unknown key {k:?}")),
                    }
                }
                None if k.len() == 1 => Ok(k.as_bytes()[0]),
                _ => Err(format!("--detach-keys {spec}: unknown key {k:?}")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn dockers_detach_keys() {
        assert_eq!(super::detach_keys("ctrl-p,ctrl-q"), Ok(vec![16, 17]));
        assert_eq!(super::detach_keys("ctrl-a,x"), Ok(vec![1, b'x']));
        assert!(super::detach_keys("ctrl-ab").is_err());
    }
}
