//! Build progress: indicatif bars when stderr is a terminal, plain lines
//! otherwise, nothing with `--quiet`.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bars,
    Lines,
    Quiet,
}

/// How a build reports what it is doing.
#[derive(Debug, Clone)]
pub struct Progress {
    mode: Mode,
}

impl Progress {
    /// Bars on a terminal, lines otherwise; `quiet` silences both.
    pub fn new(quiet: bool) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        };
        Progress { mode }
    }

    pub fn quiet() -> Progress {
        Progress { mode: Mode::Quiet }
    }

    /// Starts a stage of unknown length (a spinner); finish it with [`Step::done`].
    pub fn step(&self, what: &str) -> Step {
        let bar = match self.mode {
            Mode::Bars => {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                        .expect("valid template"),
                );
                bar.set_message(what.to_owned());
                bar.enable_steady_tick(Duration::from_millis(120));
                Some(bar)
            }
            Mode::Lines => {
                tracing::info!("{what}");
                None
            }
            Mode::Quiet => None,
        };
        Step {
            what: what.to_owned(),
            bar,
            started: Instant::now(),
            last_line: std::cell::Cell::new(Instant::now()),
            mode: self.mode,
        }
    }

    /// A byte counter for downloads and image writing.
    pub fn bytes(&self, what: &str, total: Option<u64>) -> Bytes {
        let bar = match self.mode {
            Mode::Bars => {
                let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
                let template = if total.is_some() {
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}"
                } else {
                    "{spinner} {msg} {bytes} {bytes_per_sec}"
                };
                bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
                bar.set_message(what.to_owned());
                Some(bar)
            }
            Mode::Lines => {
                tracing::info!("{what}");
                None
            }
            Mode::Quiet => None,
        };
        Bytes { bar }
    }
}

/// A running stage.
#[derive(Debug)]
pub struct Step {
    what: String,
    bar: Option<ProgressBar>,
    started: Instant,
    /// When plain-lines mode last reported [`Step::detail`].
    last_line: std::cell::Cell<Instant>,
    mode: Mode,
}

/// How often plain-lines mode repeats a long step's detail.
const DETAIL_EVERY: Duration = Duration::from_secs(30);

impl Step {
    /// What a long step is doing now ("412 packages compiled, last
    /// k8s.io/apiserver/pkg/server"): beside the spinner on a terminal, a line
    /// every half minute otherwise.
    pub fn detail(&self, detail: &str) {
        match self.mode {
            Mode::Bars => {
                if let Some(bar) = &self.bar {
                    bar.set_message(format!("{}: {detail}", self.what));
                }
            }
            Mode::Lines => {
                if self.last_line.get().elapsed() >= DETAIL_EVERY {
                    self.last_line.set(Instant::now());
                    let elapsed = self.started.elapsed().as_secs();
                    tracing::info!("{} ({elapsed} s): {detail}", self.what);
                }
            }
            Mode::Quiet => {}
        }
    }

    pub fn done(self) {
        let elapsed = self.started.elapsed().as_secs_f64();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.mode != Mode::Quiet {
            tracing::info!("{} done in {elapsed:.1} s", self.what);
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A byte counter.
#[derive(Debug)]
pub struct Bytes {
    bar: Option<ProgressBar>,
}

impl Bytes {
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
