// SPDX-License-Identifier: Apache-2.0
//! The first-boot engine (device): steps in fixed order, each observe /
//! apply / verify, progress in the state file, a stamp when all are done.
//! Everything goes through `Ctx.root` and a `Runner`, so tests run the real
//! logic against a temporary root and a fake runner.

pub mod failpoint;
pub mod journal;
pub mod progress;
pub mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use self::failpoint::failpoint;
pub use self::journal::{ids, journal};
use self::state::{now, State, Status};
use crate::config::HomecloudConfig;
pub use crate::exec::{Result, Runner};
use crate::host::net::Lan;
use crate::secret::ClusterSecret;

/// What one run of the agent (or the daemon) works with. The cluster
/// secret is read once, when the context is made.
pub struct Ctx<'a> {
    pub root: PathBuf,
    pub runner: &'a dyn Runner,
    pub config: HomecloudConfig,
    /// First boot, not the daemon or `hc status`: worth waiting out a busy
    /// cluster rather than failing the run.
    pub first_boot: bool,
    secret: std::result::Result<ClusterSecret, String>,
}

impl<'a> Ctx<'a> {
    pub fn new(root: &Path, runner: &'a dyn Runner, config: HomecloudConfig) -> Self {
        Ctx {
            root: root.to_path_buf(),
            runner,
            config,
            first_boot: false,
            secret: ClusterSecret::load(root),
        }
    }

    /// A context whose secret was read before (the daemon's threads).
    pub fn with_secret(
        root: &Path,
        runner: &'a dyn Runner,
        config: HomecloudConfig,
        secret: ClusterSecret,
    ) -> Self {
        Ctx {
            root: root.to_path_buf(),
            runner,
            config,
            first_boot: false,
            secret: Ok(secret),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    /// The cluster secret, or why this image has none usable.
    pub fn secret(&self) -> Result<&ClusterSecret> {
        self.secret.as_ref().map_err(Clone::clone)
    }

    /// The LAN with its address (None while it has none).
    pub fn lan(&self) -> Result<Option<Lan>> {
        crate::host::net::lan(
            &self.root,
            self.runner,
            self.config.network.interface.as_deref(),
        )
    }
}

pub enum Observed {
    Done(BTreeMap<String, String>),
    Pending,
}

/// Whether a step runs on this node.
pub enum Enabled {
    On,
    /// Off by configuration, with the reason `hc status` shows.
    Off(&'static str),
}

pub trait Step: Sync {
    fn name(&self) -> &'static str;
    /// Off by configuration: recorded as off, never observed or applied.
    fn enabled(&self, _cx: &Ctx) -> Enabled {
        Enabled::On
    }
    fn observe(&self, cx: &Ctx) -> Result<Observed>;
    /// Safe to repeat after a power cut at any instant.
    fn apply(&self, cx: &Ctx) -> Result<()>;
    /// Lines for `hc status`: what this step's subject looks like now.
    fn status(&self, _cx: &Ctx) -> Vec<String> {
        Vec::new()
    }
}

/// Where HCBOOT is mounted, by board kind.
pub const CONFIG_PATHS: &[&str] = &["/boot/hcboot/homecloud.toml", "/boot/efi/homecloud.toml"];

pub fn load_config(root: &Path) -> Result<HomecloudConfig> {
    for p in CONFIG_PATHS {
        let full = root.join(p.trim_start_matches('/'));
        if full.is_file() {
            let text = std::fs::read_to_string(&full)
                .map_err(|e| format!("{p}: (file): cannot read it: {e}"))?;
            // Files edited on Windows carry CRLF line ends.
            return HomecloudConfig::parse(
                &text.replace("\r\n", "\n"),
                &format!("HCBOOT{}", &p[p.rfind('/').unwrap_or(0)..]),
            )
            .map_err(|e| e.to_string());
        }
    }
    Err(format!(
        "no homecloud.toml on the HCBOOT partition (looked at {})",
        CONFIG_PATHS.join(", ")
    ))
}

/// The convergence stamp: the unit is skipped once it exists.
pub const STAMP: &str = "/var/lib/hc-firstboot/done";

/// One pass over the steps. Returns Ok(true) when every step is done.
pub fn run(root: &Path, runner: &dyn Runner, steps: &[&dyn Step]) -> Result<bool> {
    run_steps(root, runner, steps, true)
}

fn save(state: &State, root: &Path) -> Result<()> {
    state.save(root).map_err(|e| format!("writing state: {e}"))
}

/// One pass over `steps`; the convergence stamp is written only when
/// `complete` says these are all the steps (not an early subset).
pub fn run_steps(
    root: &Path,
    runner: &dyn Runner,
    steps: &[&dyn Step],
    complete: bool,
) -> Result<bool> {
    let mut state = State::load(root).map_err(|e| format!("reading state: {e}"))?;
    state.runs += 1;
    journal(
        ids::RUN_STARTED,
        6,
        &format!("hc-firstboot run {} started", state.runs),
        &[],
    );
    let config = match load_config(root) {
        Ok(c) => {
            state.blocked = None;
            c
        }
        Err(e) => {
            journal(
                ids::CONFIG_INVALID,
                3,
                &format!("homecloud.toml is not usable, nothing changed: {e}"),
                &[("HC_ERROR", &e)],
            );
            state.blocked = Some(e.clone());
            save(&state, root)?;
            progress::show(
                root,
                &format!("hc-image: blocked, nothing changed: {}", short(&e)),
            );
            return Err(e);
        }
    };
    save(&state, root)?;
    let mut cx = Ctx::new(root, runner, config);
    cx.first_boot = true;
    for (i, step) in steps.iter().enumerate() {
        let name = step.name();
        if complete {
            progress::show(
                root,
                &format!(
                    "hc-image first boot: step {}/{} {name} (`hc status` says more)",
                    i + 1,
                    steps.len()
                ),
            );
        }
        if let Enabled::Off(why) = step.enabled(&cx) {
            let r = state.step(name);
            if r.status != Status::Off {
                r.status = Status::Off;
                r.last_error = None;
                r.facts = BTreeMap::from([("off".to_string(), why.to_string())]);
                save(&state, root)?;
            }
            continue;
        }
        let observed = match step.observe(&cx) {
            Ok(o) => o,
            Err(e) => {
                // Recorded like a failed apply, so `hc status` says why.
                record_failure(&mut state, root, name, &format!("observing: {e}"))?;
                return Err(e);
            }
        };
        match observed {
            Observed::Done(facts) if state.step(name).status == Status::Done => {
                journal(
                    ids::STEP_ALREADY_DONE,
                    6,
                    &format!("step {name}: already done"),
                    &[("HC_STEP", name)],
                );
                state.step(name).facts = facts;
                continue;
            }
            Observed::Done(facts) => {
                record_done(&mut state, root, name, facts)?;
                continue;
            }
            Observed::Pending => {}
        }
        // Record the attempt before any side effect.
        {
            let r = state.step(name);
            r.status = Status::Started;
            r.attempts += 1;
        }
        save(&state, root)?;
        let result = step.apply(&cx).and_then(|()| match step.observe(&cx)? {
            Observed::Done(facts) => Ok(facts),
            Observed::Pending => Err(format!(
                "step {name}: applied but its postcondition does not hold"
            )),
        });
        match result {
            Ok(facts) => record_done(&mut state, root, name, facts)?,
            Err(e) => {
                record_failure(&mut state, root, name, &e)?;
                if complete {
                    progress::show(
                        root,
                        &format!(
                            "hc-image first boot stopped at step {name} (retried at the next boot): {}",
                            short(&e)
                        ),
                    );
                }
                return Err(e);
            }
        }
    }
    if !complete {
        return Ok(true);
    }
    crate::host::files::write_atomic(
        &cx.path(STAMP),
        format!("{}\n", now()).as_bytes(),
        crate::host::files::PUBLIC,
    )?;
    journal(ids::CONVERGED, 5, "hc-firstboot: node converged", &[]);
    progress::show(
        root,
        "hc-image: first boot done, this node is in the cluster (`hc status` says more)",
    );
    Ok(true)
}

/// The first line of an error, at most 160 characters, for the console.
fn short(e: &str) -> String {
    let l = e.lines().next().unwrap_or_default();
    match l.char_indices().nth(160) {
        Some((i, _)) => format!("{}...", &l[..i]),
        None => l.to_string(),
    }
}

fn record_done(
    state: &mut State,
    root: &Path,
    name: &str,
    facts: BTreeMap<String, String>,
) -> Result<()> {
    let r = state.step(name);
    r.status = Status::Done;
    r.last_error = None;
    r.finished_at = Some(now());
    r.facts = facts;
    save(state, root)?;
    journal(
        ids::STEP_DONE,
        6,
        &format!("step {name}: done"),
        &[("HC_STEP", name)],
    );
    Ok(())
}

/// Marks `name` failed with `err` in the state file and the journal.
fn record_failure(state: &mut State, root: &Path, name: &str, err: &str) -> Result<()> {
    let r = state.step(name);
    r.status = Status::Failed;
    r.last_error = Some(err.to_string());
    save(state, root)?;
    journal(
        ids::STEP_FAILED,
        3,
        &format!("step {name} failed: {err}"),
        &[("HC_STEP", name), ("HC_ERROR", err)],
    );
    Ok(())
}

/// `hc status`: what the agent did and what blocks it, then what each step
/// reports about its subject now (when homecloud.toml is readable).
pub fn status(root: &Path, runner: &dyn Runner, steps: &[&dyn Step]) -> String {
    let mut out = String::new();
    let state = match State::load(root) {
        Ok(s) => s,
        Err(e) => return format!("state unreadable: {e}\n"),
    };
    let done = root.join(STAMP.trim_start_matches('/')).is_file();
    out.push_str(&format!(
        "first boot: {} (agent runs: {})\n",
        if done {
            "converged"
        } else if state.blocked.is_some() {
            "blocked"
        } else {
            "in progress"
        },
        state.runs
    ));
    if let Some(b) = &state.blocked {
        out.push_str(&format!("blocked: {b}\n"));
    }
    for (name, r) in &state.steps {
        out.push_str(
            &format!("step {name}: {:?} (attempts {})\n", r.status, r.attempts).to_lowercase(),
        );
        if let Some(e) = &r.last_error {
            out.push_str(&format!("  last error: {e}\n"));
        }
        for (k, v) in &r.facts {
            out.push_str(&format!("  {k}: {v}\n"));
        }
    }
    if let Ok(config) = load_config(root) {
        let cx = Ctx::new(root, runner, config);
        for step in steps {
            for line in step.status(&cx) {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out
}
