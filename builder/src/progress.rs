//! Build progress: indicatif bars when stderr is a terminal, plain lines
//! otherwise, nothing with `--quiet`.

use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bars,
    Lines,
    Quiet,
}

/// How a build reports what it is doing. Stages may run side by side (the
/// package stage beside component and build-script compiles): on a terminal
/// their bars share one [`MultiProgress`].
#[derive(Debug, Clone)]
pub struct Progress {
    mode: Mode,
    bars: MultiProgress,
    /// Every finished step and its seconds, for [`Progress::summary`].
    finished: Arc<Mutex<Vec<(String, f64)>>>,
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
        Progress {
            mode,
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            finished: Arc::default(),
        }
    }

    pub fn quiet() -> Progress {
        Progress {
            mode: Mode::Quiet,
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            finished: Arc::default(),
        }
    }

    /// One line with every finished step's time, in the order they
    /// finished (steps that ran side by side overlap), unless quiet.
    pub fn summary(&self, total: Duration) {
        if self.mode == Mode::Quiet {
            return;
        }
        let finished = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        let steps: Vec<String> = finished
            .iter()
            .map(|(what, seconds)| format!("{what} {seconds:.1} s"))
            .collect();
        tracing::info!(
            "timings: {:.1} s in all; {}",
            total.as_secs_f64(),
            steps.join("; ")
        );
    }

    /// Starts a stage of unknown length (a spinner); finish it with [`Step::done`].
    pub fn step(&self, what: &str) -> Step {
        let bar = match self.mode {
            Mode::Bars => {
                let bar = self.bars.add(ProgressBar::new_spinner());
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
            finished: Arc::clone(&self.finished),
        }
    }

    /// A byte counter for downloads and image writing.
    pub fn bytes(&self, what: &str, total: Option<u64>) -> Bytes {
        let bar = match self.mode {
            Mode::Bars => {
                let bar = self.bars.add(ProgressBar::with_draw_target(
                    total,
                    ProgressDrawTarget::hidden(),
                ));
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
    finished: Arc<Mutex<Vec<(String, f64)>>>,
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
        self.finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((self.what.clone(), elapsed));
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
