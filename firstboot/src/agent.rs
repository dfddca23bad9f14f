// SPDX-License-Identifier: Apache-2.0
//! The first-boot agent (device): steps in fixed order, each observe /
//! apply / verify, progress in the state file, a stamp when all are done.
//! Everything goes through `Ctx.root` and a `Runner`, so tests run the real
//! logic against a temporary root and a fake runner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::HomecloudConfig;
use crate::state::{now, State, Status};

pub type Result<T> = std::result::Result<T, String>;

/// Stable journald MESSAGE_IDs: `journalctl MESSAGE_ID=...` works fleet-wide.
pub mod ids {
    pub const RUN_STARTED: &str = "8f1c5a7e2b3d4c6e9a0b1c2d3e4f5a01";
    pub const STEP_DONE: &str = "8f1c5a7e2b3d4c6e9a0b1c2d3e4f5a02";
    pub const STEP_ALREADY_DONE: &str = "8f1c5a7e2b3d4c6e9a0b1c2d3e4f5a03";
    pub const STEP_FAILED: &str = "8f1c5a7e2b3d4c6e9a0b1c2d3e4f5a04";
    pub const CONFIG_INVALID: &str = "8f1c5a7e2b3d4c6e9a0b1c2d3e4f5a05";
    pub const CONVERGED: &str = "8f1c5a7e2b3d4c6e9a0b1c2d3e4f5a06";
    pub const SWARM_BOOTSTRAP: &str = "8f1c5a7e2b3d4c6e9a0b1c2d3e4f5a07";
    pub const SWARM_JOINED: &str = "8f1c5a7e2b3d4c6e9a0b1c2d3e4f5a08";
    pub const JOIN_REFUSED: &str = "8f1c5a7e2b3d4c6e9a0b1c2d3e4f5a09";
    pub const SWARM_PROMOTED: &str = "8f1c5a7e2b3d4c6e9a0b1c2d3e4f5a0a";
    pub const CEPH_CREATED: &str = "8f1c5a7e2b3d4c6e9a0b1c2d3e4f5a0b";
    pub const CEPH_MON: &str = "8f1c5a7e2b3d4c6e9a0b1c2d3e4f5a0c";
    pub const CEPH_OSD: &str = "8f1c5a7e2b3d4c6e9a0b1c2d3e4f5a0d";
}

/// Runs external programs; tests substitute a recording fake.
pub trait Runner {
    fn run(&self, argv: &[&str]) -> Result<String>;

    /// A Ceph monitor command (the JSON the `ceph` CLI would send) with
    /// the admin key of the system at `root`; returns the output buffer.
    fn mon_command(&self, root: &Path, cmd: &str, inbuf: &[u8]) -> Result<Vec<u8>> {
        let _ = (root, inbuf);
        Err(format!("no Ceph monitor client here for {cmd}"))
    }
}

pub struct RealRunner;

impl Runner for RealRunner {
    fn run(&self, argv: &[&str]) -> Result<String> {
        let (prog, args) = argv.split_first().ok_or("empty command")?;
        let out = Command::new(prog)
            .args(args)
            .output()
            .map_err(|e| format!("starting {prog}: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: String = err
                .chars()
                .rev()
                .take(512)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(format!(
                "{} failed ({}): {}",
                redact(argv),
                out.status,
                tail.trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn mon_command(&self, root: &Path, cmd: &str, inbuf: &[u8]) -> Result<Vec<u8>> {
        crate::rados::mon_command(root, cmd, inbuf)
    }
}

/// The command line for messages, with secrets (`--token T`) left out.
pub fn redact(argv: &[&str]) -> String {
    let mut out = Vec::with_capacity(argv.len());
    let mut hide = false;
    for a in argv {
        out.push(if hide { "<redacted>" } else { a });
        hide = *a == "--token";
    }
    out.join(" ")
}

/// Sends one structured entry to journald, and the message to stderr.
pub fn journal(message_id: &str, priority: u8, msg: &str, fields: &[(&str, &str)]) {
    eprintln!("{msg}");
    let mut payload = format!(
        "MESSAGE_ID={message_id}\nPRIORITY={priority}\nSYSLOG_IDENTIFIER=hc-firstboot\nMESSAGE={}\n",
        msg.replace('\n', " ")
    );
    for (k, v) in fields {
        payload.push_str(&format!("{k}={}\n", v.replace('\n', " ")));
    }
    if let Ok(s) = std::os::unix::net::UnixDatagram::unbound() {
        let _ = s.send_to(payload.as_bytes(), "/run/systemd/journal/socket");
    }
}

pub struct Ctx<'a> {
    pub root: PathBuf,
    pub runner: &'a dyn Runner,
    pub config: HomecloudConfig,
}

impl Ctx<'_> {
    pub fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }
}

/// A one-shot failpoint armed by a test on the disk copy before boot.
pub const FAILPOINT_FILE: &str = "/etc/hc-image/failpoint";

/// Exits the process at a named point when `HC_FAILPOINT` or the
/// failpoint file names it, so tests can cut power exactly after a side
/// effect. Each name in the file (one per line) fires once: it moves to
/// `failpoint.fired`, so the next boot proceeds; production images have no
/// such file.
pub fn failpoint(name: &str) {
    let from_file = || {
        let root = std::env::var_os("HC_ROOT").map_or_else(|| PathBuf::from("/"), PathBuf::from);
        consume_failpoint(&root.join(FAILPOINT_FILE.trim_start_matches('/')), name)
    };
    if std::env::var("HC_FAILPOINT").is_ok_and(|v| v == name) || from_file() {
        journal(
            ids::STEP_FAILED,
            3,
            &format!("failpoint {name}: exiting"),
            &[("HC_FAILPOINT", name)],
        );
        crate::rados::shutdown();
        std::process::exit(99);
    }
}

/// True (once) when the failpoint file `f` names `name`: the name moves to
/// `<f>.fired` and the file keeps the names not fired yet.
pub fn consume_failpoint(f: &Path, name: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(f) else {
        return false;
    };
    if !text.lines().any(|l| l.trim() == name) {
        return false;
    }
    let rest: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != name)
        .collect();
    let fired = f.with_extension("fired");
    let before = std::fs::read_to_string(&fired).unwrap_or_default();
    let recorded = std::fs::write(&fired, format!("{before}{name}\n")).is_ok();
    let consumed = if rest.is_empty() {
        std::fs::remove_file(f).is_ok()
    } else {
        std::fs::write(f, format!("{}\n", rest.join("\n"))).is_ok()
    };
    recorded && consumed
}

pub enum Observed {
    Done(BTreeMap<String, String>),
    Pending,
}

pub trait Step {
    fn name(&self) -> &'static str;
    fn observe(&self, cx: &Ctx) -> Result<Observed>;
    fn apply(&self, cx: &Ctx) -> Result<()>;
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

/// One pass over the steps. Returns Ok(true) when every step is done.
pub fn run(root: &Path, runner: &dyn Runner, steps: &[&dyn Step]) -> Result<bool> {
    run_steps(root, runner, steps, true)
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
            state
                .save(root)
                .map_err(|e| format!("writing state: {e}"))?;
            return Err(e);
        }
    };
    state
        .save(root)
        .map_err(|e| format!("writing state: {e}"))?;
    let cx = Ctx {
        root: root.to_path_buf(),
        runner,
        config,
    };
    for step in steps {
        let name = step.name();
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
                let r = state.step(name);
                r.status = Status::Done;
                r.finished_at = Some(now());
                r.facts = facts;
                state
                    .save(root)
                    .map_err(|e| format!("writing state: {e}"))?;
                journal(
                    ids::STEP_DONE,
                    6,
                    &format!("step {name}: done"),
                    &[("HC_STEP", name)],
                );
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
        state
            .save(root)
            .map_err(|e| format!("writing state: {e}"))?;
        let result = step.apply(&cx).and_then(|()| match step.observe(&cx)? {
            Observed::Done(facts) => Ok(facts),
            Observed::Pending => Err(format!(
                "step {name}: applied but its postcondition does not hold"
            )),
        });
        match result {
            Ok(facts) => {
                let r = state.step(name);
                r.status = Status::Done;
                r.last_error = None;
                r.finished_at = Some(now());
                r.facts = facts;
                state
                    .save(root)
                    .map_err(|e| format!("writing state: {e}"))?;
                journal(
                    ids::STEP_DONE,
                    6,
                    &format!("step {name}: done"),
                    &[("HC_STEP", name)],
                );
            }
            Err(e) => {
                record_failure(&mut state, root, name, &e)?;
                return Err(e);
            }
        }
    }
    if !complete {
        return Ok(true);
    }
    let stamp = root.join("var/lib/hc-firstboot/done");
    std::fs::write(&stamp, format!("{}\n", now()))
        .map_err(|e| format!("writing {}: {e}", stamp.display()))?;
    journal(ids::CONVERGED, 5, "hc-firstboot: node converged", &[]);
    Ok(true)
}

/// Marks `name` failed with `err` in the state file and the journal.
fn record_failure(state: &mut State, root: &Path, name: &str, err: &str) -> Result<()> {
    let r = state.step(name);
    r.status = Status::Failed;
    r.last_error = Some(err.to_string());
    state
        .save(root)
        .map_err(|e| format!("writing state: {e}"))?;
    journal(
        ids::STEP_FAILED,
        3,
        &format!("step {name} failed: {err}"),
        &[("HC_STEP", name), ("HC_ERROR", err)],
    );
    Ok(())
}

/// `hc status`: what the agent did and what blocks it.
pub fn status(root: &Path) -> String {
    let mut out = String::new();
    let state = match State::load(root) {
        Ok(s) => s,
        Err(e) => return format!("state unreadable: {e}\n"),
    };
    let done = root.join("var/lib/hc-firstboot/done").is_file();
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failpoint_in_the_file_fires_once_in_any_order() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("failpoint");
        std::fs::write(&f, "cluster:after-join\nceph:after-osd\n").expect("write");
        assert!(!consume_failpoint(&f, "identity:after-hostname"));
        assert!(consume_failpoint(&f, "ceph:after-osd"));
        assert!(!consume_failpoint(&f, "ceph:after-osd"), "fired twice");
        assert_eq!(
            std::fs::read_to_string(&f).expect("left"),
            "cluster:after-join\n"
        );
        assert!(consume_failpoint(&f, "cluster:after-join"));
        assert!(!f.exists(), "an empty failpoint file stays behind");
        let fired = std::fs::read_to_string(d.path().join("failpoint.fired")).expect("fired");
        assert_eq!(fired, "ceph:after-osd\ncluster:after-join\n");
    }
}
