// SPDX-License-Identifier: Apache-2.0
//! How the agent talks to Ceph: monitor commands through librados, and the
//! ceph user's files and units.

use std::time::Duration;

use serde_json::Value;

use crate::engine::{Ctx, Result};
use crate::host::units;

/// A monitor command (the JSON `ceph --verbose` shows), through librados:
/// the `ceph` CLI is Python, seconds of CPU per call on a small board.
/// Connecting and each command are bounded, so a cluster without quorum
/// never hangs the agent. During first boot a timeout is tried again after
/// growing pauses (about 6 minutes in all): loaded monitors (elections,
/// one-vCPU guests at load 15) missed one minute's deadline and failed the
/// first boot of all three nodes of a CI run (2026-12-03). The daemon and
/// `hc status` do not wait: their next tick or call is the retry.
pub(super) fn mon_in(cx: &Ctx, cmd: &Value, inbuf: &[u8]) -> Result<Vec<u8>> {
    let text = cmd.to_string();
    let pauses: &[Duration] = if cx.first_boot {
        &FIRST_BOOT_PAUSES
    } else {
        &[]
    };
    with_retry(
        || cx.runner.mon_command(&cx.root, &text, inbuf),
        pauses,
        std::thread::sleep,
    )
    .map_err(|e| format!("ceph {}: {e}", cmd["prefix"].as_str().unwrap_or("?")))
}

const FIRST_BOOT_PAUSES: [Duration; 3] = [
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
];

/// Errors of a busy or absent monitor rather than of the command.
fn transient(e: &str) -> bool {
    [
        "timed out",
        "os error 110",
        "not connected",
        "Connection refused",
    ]
    .iter()
    .any(|m| e.contains(m))
}

/// `f`, tried again after each of `pauses` while it fails transiently.
fn with_retry<T>(
    mut f: impl FnMut() -> Result<T>,
    pauses: &[Duration],
    sleep: impl Fn(Duration),
) -> Result<T> {
    let mut pauses = pauses.iter();
    loop {
        match f() {
            Err(e) if transient(&e) => match pauses.next() {
                Some(p) => sleep(*p),
                None => return Err(e),
            },
            other => return other,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_timeout_is_tried_again_and_a_refusal_is_not() {
        let calls = Cell::new(0);
        let slept = Cell::new(Duration::ZERO);
        let sleep = |d| slept.set(slept.get() + d);
        let r = with_retry(
            || {
                calls.set(calls.get() + 1);
                if calls.get() == 1 {
                    Err("Connection timed out (os error 110): timed out".to_string())
                } else {
                    Ok(7)
                }
            },
            &FIRST_BOOT_PAUSES,
            sleep,
        );
        assert_eq!(
            (r, calls.get(), slept.get()),
            (Ok(7), 2, FIRST_BOOT_PAUSES[0])
        );
        // Still timing out after the retries: the error comes back.
        calls.set(0);
        let r: Result<()> = with_retry(
            || {
                calls.set(calls.get() + 1);
                Err("timed out".into())
            },
            &FIRST_BOOT_PAUSES,
            sleep,
        );
        assert_eq!((r.is_err(), calls.get()), (true, 4));
        // A command the monitors refuse is not repeated.
        calls.set(0);
        let r: Result<()> = with_retry(
            || {
                calls.set(calls.get() + 1);
                Err("(22) Invalid argument".into())
            },
            &FIRST_BOOT_PAUSES,
            sleep,
        );
        assert_eq!((r.is_err(), calls.get()), (true, 1));
    }
}
