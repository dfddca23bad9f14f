// SPDX-License-Identifier: Apache-2.0
//! keepalived.conf from homecloud.toml and the cluster's members (device).
//! Unicast VRRP (home switches and Wi-Fi bridges drop multicast often
//! enough), every node BACKUP with `nopreempt`: the VIP stays where it is
//! when a better node comes back, so a rebooting node does not cut
//! connections twice. Priority follows node order.

use std::net::Ipv4Addr;

pub const CONF_PATH: &str = "/etc/keepalived/keepalived.conf";
/// The health of this node as a VIP holder: `0` when it may hold the VIP
/// (dockerd answers and the node is an active swarm member), anything else
/// when not. hc-cluster.service writes it; keepalived watches it (inotify),
/// so no check program runs every second on a small board.
pub const FAULT_FILE: &str = "/run/hc-firstboot/vip-fault";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vrrp {
    pub cluster: String,
    pub name: String,
    pub interface: String,
    pub addr: Ipv4Addr,
    /// Every member's LAN address, this node's included, in node order.
    pub members: Vec<Ipv4Addr>,
    /// `a.b.c.d/prefix`.
    pub vip: String,
    /// FAULT_FILE under the agent's root.
    pub fault_file: String,
}

/// VRRP router ids are one byte; derive one from the cluster name so two
/// homeclouds on one LAN do not collide by default.
pub fn router_id(cluster: &str) -> u8 {
    let h = cluster.bytes().fold(2166136261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16777619)
    });
    (h % 254 + 1) as u8
}

pub fn priority(members: &[Ipv4Addr], me: Ipv4Addr) -> u32 {
    let idx = members
        .iter()
        .position(|m| *m == me)
        .unwrap_or(members.len()) as u32;
    200u32.saturating_sub(10 * idx).max(10)
}

pub fn render(v: &Vrrp) -> String {
    let peers: String = v
        .members
        .iter()
        .filter(|m| **m != v.addr)
        .map(|m| format!("        {m}\n"))
        .collect();
    format!(
        "# Written by hc-firstboot from homecloud.toml; edits are overwritten.\n\
global_defs {{\n    router_id {name}\n}}\n\n\
track_file hc_ingress {{\n    file \"{fault}\"\n    weight 0\n    init_file 1\n}}\n\n\
vrrp_instance hc_vip {{\n    state BACKUP\n    nopreempt\n    interface {iface}\n    virtual_router_id {vrid}\n    priority {prio}\n    advert_int 1\n    unicast_src_ip {addr}\n    unicast_peer {{\n{peers}    }}\n    virtual_ipaddress {{\n        {vip} dev {iface}\n    }}\n    track_file {{\n        hc_ingress weight 0\n    }}\n}}\n",
        name = v.name,
        fault = v.fault_file,
        iface = v.interface,
        vrid = router_id(&v.cluster),
        prio = priority(&v.members, v.addr),
        addr = v.addr,
        peers = peers,
        vip = v.vip,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_unicast_peers_without_self_and_priority_by_order() {
        let m: Vec<Ipv4Addr> = ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        let v = Vrrp {
            cluster: "home".into(),
            name: "node2".into(),
            interface: "enp0s1".into(),
            addr: m[1],
            members: m.clone(),
            vip: "10.0.0.10/24".into(),
            fault_file: FAULT_FILE.into(),
        };
        let c = render(&v);
        assert!(c.contains("unicast_src_ip 10.0.0.12"));
        assert!(c.contains("        10.0.0.11\n        10.0.0.13\n"));
        assert!(!c.contains("        10.0.0.12\n"));
        assert!(c.contains("priority 190"));
        assert!(c.contains("10.0.0.10/24 dev enp0s1"));
        assert!(c.contains("nopreempt"));
        assert!(c.contains("file \"/run/hc-firstboot/vip-fault\""));
        assert_eq!(priority(&m, m[0]), 200);
        assert_ne!(router_id("home"), router_id("other"));
        assert!(router_id("x") >= 1);
    }
}
