// SPDX-License-Identifier: Apache-2.0
//! Structured journald entries with stable MESSAGE_IDs: `journalctl
//! MESSAGE_ID=...` works fleet-wide.

/// Stable journald MESSAGE_IDs.
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

/// Sends one structured entry to journald, and the message to stderr
/// unless stderr is the journal too (systemd sets JOURNAL_STREAM), where
/// every line showed up twice.
pub fn journal(message_id: &str, priority: u8, msg: &str, fields: &[(&str, &str)]) {
    let mut payload = format!(
        "MESSAGE_ID={message_id}\nPRIORITY={priority}\nSYSLOG_IDENTIFIER=hc-firstboot\nMESSAGE={}\n",
        msg.replace('\n', " ")
    );
    for (k, v) in fields {
        payload.push_str(&format!("{k}={}\n", v.replace('\n', " ")));
    }
    let sent = std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| s.send_to(payload.as_bytes(), "/run/systemd/journal/socket"))
        .is_ok();
    if !sent || std::env::var_os("JOURNAL_STREAM").is_none() {
        eprintln!("{msg}");
    }
}
