//! Progress of long steps on stderr: a bar with its message, position/length and ETA when
//! stderr is a terminal; otherwise the message alone, printed once as a line, so logs and tests
//! that read stderr see one stable line per step.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One step's progress; the bar is cleared when this is dropped.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts a step of `len` units described by `message`.
    pub fn start(len: u64, message: String) -> Progress {
        Progress::start_with(len, message, true)
    }

    /// [`Progress::start`] that prints nothing when stderr is not a terminal (for steps
    /// repeated many times, such as one calibration run per layer).
    pub fn start_quiet(len: u64, message: String) -> Progress {
        Progress::start_with(len, message, false)
    }

    fn start_with(len: u64, message: String, line: bool) -> Progress {
        if !std::io::stderr().is_terminal() {
            if line {
                eprintln!("{message}");
            }
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{msg} [{wide_bar}] {pos}/{len} ({elapsed}, ETA {eta})")
            .expect("the template is valid")
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(message);
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar: Some(bar) }
    }

    /// One more unit done.
    pub fn inc(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
