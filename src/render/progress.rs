//! Build progress: the TTY view (one live line per running step, BuildKit-like: name, elapsed,
//! CACHED or the time when done), plain text for logs and CI, and one JSON object per event.

use std::{
    collections::BTreeMap,
    io::Write,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_builder::exec::Event;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tty,
    Plain,
    Json,
    Quiet,
}

/// Renders build events in one of the modes.
pub struct Progress {
    mode: Mode,
    multi: MultiProgress,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
    ids: Mutex<BTreeMap<String, usize>>,
    next: AtomicUsize,
}

impl Progress {
    pub fn new(mode: Mode) -> Progress {
        let multi = MultiProgress::with_draw_target(match mode {
            Mode::Tty => ProgressDrawTarget::stderr_with_hz(10),
            _ => ProgressDrawTarget::hidden(),
        });
        Progress {
            mode,
            multi,
            bars: Mutex::new(BTreeMap::new()),
            ids: Mutex::new(BTreeMap::new()),
            next: AtomicUsize::new(1),
        }
    }

    fn id(&self, name: &str) -> usize {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        *ids.entry(name.to_string())
            .or_insert_with(|| self.next.fetch_add(1, Ordering::Relaxed))
    }

    pub fn event(&self, e: Event) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Json => {
                let v = match &e {
                    Event::Started { name } => {
                        serde_json::json!({"event": "started", "step": name})
                    }
                    Event::Cached { name } => serde_json::json!({"event": "cached", "step": name}),
                    Event::Done { name, millis } => {
                        serde_json::json!({"event": "done", "step": name, "millis": millis})
                    }
                    Event::Output { name, line } => {
                        serde_json::json!({"event": "output", "step": name, "line": line})
                    }
                    Event::Warning { message } => {
                        serde_json::json!({"event": "warning", "message": message})
                    }
                    Event::Pulling { reference } => {
                        serde_json::json!({"event": "pulling", "image": reference})
                    }
                    Event::Failed { name, message } => {
                        serde_json::json!({"event": "error", "step": name, "message": message})
                    }
                };
                let _ = writeln!(std::io::stderr().lock(), "{v}");
            }
            Mode::Plain => {
                let mut err = std::io::stderr().lock();
                let _ = match e {
                    Event::Started { name } => writeln!(err, "#{} {name}", self.id(&name)),
                    Event::Cached { name } => writeln!(err, "#{} CACHED", self.id(&name)),
                    Event::Done { name, millis } => {
                        writeln!(
                            err,
                            "#{} DONE {:.1}s",
                            self.id(&name),
                            millis as f64 / 1000.0
                        )
                    }
                    Event::Output { name, line } => writeln!(err, "#{} {line}", self.id(&name)),
                    Event::Warning { message } => writeln!(err, "WARNING: {message}"),
                    Event::Pulling { reference } => writeln!(err, "pulling {reference}"),
                    // BuildKit's line for a failed step, which CI log readers look for.
                    Event::Failed { name, message } => {
                        writeln!(err, "#{} ERROR: {message}", self.id(&name))
                    }
                };
            }
            Mode::Tty => {
                let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
                match e {
                    Event::Started { name } => {
                        let bar = self.multi.add(ProgressBar::new_spinner());
                        bar.set_style(
                            ProgressStyle::with_template(" {spinner:.cyan} {msg} {elapsed:.dim}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        bar.set_message(name.clone());
                        bar.enable_steady_tick(Duration::from_millis(100));
                        bars.insert(name, bar);
                    }
                    Event::Cached { name } => {
                        if let Some(bar) = bars.remove(&name) {
                            bar.set_style(plain_style());
                            bar.finish_with_message(format!("✔ {name} CACHED"));
                        }
                    }
                    Event::Done { name, millis } => {
                        if let Some(bar) = bars.remove(&name) {
                            bar.set_style(plain_style());
                            bar.finish_with_message(format!(
                                "✔ {name} {:.1}s",
                                millis as f64 / 1000.0
                            ));
                        }
                    }
                    // The live view stays one line per step; a failure prints the last lines.
                    Event::Output { .. } => {}
                    Event::Warning { message } => {
                        let _ = self.multi.println(format!("WARNING: {message}"));
                    }
                    Event::Pulling { reference } => {
                        let _ = self.multi.println(format!("pulling {reference}"));
                    }
                    // `finish` marks the step's line; the error itself is printed after.
                    Event::Failed { .. } => {}
                }
            }
        }
    }

    /// Stops every live line (a failed step keeps its line, marked).
    pub fn finish(&self) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        for (name, bar) in std::mem::take(&mut *bars) {
            bar.set_style(plain_style());
            bar.abandon_with_message(format!("✘ {name}"));
        }
    }
}

fn plain_style() -> ProgressStyle {
    ProgressStyle::with_template(" {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner())
}
