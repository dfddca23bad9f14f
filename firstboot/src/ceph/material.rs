// SPDX-License-Identifier: Apache-2.0
//! The cluster's material (fsid, keys, monitors) and what is made from it on
//! every node: ceph.conf sized for the board's memory, and keyrings.

use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::{Ctx, Result};
use crate::host::files::{read_json, write_atomic, write_json, PUBLIC, SECRET};
use crate::host::net::Lan;

pub const CONF: &str = "/etc/ceph/ceph.conf";
pub const ADMIN_KEYRING: &str = "/etc/ceph/ceph.client.admin.keyring";
pub(super) const BOOTSTRAP_OSD_KEYRING: &str = "/var/lib/ceph/bootstrap-osd/ceph.keyring";
/// fsid and keys, root-only: written before anything is made from them, so
/// a power cut never leads to a second fsid.
/// The manager's module directory, made by mon.rs's mgr_modules().
pub(super) const MGR_MODULES: &str = "/var/lib/ceph/hc-mgr-modules";
pub const MATERIAL: &str = "/var/lib/hc-firstboot/ceph.json";
/// This node's OSD uuid and cephx key, made once (root-only): `osd new`
/// with the same pair returns the same id, so a cut never leaves two OSDs.
pub(super) const OSD_IDENTITY: &str = "/var/lib/hc-firstboot/osd.json";
pub const SECRET_FILE: &str = "/etc/ceph/homecloud.secret";
pub const MOUNT_POINT: &str = "/mnt/cephfs";
pub const FS: &str = "homecloud";
pub(super) const CLIENT: &str = "homecloud";
pub(super) const META_POOL: &str = "homecloud_metadata";
pub(super) const DATA_POOL: &str = "homecloud_data";
/// With this many MDS daemons, one is wanted on standby.
pub(super) const MDS_FOR_STANDBY: usize = 2;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Material {
    pub fsid: String,
    pub mon_key: String,
    pub admin_key: String,
    pub bootstrap_osd_key: String,
    /// Monitor name and address, as last known.
    pub mons: Vec<(String, Ipv4Addr)>,
    /// The first monitor formed a quorum: joiners may use this.
    #[serde(default)]
    pub ready: bool,
    /// The founder: the cluster's time source.
    #[serde(default)]
    pub time_source: Option<Ipv4Addr>,
}

impl Material {
    pub fn load(root: &Path) -> Option<Material> {
        let m: Material = read_json(&root.join(MATERIAL.trim_start_matches('/')));
        (!m.fsid.is_empty()).then_some(m)
    }

    pub(super) fn save(&self, root: &Path) -> Result<()> {
        let p = root.join(MATERIAL.trim_start_matches('/'));
        write_json(&p, self, SECRET)
    }
}

/// The cluster's time source and the monitors' addresses (ceph.conf's
/// `mon_host` and the material's list, which the daemon keeps): whom to
/// ask for the time.
pub fn clock_peers(root: &Path) -> (Option<Ipv4Addr>, Vec<Ipv4Addr>) {
    let m = Material::load(root);
    let conf = std::fs::read_to_string(root.join(CONF.trim_start_matches('/'))).unwrap_or_default();
    let mut peers = mon_hosts(&conf);
    for a in m.iter().flat_map(|m| m.mons.iter().map(|(_, a)| *a)) {
        if !peers.contains(&a) {
            peers.push(a);
        }
    }
    (m.and_then(|m| m.time_source), peers)
}

/// The addresses in ceph.conf's `mon_host` (plain or `v2:a:3300` forms).
pub fn mon_hosts(conf: &str) -> Vec<Ipv4Addr> {
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("mon_host"))
        .filter_map(|r| r.trim_start().strip_prefix('='))
        .flat_map(|r| r.split([',', ' ', '[', ']', '/']))
        .filter_map(|h| {
            let h = h.trim().trim_start_matches("v2:").trim_start_matches("v1:");
            h.split(':').next().and_then(|a| a.parse().ok())
        })
        .collect()
}

/// Writes a secret file: never world-readable, not even for a moment.
pub(super) fn write_secret(p: &Path, data: &[u8]) -> Result<()> {
    write_atomic(p, data, SECRET)
}

/// Cache and memory targets for a node with `ram` bytes: a 2 GB board runs
/// a monitor, manager, MDS and OSD beside dockerd and the services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    pub osd_memory_target: u64,
    pub mon_memory_target: u64,
    pub mds_cache_memory_limit: u64,
}

pub(super) const MIB: u64 = 1 << 20;

pub fn memory_plan(ram: u64) -> MemoryPlan {
    MemoryPlan {
        // 896 MiB is Ceph's floor (osd_memory_base + osd_memory_cache_min).
        osd_memory_target: (ram / 3).clamp(896 * MIB, 4096 * MIB),
        mon_memory_target: (ram / 8).clamp(256 * MIB, 2048 * MIB),
        mds_cache_memory_limit: (ram / 16).clamp(64 * MIB, 4096 * MIB),
    }
}

pub fn ram_bytes(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// `ceph.conf`: what clients and daemons need before they reach a monitor,
/// plus the small-board and small-cluster settings.
pub fn render_conf(m: &Material, network: &str, mem: MemoryPlan) -> String {
    let hosts: Vec<String> = m.mons.iter().map(|(_, a)| a.to_string()).collect();
    format!(
        "# Written by hc-firstboot; rewritten when monitors change.
[global]
fsid = {fsid}
mon_host = {hosts}
public_network = {network}
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
# No old clients here: only secure global_id reclaim.
auth_allow_insecure_global_id_reclaim = false
# Pools follow the node count (1, 2, 3): one node has size 1 on purpose.
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_autoscale_mode = off
# Only the always-on manager modules: each one costs memory.
mgr_initial_modules = iostat
bluestore_fsck_on_mkfs = false
# Slow boards (and emulators) miss 20 s heartbeats under load.
osd_heartbeat_grace = 40

[mon]
# A loaded single-core board (or emulator) misses the 5 s lease: in a
# failed CI run the three monitors re-elected every ~10 s for 20 minutes
# and no command went through (issue 18).
mon_lease = 20
mon_election_timeout = 15
# A manager on a starved core may go a minute without a beacon; at the
# 30 s default the monitors would fail it over. Kept from the run that
# passed (issue 18); a respawn loop was suspected, not seen. The price:
# a dead active manager is replaced after five minutes.
mon_mgr_beacon_grace = 300
mon_memory_target = {mon}
# Below the target, or the monitor cannot size its caches.
rocksdb_cache_size = {mon_kv}

[osd]
osd_memory_target = {osd}

[mds]
mds_cache_memory_limit = {mds}

[mgr]
# The modules the manager loads (see mgr_modules()).
mgr_module_path = {MGR_MODULES}
",
        fsid = m.fsid,
        hosts = hosts.join(","),
        mon = mem.mon_memory_target,
        mon_kv = mem.mon_memory_target / 2,
        osd = mem.osd_memory_target,
        mds = mem.mds_cache_memory_limit,
    )
}

pub(super) fn keyring(name: &str, key: &str, caps: &[(&str, &str)]) -> String {
    let mut s = format!("[{name}]\n\tkey = {key}\n");
    for (k, v) in caps {
        s.push_str(&format!("\tcaps {k} = \"{v}\"\n"));
    }
    s
}

pub(super) const ADMIN_CAPS: &[(&str, &str)] = &[
    ("mds", "allow *"),
    ("mgr", "allow *"),
    ("mon", "allow *"),
    ("osd", "allow *"),
];
pub(super) const BOOTSTRAP_OSD_CAPS: &[(&str, &str)] =
    &[("mgr", "allow r"), ("mon", "profile bootstrap-osd")];

/// The keyring `ceph-mon --mkfs` seeds the auth database from.
pub fn mon_keyring(m: &Material) -> String {
    format!(
        "{}{}{}",
        keyring("mon.", &m.mon_key, &[("mon", "allow *")]),
        keyring("client.admin", &m.admin_key, ADMIN_CAPS),
        keyring(
            "client.bootstrap-osd",
            &m.bootstrap_osd_key,
            BOOTSTRAP_OSD_CAPS
        )
    )
}

pub(super) fn network_of(l: &Lan) -> String {
    let bits = u32::from(l.addr);
    let mask = if l.prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(l.prefix))
    };
    format!("{}/{}", Ipv4Addr::from(bits & mask), l.prefix)
}

/// Writes conf and keyrings for `m` (this node a monitor or not).
pub(super) fn write_client_files(cx: &Ctx, m: &Material, l: &Lan) -> Result<()> {
    let ram = std::fs::read_to_string(cx.path("/proc/meminfo"))
        .ok()
        .and_then(|t| ram_bytes(&t))
        .unwrap_or(2 << 30);
    let conf = render_conf(m, &network_of(l), memory_plan(ram));
    let p = cx.path(CONF);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    if std::fs::read_to_string(&p).ok().as_deref() != Some(conf.as_str()) {
        write_atomic(&p, conf.as_bytes(), PUBLIC)?;
    }
    write_secret(
        &cx.path(ADMIN_KEYRING),
        keyring("client.admin", &m.admin_key, ADMIN_CAPS).as_bytes(),
    )?;
    let b = cx.path(BOOTSTRAP_OSD_KEYRING);
    write_secret(
        &b,
        keyring(
            "client.bootstrap-osd",
            &m.bootstrap_osd_key,
            BOOTSTRAP_OSD_CAPS,
        )
        .as_bytes(),
    )?;
    Ok(())
}

pub(super) fn gen_key(cx: &Ctx) -> Result<String> {
    Ok(cx
        .runner
        .run(&["ceph-authtool", "--gen-print-key"])?
        .trim()
        .to_string())
}

pub(super) fn uuid() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| format!("no randomness: {e}"))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_follows_ram_within_ceph_limits() {
        let p = memory_plan(2 << 30);
        assert_eq!(p.osd_memory_target, 896 * MIB);
        assert_eq!(p.mon_memory_target, 256 * MIB);
        assert_eq!(p.mds_cache_memory_limit, 128 * MIB);
        let p = memory_plan(4 << 30);
        assert_eq!(p.osd_memory_target, (4 << 30) / 3);
        assert_eq!(p.mon_memory_target, 512 * MIB);
        let p = memory_plan(64 << 30);
        assert_eq!(p.osd_memory_target, 4096 * MIB);
        assert_eq!(
            ram_bytes("MemTotal:        2030092 kB\nMemFree: 1 kB\n"),
            Some(2030092 * 1024)
        );
    }

    #[test]
    fn conf_names_fsid_monitors_network_and_memory() {
        let m = Material {
            fsid: "f".into(),
            mons: vec![
                ("node1".into(), Ipv4Addr::new(10, 0, 0, 11)),
                ("node2".into(), Ipv4Addr::new(10, 0, 0, 12)),
            ],
            ..Material::default()
        };
        let c = render_conf(&m, "10.0.0.0/24", memory_plan(2 << 30));
        assert!(c.contains("fsid = f\n"));
        assert!(c.contains("mon_host = 10.0.0.11,10.0.0.12\n"));
        assert_eq!(
            mon_hosts(&c),
            [Ipv4Addr::new(10, 0, 0, 11), Ipv4Addr::new(10, 0, 0, 12)]
        );
        assert_eq!(
            mon_hosts("mon_host = [v2:10.0.0.13:3300/0,v1:10.0.0.13:6789/0]\n"),
            [Ipv4Addr::new(10, 0, 0, 13); 2]
        );
        assert!(c.contains("public_network = 10.0.0.0/24\n"));
        assert!(
            c.contains("mon_lease = 20\n"),
            "a loaded board misses the 5 s lease"
        );
        assert!(c.contains(&format!("osd_memory_target = {}\n", 896 * MIB)));
        let l = Lan {
            interface: "e".into(),
            mac: "m".into(),
            addr: Ipv4Addr::new(192, 168, 7, 33),
            prefix: 20,
            broadcast: Ipv4Addr::new(192, 168, 15, 255),
        };
        assert_eq!(network_of(&l), "192.168.0.0/20");
    }

    #[test]
    fn the_clock_is_asked_of_every_monitor_the_node_knows() {
        let d = tempfile::tempdir().expect("tempdir");
        let a = |s: &str| -> Ipv4Addr { s.parse().expect("addr") };
        let conf = d.path().join(CONF.trim_start_matches('/'));
        std::fs::create_dir_all(conf.parent().expect("dir")).expect("mkdir");
        // The founder's ceph.conf names only itself; the daemon kept the map.
        std::fs::write(&conf, "[global]\nmon_host = 10.0.0.11\n").expect("conf");
        let m = Material {
            fsid: "f".into(),
            mons: vec![
                ("node1".into(), a("10.0.0.11")),
                ("node2".into(), a("10.0.0.12")),
                ("node3".into(), a("10.0.0.13")),
            ],
            time_source: Some(a("10.0.0.11")),
            ..Material::default()
        };
        m.save(d.path()).expect("save");
        assert_eq!(
            clock_peers(d.path()),
            (
                Some(a("10.0.0.11")),
                vec![a("10.0.0.11"), a("10.0.0.12"), a("10.0.0.13")]
            )
        );
    }

    #[test]
    fn keyrings_carry_keys_and_caps() {
        let m = Material {
            mon_key: "MK".into(),
            admin_key: "AK".into(),
            bootstrap_osd_key: "BK".into(),
            ..Material::default()
        };
        let k = mon_keyring(&m);
        assert!(k.starts_with("[mon.]\n\tkey = MK\n\tcaps mon = \"allow *\"\n"));
        assert!(k.contains("[client.admin]\n\tkey = AK\n"));
        assert!(k.contains("[client.bootstrap-osd]\n\tkey = BK\n\tcaps mgr = \"allow r\"\n\tcaps mon = \"profile bootstrap-osd\"\n"));
    }

    #[test]
    fn uuids_are_version_4() {
        let u = uuid().expect("uuid");
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid().expect("uuid"));
    }
}
