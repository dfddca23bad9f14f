// SPDX-License-Identifier: Apache-2.0
//! How the agent talks to Ceph: monitor commands through librados, and the
//! ceph user's files and units.

use serde_json::Value;

use crate::engine::{Ctx, Result};
use crate::host::units;

/// A monitor command (the JSON `ceph --verbose` shows), through librados:
/// the `ceph` CLI is Python, seconds of CPU per call on a small board.
/// Connecting and each command are bounded, so a cluster without quorum
/// never hangs the agent.
pub(super) fn mon_in(cx: &Ctx, cmd: &Value, inbuf: &[u8]) -> Result<Vec<u8>> {
    cx.runner
        .mon_command(&cx.root, &cmd.to_string(), inbuf)
        .map_err(|e| format!("ceph {}: {e}", cmd["prefix"].as_str().unwrap_or("?")))
}

pub(super) fn mon(cx: &Ctx, cmd: Value) -> Result<Vec<u8>> {
    mon_in(cx, &cmd, b"")
}

pub(super) fn mon_json(cx: &Ctx, mut cmd: Value) -> Result<Value> {
    cmd["format"] = "json".into();
    let out = mon(cx, cmd.clone())?;
    serde_json::from_slice(&out).map_err(|e| {
        format!(
            "ceph {}: unexpected output: {e}",
            cmd["prefix"].as_str().unwrap_or("?")
        )
    })
}

pub(super) fn chown_ceph(cx: &Ctx, p: &str) -> Result<()> {
    let full = cx.path(p).display().to_string();
    cx.runner
        .run(&["chown", "-R", "ceph:ceph", &full])
        .map(|_| ())
}

/// Starts `ceph-KIND@ID` now and at every boot (through `ceph-KIND.target`,
/// which the package enables), without a systemd reload.
pub(super) fn enable_now(cx: &Ctx, kind: &str, id: &str) -> Result<()> {
    units::want_and_start(
        &cx.root,
        cx.runner,
        &format!("ceph-{kind}.target"),
        &format!("ceph-{kind}@{id}.service"),
    )
}
