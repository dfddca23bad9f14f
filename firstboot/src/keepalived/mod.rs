// SPDX-License-Identifier: Apache-2.0
//! The virtual IP (device): the `keepalived` step writes the VRRP
//! configuration (unicast peers, priority by node order); the daemon's
//! duties keep the peer list current and tell keepalived whether this node
//! can serve (its health input).

pub mod render;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use self::render::{render, Vrrp, CONF_PATH, FAULT_FILE};
use crate::cluster::discovery::Phase;
use crate::cluster::duty::{ClusterView, Duty, Schedule};
use crate::cluster::peers::{order_of, PeerFile};
use crate::engine::{failpoint, Ctx, Enabled, Observed, Result, Step};
use crate::host::files::{read_json, write_atomic, write_json, PUBLIC};
use crate::host::net::Lan;
use crate::host::node::current_hostname;
use crate::host::units;

/// Members' addresses by MAC, remembered across boots.
const MEMBERS: &str = "/var/lib/hc-firstboot/members.json";

pub struct Keepalived;

/// Members' LAN addresses in node order, this node included; remembered
/// across boots so a node that is down stays a unicast peer.
/// Members are the nodes announcing themselves as members: announcements are
/// authenticated with this cluster's secret, so they are of this cluster.
fn members(cx: &Ctx, l: &Lan) -> Vec<Ipv4Addr> {
    let before: BTreeMap<String, (u32, Ipv4Addr)> = read_json(&cx.path(MEMBERS));
    let mut known = before.clone();
    known.insert(l.mac.clone(), (order_of(&cx.config, &l.mac), l.addr));
    let file = PeerFile::load(&cx.root);
    for h in file.peers.peers.values() {
        if let Phase::Member { .. } = &h.ann.phase {
            known.insert(h.ann.node.clone(), (h.ann.order, h.ann.addr));
        }
    }
    // The daemon calls this every few seconds: write the card only on change.
    if known != before {
        let _ = write_json(&cx.path(MEMBERS), &known, PUBLIC);
    }
    let mut v: Vec<(u32, String, Ipv4Addr)> =
        known.into_iter().map(|(mac, (o, a))| (o, mac, a)).collect();
    v.sort();
    v.into_iter().map(|(_, _, a)| a).collect()
}

fn desired_conf(cx: &Ctx) -> Result<Option<String>> {
    let Some(vip) = cx.config.network.vip.clone() else {
        return Ok(None);
    };
    // No docker call here: a busy dockerd must not fail this step.
    let l = cx.lan()?.ok_or("no LAN address")?;
    let members = members(cx, &l);
    Ok(Some(render(&Vrrp {
        cluster: cx.config.cluster.name.clone(),
        name: current_hostname(&cx.root),
        interface: l.interface,
        addr: l.addr,
        members,
        vip,
        fault_file: cx.path(FAULT_FILE).display().to_string(),
    })))
}

impl Step for Keepalived {
    fn name(&self) -> &'static str {
        "keepalived"
    }

    fn enabled(&self, cx: &Ctx) -> Enabled {
        match cx.config.network.vip {
            Some(_) => Enabled::On,
            None => Enabled::Off("network.vip is not set"),
        }
    }

    fn observe(&self, cx: &Ctx) -> Result<Observed> {
        let Some(want) = desired_conf(cx)? else {
            return Ok(Observed::Pending);
        };
        let have = std::fs::read_to_string(cx.path(CONF_PATH)).unwrap_or_default();
        let active = cx
            .runner
            .run(&["systemctl", "is-active", "keepalived"])
            .is_ok();
        // The peer list is the daemon's to keep current (members join after
        // this step ran): this step needs the VIP configured and keepalived up.
        let same_vip = have.lines().find(|l| l.contains(" dev "))
            == want.lines().find(|l| l.contains(" dev "));
        if same_vip && active {
            let peers = want
                .lines()
                .filter(|l| l.starts_with("        ") && !l.contains("dev"))
                .count();
            return Ok(Observed::Done(BTreeMap::from([
                (
                    "vip".into(),
                    cx.config.network.vip.clone().unwrap_or_default(),
                ),
                ("unicast peers".into(), peers.to_string()),
            ])));
        }
        Ok(Observed::Pending)
    }

    fn apply(&self, cx: &Ctx) -> Result<()> {
        let Some(want) = desired_conf(cx)? else {
            return Ok(());
        };
        write_atomic(&cx.path(CONF_PATH), want.as_bytes(), PUBLIC)?;
        failpoint("keepalived:after-conf");
        // The package enables keepalived; the link is made again only if a
        // user removed it (systemctl enable reloaded systemd three times).
        units::want(&cx.root, "multi-user.target", "keepalived.service")?;
        cx.runner.run(&["systemctl", "restart", "keepalived"])?;
        Ok(())
    }

    /// The VIP and whether this node holds it.
    fn status(&self, cx: &Ctx) -> Vec<String> {
        let Some(vip) = std::fs::read_to_string(cx.path(CONF_PATH))
            .ok()
            .and_then(|c| {
                c.lines()
                    .skip_while(|l| !l.contains("virtual_ipaddress"))
                    .nth(1)
                    .and_then(|l| l.split_whitespace().next())
                    .map(str::to_string)
            })
        else {
            return Vec::new();
        };
        let ip = vip.split('/').next().unwrap_or(&vip);
        let held = cx
            .runner
            .run(&["ip", "-4", "-o", "addr", "show"])
            .is_ok_and(|o| o.contains(&format!("inet {ip}/")));
        vec![format!(
            "vip: {vip} {}",
            if held {
                "held by this node"
            } else {
                "held by another node"
            }
        )]
    }
}

/// New members change every node's unicast peers: re-render and reload.
pub struct Peers;

impl Duty for Peers {
    fn name(&self) -> &'static str {
        "keepalived peers"
    }

    fn schedule(&self) -> Schedule {
        Schedule::AfterPoll
    }

    fn tick(&self, cx: &Ctx, view: &ClusterView) {
        if !view.active() || !cx.path(CONF_PATH).is_file() {
            return; // the agent's keepalived step has not run yet
        }
        if let Ok(Some(want)) = desired_conf(cx) {
            let have = std::fs::read_to_string(cx.path(CONF_PATH)).unwrap_or_default();
            if have != want && write_atomic(&cx.path(CONF_PATH), want.as_bytes(), PUBLIC).is_ok() {
                let _ = cx.runner.run(&["systemctl", "reload", "keepalived"]);
            }
        }
    }
}

/// keepalived's health input: a fault while this node is not in an active
/// swarm. Written on change only (keepalived rereads it on every change).
pub struct Health {
    was_fault: Mutex<Option<bool>>,
}

impl Health {
    pub const fn new() -> Self {
        Health {
            was_fault: Mutex::new(None),
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Duty for Health {
    fn name(&self) -> &'static str {
        "keepalived health"
    }

    fn schedule(&self) -> Schedule {
        Schedule::AfterPoll
    }

    fn tick(&self, cx: &Ctx, view: &ClusterView) {
        let fault = !view.active();
        let Ok(mut was) = self.was_fault.lock() else {
            return;
        };
        if *was != Some(fault)
            && write_atomic(
                &cx.path(FAULT_FILE),
                if fault { b"1\n" } else { b"0\n" },
                PUBLIC,
            )
            .is_ok()
        {
            *was = Some(fault);
        }
    }
}
