// SPDX-License-Identifier: Apache-2.0
//! The agent's `ceph` step and its `hc status` lines.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::cmd::mon_json;
use super::fs::{adjust_pools, ensure_mount, mounted};
use super::material::{write_client_files, Material, CONF, MOUNT_POINT, SECRET_FILE};
use super::mon::{create_cluster, ensure_mon_node, has_mon, wait_quorum};
use super::osd::{ensure_osd, osd_entries, Osd};
use crate::cluster::join::fetch_from_members;
use crate::cluster::peers::{PeerFile, FOUNDER, LIVE_MS, MANAGERS};
use crate::cluster::swarm::api_info;
use crate::config::Role;
use crate::engine::{Ctx, Enabled, Observed, Result, Step};
use crate::host::files::{read_json, write_json, PUBLIC};
use crate::host::node::{current_hostname, uptime_ms};

/// The join channel's topic for the Ceph cluster's material.
pub const TOPIC: &str = "ceph";

pub struct Ceph;

pub(super) fn enabled(cx: &Ctx) -> bool {
    cx.config.storage.osd_device.is_some()
}

const OFF: &str = "storage.osd_device is not set";

fn founder(cx: &Ctx) -> bool {
    cx.path(FOUNDER).is_file()
}

fn swarm_manager(cx: &Ctx) -> bool {
    api_info(cx.runner, Duration::from_secs(60)).is_ok_and(|i| i.state == "active" && i.manager)
}

/// Whether the founder holds Ceph back: with `peers` other nodes heard
/// there will be three managers, and there are `managers` so far.
pub fn managers_pending(peers: usize, managers: u32) -> bool {
    peers + 1 >= MANAGERS && (managers as usize) < MANAGERS
}

/// The founder creates Ceph once the swarm has its managers (bounded by
/// `limit`). Under three loaded TCG guests, promotions raced the founder's
/// monitor, manager and OSD creation, the promoted nodes' certificate
/// renewals timed out, and the swarm stayed at one manager for good.
fn settle_managers(cx: &Ctx, limit: Duration) {
    let t = Instant::now();
    let mut said = false;
    while t.elapsed() < limit {
        // Nodes whose roles say `worker` are never promoted.
        let peers = PeerFile::load(&cx.root)
            .peers
            .live(uptime_ms(), LIVE_MS)
            .iter()
            .filter(|a| {
                !cx.config
                    .nodes
                    .iter()
                    .any(|n| n.mac.eq_ignore_ascii_case(&a.node) && n.roles.contains(&Role::Worker))
            })
            .count();
        let managers = api_info(cx.runner, Duration::from_secs(60)).map_or(0, |i| i.managers);
        if !managers_pending(peers, managers) {
            return;
        }
        if !said {
            eprintln!(
                "ceph: {peers} other nodes heard, {managers} swarm manager(s): creating the cluster once there are {MANAGERS}"
            );
            said = true;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    eprintln!(
        "ceph: the swarm has fewer than {MANAGERS} managers after {}s; creating the cluster anyway",
        limit.as_secs()
    );
}

impl Step for Ceph {
    fn name(&self) -> &'static str {
        "ceph"
    }

    fn enabled(&self, cx: &Ctx) -> Enabled {
        if enabled(cx) {
            Enabled::On
        } else {
            Enabled::Off(OFF)
        }
    }

    fn observe(&self, cx: &Ctx) -> Result<Observed> {
        let Some(m) = Material::load(&cx.root) else {
            return Ok(Observed::Pending);
        };
        if !cx.path(CONF).is_file() || !cx.path(SECRET_FILE).is_file() {
            return Ok(Observed::Pending);
        }
        let outcome: OsdOutcome = read_json(&cx.path(OSD_OUTCOME));
        if outcome.fsid != m.fsid {
            return Ok(Observed::Pending);
        }
        let mut facts = BTreeMap::from([
            ("fsid".to_string(), m.fsid.clone()),
            ("osd".to_string(), outcome.osd.clone()),
            ("pools".to_string(), outcome.pools.clone()),
            ("clock".to_string(), outcome.clock.clone()),
        ]);
        let name = current_hostname(&cx.root);
        if has_mon(&cx.root, &name) {
            facts.insert("monitor".into(), name);
        }
        facts.insert(
            "cephfs".into(),
            if mounted(&cx.root) {
                format!("mounted at {MOUNT_POINT}")
            } else {
                format!("not mounted yet ({})", outcome.mount)
            },
        );
        Ok(Observed::Done(facts))
    }

    fn apply(&self, cx: &Ctx) -> Result<()> {
        let l = cx.lan()?.ok_or("no LAN address")?;
        let m = if founder(cx) {
            settle_managers(cx, Duration::from_secs(600));
            create_cluster(cx, &l)?
        } else {
            match Material::load(&cx.root) {
                Some(m) if m.ready => m,
                _ => {
                    let m: Material = fetch_from_members(
                        cx,
                        &l,
                        TOPIC,
                        "the Ceph cluster",
                        Duration::from_secs(1800),
                    )?;
                    m.save(&cx.root)?;
                    m
                }
            }
        };
        write_client_files(cx, &m, &l)?;
        let clock = match m.time_source {
            Some(src) if src != l.addr => {
                crate::timesync::sync_with(cx, src, Duration::from_secs(90))?
            }
            _ => "this node is the cluster's time source".into(),
        };
        if !founder(cx) && swarm_manager(cx) {
            ensure_mon_node(cx, &m, &l)?;
        }
        wait_quorum(cx, Duration::from_secs(900))?;
        let osd = ensure_osd(cx, &m)?;
        let osds = osd_entries(cx)?.len();
        let (size, min) = adjust_pools(cx, osds)?;
        // No OSD anywhere yet: the fs cannot serve; the daemon mounts later.
        let wait = if osds == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(900)
        };
        let ok = ensure_mount(cx, wait)?;
        let outcome = OsdOutcome {
            fsid: m.fsid.clone(),
            osd: match osd {
                Osd::Up(id) => format!("osd.{id} up"),
                Osd::None(why) => why,
            },
            mount: if ok {
                "mounted".into()
            } else {
                "no OSD in the cluster yet".into()
            },
            pools: format!("size {size}, min_size {min}"),
            clock,
        };
        write_json(&cx.path(OSD_OUTCOME), &outcome, PUBLIC)
    }

    fn status(&self, cx: &Ctx) -> Vec<String> {
        status_text(cx).lines().map(str::to_string).collect()
    }
}

pub(super) const OSD_OUTCOME: &str = "/var/lib/hc-firstboot/ceph-node.json";

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct OsdOutcome {
    fsid: String,
    osd: String,
    mount: String,
    pools: String,
    clock: String,
}

/// `hc status` lines: health, quorum, OSDs, mount.
fn status_text(cx: &Ctx) -> String {
    if !enabled(cx) {
        return format!("ceph: off ({OFF})\n");
    }
    if !cx.path(CONF).is_file() {
        return "ceph: not joined yet\n".into();
    }
    let mut out = String::new();
    match mon_json(cx, json!({"prefix": "status"})) {
        Ok(v) => {
            let checks: Vec<String> = v["health"]["checks"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, c)| {
                            format!("{k} ({})", c["summary"]["message"].as_str().unwrap_or(""))
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "ceph health: {}{}\n",
                v["health"]["status"].as_str().unwrap_or("unknown"),
                if checks.is_empty() {
                    String::new()
                } else {
                    format!(": {}", checks.join("; "))
                }
            ));
            let q: Vec<&str> = v["quorum_names"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            out.push_str(&format!("ceph monitors in quorum: {}\n", q.join(" ")));
            let o = &v["osdmap"];
            out.push_str(&format!(
                "ceph osds: {} up, {} in, {} total\n",
                o["num_up_osds"], o["num_in_osds"], o["num_osds"]
            ));
        }
        Err(e) => out.push_str(&format!("ceph health: unknown ({e})\n")),
    }
    let outcome: OsdOutcome = read_json(&cx.path(OSD_OUTCOME));
    if !outcome.osd.is_empty() {
        out.push_str(&format!("ceph osd on this node: {}\n", outcome.osd));
    }
    out.push_str(&format!(
        "cephfs: {}\n",
        if mounted(&cx.root) {
            format!("mounted at {MOUNT_POINT}")
        } else {
            "not mounted".into()
        }
    ));
    let sync = cx
        .runner
        .run(&["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    out.push_str(&format!("clock synchronized: {sync}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_founder_waits_for_managers_only_when_three_nodes_are_heard() {
        // A lone card and a pair never get a second manager: no wait.
        assert!(!managers_pending(0, 1));
        assert!(!managers_pending(1, 1));
        // Three nodes: wait for the promotions, not past three managers.
        assert!(managers_pending(2, 1));
        assert!(!managers_pending(2, 3));
        assert!(!managers_pending(4, 3));
    }
}
