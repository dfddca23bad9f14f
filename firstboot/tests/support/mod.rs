// SPDX-License-Identifier: Apache-2.0
//! The one fake command runner of the agent's tests (a fake, for logic
//! only): it records every command, lets the test's fake world answer, and
//! can cut the power right after a named side effect, after which every
//! command fails until the power comes back.

#![allow(dead_code)] // each test binary uses part of it

use std::cell::{Cell, RefCell};
use std::path::Path;

use hc_firstboot::exec::Runner;

/// What a test fakes: the answers of the programs and the monitor.
pub trait World: Sized {
    fn run(&self, fake: &Fake<Self>, argv: &[&str]) -> Result<String, String>;

    fn mon(
        &self,
        _fake: &Fake<Self>,
        cmd: &serde_json::Value,
        _inbuf: &[u8],
    ) -> Result<Vec<u8>, String> {
        Err(format!("no monitor in this fake for {cmd}"))
    }
}

pub struct Fake<W> {
    pub world: W,
    calls: RefCell<Vec<String>>,
    cut_after: Cell<Option<&'static str>>,
    dead: Cell<bool>,
}

impl<W: World> Fake<W> {
    pub fn new(world: W) -> Self {
        Fake {
            world,
            calls: RefCell::new(Vec::new()),
            cut_after: Cell::new(None),
            dead: Cell::new(false),
        }
    }

    /// The power goes right after the side effect named `point`.
    pub fn cut_power_after(self, point: Option<&'static str>) -> Self {
        self.cut_after.set(point);
        self
    }

    /// The world calls this when a side effect happened.
    pub fn side_effect(&self, point: &str) -> Result<String, String> {
        if self.cut_after.get() == Some(point) {
            self.dead.set(true);
        }
        Ok(String::new())
    }

    /// Power back on, with no cut armed: the next boot.
    pub fn power_back(&self) {
        self.dead.set(false);
        self.cut_after.set(None);
    }

    /// Forgets the calls so far (a later run is checked on its own).
    pub fn forget_calls(&self) {
        self.calls.borrow_mut().clear();
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    /// Recorded commands (argv joined by spaces, monitor prefixes as they
    /// are) that start with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.calls
            .borrow()
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }

    fn record(&self, line: String) -> Result<(), String> {
        if self.dead.get() {
            return Err(format!("power cut before {line}"));
        }
        self.calls.borrow_mut().push(line);
        Ok(())
    }
}

impl<W: World> Runner for Fake<W> {
    fn run(&self, argv: &[&str]) -> Result<String, String> {
        // The agent bounds some calls with `timeout N`.
        let argv = match argv {
            ["timeout", _, rest @ ..] => rest,
            _ => argv,
        };
        self.record(argv.join(" "))?;
        self.world.run(self, argv)
    }

    /// Asked of the world as the command `METHOD PATH [BODY]`; recorded
    /// as `METHOD PATH`.
    fn engine(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        _timeout: std::time::Duration,
    ) -> Result<String, String> {
        self.record(format!("{method} {path}"))?;
        let mut argv = vec![method, path];
        argv.extend(body);
        self.world.run(self, &argv)
    }

    fn mon_command(&self, _root: &Path, cmd: &str, inbuf: &[u8]) -> Result<Vec<u8>, String> {
        let v: serde_json::Value = serde_json::from_str(cmd).map_err(|e| e.to_string())?;
        self.record(v["prefix"].as_str().unwrap_or_default().to_string())?;
        self.world.mon(self, &v, inbuf)
    }
}
