// SPDX-License-Identifier: Apache-2.0
//! The agent's progress record, `/var/lib/hc-firstboot/state.json` (device).
//! Written atomically (temp file, fsync, rename, directory fsync) so a power
//! cut leaves either the old or the new record, never a torn one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::files::{write_json, PUBLIC};

pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Started,
    Done,
    Failed,
    Blocked,
    /// Off by configuration: recorded, not run.
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRecord {
    pub status: Status,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Seconds since the epoch.
    pub finished_at: Option<u64>,
    /// What the step found or did, for `hc status`.
    #[serde(default)]
    pub facts: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub schema: u32,
    /// Boots the agent has run in.
    pub runs: u32,
    pub steps: BTreeMap<String, StepRecord>,
    /// Why the agent could not start at all (e.g. invalid homecloud.toml).
    pub blocked: Option<String>,
}

impl Default for State {
    fn default() -> Self {
        State {
            schema: SCHEMA,
            runs: 0,
            steps: BTreeMap::new(),
            blocked: None,
        }
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl State {
    pub fn path(root: &Path) -> PathBuf {
        root.join("var/lib/hc-firstboot/state.json")
    }

    /// Reads the record; a missing file is a fresh state, a corrupt one is an error.
    pub fn load(root: &Path) -> std::io::Result<State> {
        let p = Self::path(root);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", p.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, root: &Path) -> crate::exec::Result<()> {
        write_json(&Self::path(root), self, PUBLIC)
    }

    pub fn step(&mut self, name: &str) -> &mut StepRecord {
        self.steps.entry(name.to_string()).or_insert(StepRecord {
            status: Status::Pending,
            attempts: 0,
            last_error: None,
            finished_at: None,
            facts: BTreeMap::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_survives_a_leftover_temp_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut s = State::default();
        s.step("identity").status = Status::Started;
        s.save(d.path()).expect("save");
        // A power cut after writing the temp file but before the rename.
        std::fs::write(
            d.path().join(format!(
                "var/lib/hc-firstboot/.state.json.hc-tmp.{}",
                std::process::id()
            )),
            b"{garbage",
        )
        .expect("write");
        let back = State::load(d.path()).expect("load");
        assert_eq!(back, s);
        s.step("identity").status = Status::Done;
        s.save(d.path()).expect("save over the leftover");
        assert_eq!(
            State::load(d.path()).expect("load").steps["identity"].status,
            Status::Done
        );
    }

    #[test]
    fn missing_is_fresh_and_corrupt_is_an_error() {
        let d = tempfile::tempdir().expect("tempdir");
        assert_eq!(State::load(d.path()).expect("fresh"), State::default());
        std::fs::create_dir_all(d.path().join("var/lib/hc-firstboot")).expect("mkdir");
        std::fs::write(State::path(d.path()), b"{").expect("write");
        assert!(State::load(d.path()).is_err());
    }
}
