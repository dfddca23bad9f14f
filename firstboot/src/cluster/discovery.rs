// SPDX-License-Identifier: Apache-2.0
//! Discovery and election (device). Nodes broadcast signed announcements on
//! the LAN (UDP port 7475); a deterministic rule over the set of nodes heard
//! picks one bootstrap node, and a node that hears an existing cluster joins
//! it. Announcements are hints: what a node receives through the join channel
//! (a fresh Noise handshake) is what it trusts.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::secret::ClusterSecret;

pub const PORT: u16 = 7475;
const MAGIC: &[u8; 4] = b"HCA1";
const TAG_LEN: usize = 32;

/// Where a node is in forming or joining the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "lowercase")]
pub enum Phase {
    /// Listening, no cluster yet.
    Discovering,
    /// Elected itself and is creating the cluster.
    Bootstrapping,
    /// In the cluster `swarm` (its id); can serve joins when `serves`.
    Member { swarm: String, serves: bool },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    pub cluster: String,
    /// MAC of the LAN interface, the node's identity.
    pub node: String,
    pub name: Option<String>,
    pub addr: Ipv4Addr,
    /// Position in homecloud.toml's `nodes` (u32::MAX when not listed).
    pub order: u32,
    #[serde(flatten)]
    pub phase: Phase,
    /// Random per process, with `seq` for replay detection.
    pub session: u64,
    pub seq: u64,
}

impl Announcement {
    /// Election order: listed nodes first, in file order, then by MAC.
    pub fn rank(&self) -> (u32, &str) {
        (self.order, &self.node)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// Not an hc-image announcement at all.
    Foreign,
    /// Looks like ours but the tag does not verify: a different cluster
    /// secret (or tampering). Fields are unauthenticated, for the message only.
    BadTag { cluster: String, addr: String },
}

fn mac_for(key: &[u8; 32]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable_hmac(),
    }
}

#[allow(clippy::panic)]
fn unreachable_hmac() -> ! {
    panic!("HMAC-SHA256 rejected a 32-byte key")
}

pub fn seal(a: &Announcement, secret: &ClusterSecret) -> Vec<u8> {
    let key = secret.derive("announce");
    let mut out = MAGIC.to_vec();
    out.extend(serde_json::to_vec(a).unwrap_or_default());
    let mut m = mac_for(&key);
    m.update(&out);
    out.extend(m.finalize().into_bytes());
    out
}

pub fn open(buf: &[u8], secret: &ClusterSecret) -> std::result::Result<Announcement, OpenError> {
    if buf.len() < MAGIC.len() + TAG_LEN || &buf[..MAGIC.len()] != MAGIC {
        return Err(OpenError::Foreign);
    }
    let (body, tag) = buf.split_at(buf.len() - TAG_LEN);
    let mut m = mac_for(&secret.derive("announce"));
    m.update(body);
    if m.verify_slice(tag).is_err() {
        let v: serde_json::Value = serde_json::from_slice(&body[MAGIC.len()..]).unwrap_or_default();
        let s = |k: &str| v[k].as_str().unwrap_or("?").chars().take(64).collect();
        return Err(OpenError::BadTag {
            cluster: s("cluster"),
            addr: s("addr"),
        });
    }
    serde_json::from_slice(&body[MAGIC.len()..]).map_err(|_| OpenError::Foreign)
}

/// Authenticated peers heard, with replay detection per sender session.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Peers {
    pub peers: BTreeMap<String, Heard>,
    /// Announcements that failed authentication, by claimed address.
    pub rejected: BTreeMap<String, Rejected>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heard {
    pub ann: Announcement,
    /// Milliseconds on the receiver's monotonic clock.
    pub at_ms: u64,
    /// Highest seq per session seen from this node.
    sessions: BTreeMap<u64, u64>,
    /// Sessions, least recently heard first.
    #[serde(default)]
    order: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rejected {
    pub cluster: String,
    pub count: u64,
    pub at_ms: u64,
}

impl Peers {
    /// Records an authenticated announcement; false when it is a replay.
    pub fn accept(&mut self, ann: Announcement, at_ms: u64) -> bool {
        let e = self.peers.entry(ann.node.clone()).or_insert_with(|| Heard {
            ann: ann.clone(),
            at_ms,
            sessions: BTreeMap::new(),
            order: Vec::new(),
        });
        match e.sessions.get(&ann.session) {
            Some(&last) if ann.seq <= last => return false,
            _ => {}
        }
        e.sessions.insert(ann.session, ann.seq);
        e.order.retain(|s| *s != ann.session);
        e.order.push(ann.session);
        // Bounded memory: a node reboots a handful of times, not thousands.
        while e.order.len() > 64 {
            let old = e.order.remove(0);
            e.sessions.remove(&old);
        }
        e.ann = ann;
        e.at_ms = at_ms;
        true
    }

    pub fn reject(&mut self, cluster: String, addr: String, at_ms: u64) {
        let r = self.rejected.entry(addr).or_insert(Rejected {
            cluster,
            count: 0,
            at_ms,
        });
        r.count += 1;
        r.at_ms = at_ms;
    }

    /// Peers heard within `max_age_ms` of `now_ms`.
    pub fn live(&self, now_ms: u64, max_age_ms: u64) -> Vec<&Announcement> {
        self.peers
            .values()
            .filter(|h| now_ms.saturating_sub(h.at_ms) <= max_age_ms)
            .map(|h| &h.ann)
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Create the cluster here.
    Bootstrap,
    /// Join the cluster this node serves.
    Join { node: String, addr: Ipv4Addr },
    /// A cluster is being created by `node`; wait for it.
    WaitFor { node: String },
    /// Keep listening until the discovery window ends.
    Listen,
}

/// The election rule. `me` is this node's own announcement, `heard` the live
/// authenticated peers, `window_over` whether this node listened a full
/// discovery window. Every node of a group that hears each other computes
/// the same bootstrap node, whatever the order announcements arrived in.
pub fn decide(me: &Announcement, heard: &[&Announcement], window_over: bool) -> Decision {
    let others = heard
        .iter()
        .filter(|a| a.node != me.node && a.cluster == me.cluster);
    // An existing cluster wins over forming a new one: join its best server.
    if let Some(server) = others
        .clone()
        .filter(|a| matches!(a.phase, Phase::Member { serves: true, .. }))
        .min_by(|a, b| a.rank().cmp(&b.rank()))
    {
        return Decision::Join {
            node: server.node.clone(),
            addr: server.addr,
        };
    }
    if let Some(boot) = others
        .clone()
        .filter(|a| matches!(a.phase, Phase::Bootstrapping | Phase::Member { .. }))
        .min_by(|a, b| a.rank().cmp(&b.rank()))
    {
        // Two nodes that decided at once: the lower rank goes on.
        let i_go_on = me.phase == Phase::Bootstrapping
            && boot.phase == Phase::Bootstrapping
            && me.rank() < boot.rank();
        if !i_go_on {
            return Decision::WaitFor {
                node: boot.node.clone(),
            };
        }
        return Decision::Bootstrap;
    }
    // Committed: nodes that show up now hear us bootstrapping and wait.
    if me.phase == Phase::Bootstrapping {
        return Decision::Bootstrap;
    }
    if !window_over {
        return Decision::Listen;
    }
    let lowest = others
        .filter(|a| a.phase == Phase::Discovering)
        .map(|a| a.rank())
        .min();
    match lowest {
        Some(r) if r < me.rank() => Decision::WaitFor {
            node: r.1.to_string(),
        },
        _ => Decision::Bootstrap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ann(node: &str, order: u32, phase: Phase) -> Announcement {
        Announcement {
            cluster: "home".into(),
            node: node.into(),
            name: None,
            addr: Ipv4Addr::new(10, 0, 0, 1),
            order,
            phase,
            session: 1,
            seq: 1,
        }
    }

    #[test]
    fn forged_and_wrong_secret_announcements_fail() {
        let s = ClusterSecret::from_bytes([3; 32]);
        let a = ann("52:54:00:00:00:01", 0, Phase::Discovering);
        let wire = seal(&a, &s);
        assert_eq!(open(&wire, &s), Ok(a.clone()));
        // Wrong secret.
        let other = ClusterSecret::from_bytes([4; 32]);
        assert!(
            matches!(open(&wire, &other), Err(OpenError::BadTag { cluster, .. }) if cluster == "home")
        );
        // Tampered body: claims to be bootstrapping.
        let mut forged = wire.clone();
        let text = String::from_utf8_lossy(&forged[4..forged.len() - 32])
            .replace("discovering", "bootstrapping");
        forged.splice(4..forged.len() - 32, text.into_bytes());
        assert!(matches!(open(&forged, &s), Err(OpenError::BadTag { .. })));
        // Not ours at all.
        assert_eq!(open(b"hello", &s), Err(OpenError::Foreign));
    }

    #[test]
    fn replays_are_ignored() {
        let mut p = Peers::default();
        let mut a = ann("m1", 0, Phase::Discovering);
        assert!(p.accept(a.clone(), 10));
        assert!(!p.accept(a.clone(), 20), "same packet again");
        a.seq = 2;
        assert!(p.accept(a.clone(), 30));
        a.seq = 1;
        assert!(!p.accept(a.clone(), 40), "older packet of the same session");
        a.session = 2;
        assert!(p.accept(a.clone(), 50), "a reboot starts a new session");
        a.session = 1;
        a.seq = 2;
        assert!(!p.accept(a, 60), "old session replayed after the reboot");
        assert_eq!(p.peers["m1"].ann.session, 2);
    }

    #[test]
    fn existing_cluster_is_joined_not_rivalled() {
        let me = ann("m0", 0, Phase::Discovering);
        let member = ann(
            "m9",
            9,
            Phase::Member {
                swarm: "x".into(),
                serves: true,
            },
        );
        assert_eq!(
            decide(&me, &[&member], true),
            Decision::Join {
                node: "m9".into(),
                addr: member.addr
            }
        );
        let boot = ann("m9", 9, Phase::Bootstrapping);
        assert_eq!(
            decide(&me, &[&boot], true),
            Decision::WaitFor { node: "m9".into() }
        );
        // Both decided at once: only the lower rank goes on.
        let mut me_boot = me.clone();
        me_boot.phase = Phase::Bootstrapping;
        assert_eq!(decide(&me_boot, &[&boot], true), Decision::Bootstrap);
        let mut low = boot.clone();
        low.order = 0;
        low.node = "a0".into();
        assert_eq!(
            decide(&me_boot, &[&low], true),
            Decision::WaitFor { node: "a0".into() }
        );
        // A lower node that shows up while we bootstrap does not stop us
        // (it hears us and waits), so the two never wait for each other.
        let mut late = ann("a1", 0, Phase::Discovering);
        late.node = "a1".into();
        assert_eq!(decide(&me_boot, &[&late], true), Decision::Bootstrap);
        assert_eq!(
            decide(&late, &[&me_boot], true),
            Decision::WaitFor { node: "m0".into() }
        );
        assert_eq!(decide(&me, &[], false), Decision::Listen);
        assert_eq!(
            decide(&me, &[], true),
            Decision::Bootstrap,
            "alone: one-node cluster"
        );
        let other_cluster = Announcement {
            cluster: "other".into(),
            ..member
        };
        assert_eq!(decide(&me, &[&other_cluster], true), Decision::Bootstrap);
    }

    proptest! {
        /// Nodes split into groups that hear only each other, announcements
        /// arriving in any order: exactly one bootstrap node per group.
        #[test]
        fn one_bootstrap_per_connected_group(
            nodes in proptest::collection::btree_map(0u32..1000, (0u32..5, any::<bool>(), 0usize..3), 1..9),
            seed in any::<u64>(),
        ) {
            let anns: Vec<(Announcement, usize)> = nodes
                .iter()
                .map(|(id, (ord, listed, group))| {
                    let order = if *listed { *ord } else { u32::MAX };
                    (ann(&format!("52:54:00:00:{:02x}:{:02x}", id / 256, id % 256), order, Phase::Discovering), *group)
                })
                .collect();
            for group in 0..3 {
                let members: Vec<&Announcement> = anns.iter().filter(|(_, g)| *g == group).map(|(a, _)| a).collect();
                if members.is_empty() {
                    continue;
                }
                let mut bootstraps = 0;
                for (i, me) in members.iter().enumerate() {
                    // Each node receives its group's announcements in its own order.
                    let mut p = Peers::default();
                    let mut order: Vec<&Announcement> = members.clone();
                    let k = (seed as usize).wrapping_add(i * 7919) % order.len();
                    order.rotate_left(k);
                    if (seed >> (i % 64)) & 1 == 1 {
                        order.reverse();
                    }
                    for (t, a) in order.into_iter().enumerate() {
                        p.accept((*a).clone(), t as u64);
                    }
                    let live = p.live(100, 1000);
                    if decide(me, &live, true) == Decision::Bootstrap {
                        bootstraps += 1;
                    }
                }
                prop_assert_eq!(bootstraps, 1);
            }
        }
    }
}
