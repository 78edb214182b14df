//! Progress of long runs on stderr: one [`Progress`] per loop, with an ETA.
//!
//! Experiments run for minutes to hours; results go to stdout and JSON files, progress to stderr
//! only, so piping or parsing the results never sees it. What is drawn depends on the process-wide
//! [`ProgressMode`] (set once by the command line, e.g. `--quiet`):
//! - [`ProgressMode::Auto`] (default): an indicatif bar when stderr is a terminal, nothing
//!   otherwise (a redirected log stays clean);
//! - [`ProgressMode::Always`] draws the bar on a terminal, and plain lines `label: 3/10 (30%), 12s
//!   elapsed, ETA 28s` at most every few seconds when stderr is a file or pipe (long runs under
//!   `nohup`);
//! - [`ProgressMode::Never`] draws nothing.
//!
//! Use from an experiment: one bar per loop over work items of similar cost, then
//! [`Progress::inc`] after each:
//! ```
//! use icl_experiments::Progress;
//! let items = ["antonym", "capital"];
//! let bar = Progress::new("baseline", items.len() as u64);
//! for item in items {
//!     bar.set_message(item);
//!     // ... run the item ...
//!     bar.log(format!("{item}: done")); // a line that does not tear the bar
//!     bar.inc(1);
//! }
//! bar.finish();
//! ```
//! A [`crate::Probe`] given a bar ([`crate::Probe::with_progress`]) also reports its forward
//! passes in the bar's message (prompts run and prompts per second).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// When progress is drawn (process-wide; see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, nothing otherwise.
    #[default]
    Auto,
    /// A bar on a terminal, periodic plain lines otherwise.
    Always,
    /// Nothing.
    Never,
}

static MODE: AtomicU8 = AtomicU8::new(0);

/// Set the process-wide mode (the command line does this once, before any bar is made).
pub fn set_progress_mode(mode: ProgressMode) {
    let v = match mode {
        ProgressMode::Auto => 0,
        ProgressMode::Always => 1,
        ProgressMode::Never => 2,
    };
    MODE.store(v, Ordering::Relaxed);
}

/// The process-wide mode.
pub fn progress_mode() -> ProgressMode {
    match MODE.load(Ordering::Relaxed) {
        1 => ProgressMode::Always,
        2 => ProgressMode::Never,
        _ => ProgressMode::Auto,
    }
}

/// How often plain (non-terminal) progress lines are written at most.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// How a bar is shown.
enum Sink {
    Bar(ProgressBar),
    /// Plain lines on a non-terminal stderr; the time of the last one.
    Plain(Mutex<Option<Instant>>),
    Hidden,
}

/// One progress display over `total` work items (see the module docs). Cheap to update from
/// anywhere (`&self`, thread-safe); finished on [`Progress::finish`] or when dropped.
pub struct Progress {
    sink: Sink,
    label: String,
    total: u64,
    pos: AtomicU64,
    prompts: AtomicU64,
    start: Instant,
    message: Mutex<String>,
}

impl Progress {
    /// A bar named `label` over `total` items, drawn as the current [`ProgressMode`] says.
    pub fn new(label: impl Into<String>, total: u64) -> Self {
        Self::with_mode(
            label,
            total,
            progress_mode(),
            std::io::stderr().is_terminal(),
        )
    }

    /// A bar that draws nothing (for library calls that want no output).
    pub fn hidden() -> Self {
        Self::with_mode("", 0, ProgressMode::Never, false)
    }

    fn with_mode(label: impl Into<String>, total: u64, mode: ProgressMode, tty: bool) -> Self {
        let label = label.into();
        let sink = match (mode, tty) {
            (ProgressMode::Never, _) | (ProgressMode::Auto, false) => Sink::Hidden,
            (_, true) => {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} ETA {eta} {msg}",
                )
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.set_style(style);
                bar.set_prefix(label.clone());
                bar.enable_steady_tick(Duration::from_millis(500));
                Sink::Bar(bar)
            }
            (ProgressMode::Always, false) => Sink::Plain(Mutex::new(None)),
        };
        Self {
            sink,
            label,
            total,
            pos: AtomicU64::new(0),
            prompts: AtomicU64::new(0),
            start: Instant::now(),
            message: Mutex::new(String::new()),
        }
    }

    /// Whether anything is drawn.
    pub fn is_hidden(&self) -> bool {
        matches!(self.sink, Sink::Hidden)
    }

    /// Items done so far.
    pub fn position(&self) -> u64 {
        self.pos.load(Ordering::Relaxed)
    }

    /// `n` more items are done.
    pub fn inc(&self, n: u64) {
        let pos = self.pos.fetch_add(n, Ordering::Relaxed) + n;
        match &self.sink {
            Sink::Bar(b) => b.set_position(pos),
            Sink::Plain(last) => self.plain_line(last, pos >= self.total),
            Sink::Hidden => {}
        }
    }

    /// What is being worked on (shown after the bar).
    pub fn set_message(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if let Ok(mut m) = self.message.lock() {
            *m = msg.clone();
        }
        if let Sink::Bar(b) = &self.sink {
            b.set_message(self.full_message(msg));
        }
    }

    /// `n` more prompts went through the model (shown as a count and a rate in the message).
    pub fn add_prompts(&self, n: u64) {
        self.prompts.fetch_add(n, Ordering::Relaxed);
        if let Sink::Bar(b) = &self.sink {
            let msg = self.message.lock().map(|m| m.clone()).unwrap_or_default();
            b.set_message(self.full_message(msg));
        }
    }

    fn full_message(&self, msg: String) -> String {
        let prompts = self.prompts.load(Ordering::Relaxed);
        if prompts == 0 {
            return msg;
        }
        let rate = prompts as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        format!("{msg} ({prompts} prompts, {rate:.1}/s)")
    }

    /// A line on stderr above the bar (or plainly when there is no bar). Shown even when the bar
    /// is hidden by [`ProgressMode::Auto`] (a log line is not progress); suppressed only by
    /// [`ProgressMode::Never`] (`--quiet`).
    pub fn log(&self, line: impl AsRef<str>) {
        match &self.sink {
            Sink::Bar(b) => b.suspend(|| eprintln!("{}", line.as_ref())),
            _ if progress_mode() == ProgressMode::Never => {}
            _ => eprintln!("{}", line.as_ref()),
        }
    }

    /// Done: the bar is left showing its final state (or a last plain line is written).
    pub fn finish(&self) {
        match &self.sink {
            Sink::Bar(b) => {
                if !b.is_finished() {
                    b.finish()
                }
            }
            Sink::Plain(last) => self.plain_line(last, true),
            Sink::Hidden => {}
        }
    }

    /// `label: pos/total (p%), elapsed, ETA` at most every [`PLAIN_EVERY`] (always when `force`).
    fn plain_line(&self, last: &Mutex<Option<Instant>>, force: bool) {
        let Ok(mut last) = last.lock() else { return };
        let now = Instant::now();
        if !force && last.is_some_and(|t| now.duration_since(t) < PLAIN_EVERY) {
            return;
        }
        if force && last.is_some_and(|t| t == self.start) {
            // Already wrote the final line.
            return;
        }
        eprintln!("{}", self.plain_text(now.duration_since(self.start)));
        // `start` marks "final line written" so finish() after the last inc() does not repeat it.
        *last = Some(if force { self.start } else { now });
    }

    fn plain_text(&self, elapsed: Duration) -> String {
        let pos = self.position();
        let pct = if self.total == 0 {
            100.0
        } else {
            100.0 * pos as f64 / self.total as f64
        };
        let eta = if pos == 0 || pos >= self.total {
            String::new()
        } else {
            let left = elapsed.as_secs_f64() * (self.total - pos) as f64 / pos as f64;
            format!(", ETA {}", human(left))
        };
        let msg = self.message.lock().map(|m| m.clone()).unwrap_or_default();
        let msg = self.full_message(msg);
        let msg = if msg.is_empty() {
            msg
        } else {
            format!(" {msg}")
        };
        format!(
            "{}: {pos}/{} ({pct:.0}%), {} elapsed{eta}{msg}",
            self.label,
            self.total,
            human(elapsed.as_secs_f64())
        )
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("label", &self.label)
            .field("position", &self.position())
            .field("total", &self.total)
            .field("hidden", &self.is_hidden())
            .finish()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Sink::Bar(b) = &self.sink {
            if !b.is_finished() {
                b.abandon();
            }
        }
    }
}

/// `42s`, `3m05s`, `2h07m`.
fn human(secs: f64) -> String {
    let s = secs.round().max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_pick_the_sink() {
        let hidden = |m, tty| Progress::with_mode("x", 3, m, tty).is_hidden();
        assert!(hidden(ProgressMode::Auto, false));
        assert!(!hidden(ProgressMode::Auto, true));
        assert!(!hidden(ProgressMode::Always, false));
        assert!(hidden(ProgressMode::Never, true));
        assert!(Progress::hidden().is_hidden());
    }

    #[test]
    fn plain_text_has_position_percent_and_eta() {
        let p = Progress::with_mode("icl", 4, ProgressMode::Never, false);
        p.inc(1);
        p.set_message("antonym");
        p.add_prompts(32);
        let line = p.plain_text(Duration::from_secs(10));
        assert!(line.starts_with("icl: 1/4 (25%), 10s elapsed, ETA 30s antonym (32 prompts"));
        p.inc(3);
        let done = p.plain_text(Duration::from_secs(40));
        assert!(
            done.starts_with("icl: 4/4 (100%), 40s elapsed antonym"),
            "{done}"
        );
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(5.2), "5s");
        assert_eq!(human(185.0), "3m05s");
        assert_eq!(human(7620.0), "2h07m");
    }

    #[test]
    fn mode_round_trips() {
        for m in [
            ProgressMode::Always,
            ProgressMode::Never,
            ProgressMode::Auto,
        ] {
            set_progress_mode(m);
            assert_eq!(progress_mode(), m);
        }
    }
}
