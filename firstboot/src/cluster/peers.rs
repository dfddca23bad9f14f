// SPDX-License-Identifier: Apache-2.0
//! What the daemon and the agent share about the LAN's nodes: the peers
//! heard (a file in /run, so either can restart), this node's phase and
//! its order among the listed nodes.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::discovery::{Announcement, Peers, Phase};
use crate::config::HomecloudConfig;
use crate::engine::{Ctx, Result};
use crate::host::files::{read_json, write_atomic, PUBLIC};
use crate::host::net::Lan;

const RUN_DIR: &str = "/run/hc-firstboot";
/// Peers not heard for this long are gone (a busy board can miss a few
/// one-second announcements).
pub const LIVE_MS: u64 = 15_000;
/// A member counts for this long after it was last heard: a cluster that
/// exists must never be mistaken for an empty LAN because of lost packets.
pub const MEMBER_MS: u64 = 120_000;
/// Three managers: Raft quorum survives the loss of one.
pub const MANAGERS: usize = 3;
/// Written before `swarm init`, removed before `swarm join`: the node that
/// creates the swarm also creates what the cluster's other parts need once
/// (Ceph). The name is older than this module.
pub const FOUNDER: &str = "/var/lib/hc-firstboot/ceph-founder";

pub fn run_path(root: &Path, name: &str) -> PathBuf {
    root.join(RUN_DIR.trim_start_matches('/')).join(name)
}

/// This node's place in `nodes` (unlisted nodes last).
pub fn order_of(config: &HomecloudConfig, mac: &str) -> u32 {
    config
        .nodes
        .iter()
        .position(|n| crate::config::normalize_mac(&n.mac).as_deref() == Some(mac))
        .map_or(u32::MAX, |i| i as u32)
}

/// Peers the daemon heard, as it last wrote them.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PeerFile {
    pub written_ms: u64,
    /// When the daemon started listening.
    #[serde(default)]
    pub started_ms: u64,
    pub me: Option<Announcement>,
    pub peers: Peers,
}

impl PeerFile {
    pub fn load(root: &Path) -> PeerFile {
        read_json(&run_path(root, "peers.json"))
    }
}

pub fn me_announcement(cx: &Ctx, l: &Lan, phase: Phase) -> Announcement {
    Announcement {
        cluster: cx.config.cluster.name.clone(),
        node: l.mac.clone(),
        name: cx.config.node_by_mac(&l.mac).map(|n| n.name.clone()),
        addr: l.addr,
        order: order_of(&cx.config, &l.mac),
        phase,
        session: 0,
        seq: 0,
    }
}

/// The agent's phase for the daemon's announcements.
pub fn set_phase(root: &Path, phase: &str) -> Result<()> {
    write_atomic(&run_path(root, "phase"), phase.as_bytes(), PUBLIC)
}

/// Members' addresses in node order, as their announcements say.
pub fn member_addrs(root: &Path, l: &Lan) -> Vec<Ipv4Addr> {
    let file = PeerFile::load(root);
    let mut v: Vec<(u32, Ipv4Addr)> = file
        .peers
        .peers
        .values()
        .filter(|h| matches!(h.ann.phase, Phase::Member { .. }) && h.ann.addr != l.addr)
        .map(|h| (h.ann.order, h.ann.addr))
        .collect();
    v.sort();
    v.into_iter().map(|(_, a)| a).collect()
}
