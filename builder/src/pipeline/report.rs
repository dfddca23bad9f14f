// SPDX-License-Identifier: Apache-2.0
//! Progress of a build: one line per stage, timed; a spinner instead when
//! stderr is a terminal.

use std::time::Instant;

/// One line per stage, timed; a spinner instead when stderr is a terminal.
pub struct Reporter {
    pub timings: Vec<(&'static str, f64)>,
    current: Option<(&'static str, Instant)>,
    bar: Option<indicatif::ProgressBar>,
}

impl Reporter {
    pub fn new() -> Self {
        use std::io::IsTerminal;
        let bar = (std::io::stderr().is_terminal() && tracing::enabled!(tracing::Level::INFO))
            .then(|| {
                let b = indicatif::ProgressBar::new_spinner();
                b.enable_steady_tick(std::time::Duration::from_millis(120));
                b
            });
        Reporter {
            timings: Vec::new(),
            current: None,
            bar,
        }
    }
    pub fn stage(&mut self, name: &'static str) {
        self.finish();
        match &self.bar {
            Some(b) => b.set_message(format!("{name}...")),
            None => tracing::info!("running {name}"),
        }
        self.current = Some((name, Instant::now()));
    }
    pub fn elapsed(&self) -> f64 {
        self.current.map_or(0.0, |(_, t)| t.elapsed().as_secs_f64())
    }
    pub fn finish(&mut self) {
        if let Some((name, t)) = self.current.take() {
            let s = t.elapsed().as_secs_f64();
            match &self.bar {
                Some(b) => b.println(format!("  {name:<12} {s:>6.1}s")),
                None => tracing::info!("finished {name} in {s:.1}s"),
            }
            self.timings.push((name, s));
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
