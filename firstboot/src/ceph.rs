// SPDX-License-Identifier: Apache-2.0
//! Ceph (device): the agent's `ceph` step and the daemon's Ceph duties,
//! with Debian's native daemons (no cephadm: it needs a registry).
//!
//! The node that founded the swarm creates the cluster (fsid, keys, first
//! monitor, manager, MDS, pools, CephFS). Every other node gets the fsid,
//! keys and monitor addresses only over the join channel. Swarm managers run
//! the monitors and managers (one, then three: the swarm's own promotion
//! rule); an OSD goes on `storage.osd_device` of every storage node; CephFS
//! is mounted at /mnt/cephfs by a systemd mount unit.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::agent::{failpoint, ids, journal, Ctx, Observed, Result, Step};
use crate::cluster::{current_hostname, lan, read_json, write_json, Lan};
use crate::config::Role;
use crate::identity::write_atomic;

pub const CONF: &str = "/etc/ceph/ceph.conf";
pub const ADMIN_KEYRING: &str = "/etc/ceph/ceph.client.admin.keyring";
const BOOTSTRAP_OSD_KEYRING: &str = "/var/lib/ceph/bootstrap-osd/ceph.keyring";
/// fsid and keys, root-only: written before anything is made from them, so
/// a power cut never leads to a second fsid.
pub const MATERIAL: &str = "/var/lib/hc-firstboot/ceph.json";
/// Written before `swarm init`, removed before `swarm join`: the node that
/// creates the swarm also creates the Ceph cluster.
pub const FOUNDER: &str = "/var/lib/hc-firstboot/ceph-founder";
/// This node's OSD uuid and cephx key, made once (root-only): `osd new`
/// with the same pair returns the same id, so a cut never leaves two OSDs.
const OSD_IDENTITY: &str = "/var/lib/hc-firstboot/osd.json";
pub const SECRET_FILE: &str = "/etc/ceph/homecloud.secret";
pub const MOUNT_POINT: &str = "/mnt/cephfs";
pub const MOUNT_UNIT: &str = "/etc/systemd/system/mnt-cephfs.mount";
pub const FS: &str = "homecloud";
const CLIENT: &str = "homecloud";
const META_POOL: &str = "homecloud_metadata";
const DATA_POOL: &str = "homecloud_data";
/// With this many MDS daemons, one is wanted on standby.
const MDS_FOR_STANDBY: usize = 2;

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

    fn save(&self, root: &Path) -> Result<()> {
        let p = root.join(MATERIAL.trim_start_matches('/'));
        write_json(&p, self)?;
        set_mode(&p, 0o600)
    }
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", p.display()))
}

/// Writes a secret file: never world-readable, not even for a moment.
fn write_secret(p: &Path, data: &[u8]) -> Result<()> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = p.with_extension("hc-tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, p).map_err(|e| format!("renaming to {}: {e}", p.display()))
}

/// Cache and memory targets for a node with `ram` bytes: a 2 GB board runs
/// a monitor, manager, MDS and OSD beside dockerd and the services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    pub osd_memory_target: u64,
    pub mon_memory_target: u64,
    pub mds_cache_memory_limit: u64,
}

const MIB: u64 = 1 << 20;

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

fn keyring(name: &str, key: &str, caps: &[(&str, &str)]) -> String {
    let mut s = format!("[{name}]\n\tkey = {key}\n");
    for (k, v) in caps {
        s.push_str(&format!("\tcaps {k} = \"{v}\"\n"));
    }
    s
}

const ADMIN_CAPS: &[(&str, &str)] = &[
    ("mds", "allow *"),
    ("mgr", "allow *"),
    ("mon", "allow *"),
    ("osd", "allow *"),
];
const BOOTSTRAP_OSD_CAPS: &[(&str, &str)] = &[("mgr", "allow r"), ("mon", "profile bootstrap-osd")];

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

fn network_of(l: &Lan) -> String {
    let bits = u32::from(l.addr);
    let mask = if l.prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(l.prefix))
    };
    format!("{}/{}", Ipv4Addr::from(bits & mask), l.prefix)
}

/// A monitor command (the JSON `ceph --verbose` shows), through librados:
/// the `ceph` CLI is Python, seconds of CPU per call on a small board.
/// Connecting and each command are bounded, so a cluster without quorum
/// never hangs the agent.
fn mon_in(cx: &Ctx, cmd: &Value, inbuf: &[u8]) -> Result<Vec<u8>> {
    cx.runner
        .mon_command(&cx.root, &cmd.to_string(), inbuf)
        .map_err(|e| format!("ceph {}: {e}", cmd["prefix"].as_str().unwrap_or("?")))
}

fn mon(cx: &Ctx, cmd: Value) -> Result<Vec<u8>> {
    mon_in(cx, &cmd, b"")
}

fn mon_json(cx: &Ctx, mut cmd: Value) -> Result<Value> {
    cmd["format"] = "json".into();
    let out = mon(cx, cmd.clone())?;
    serde_json::from_slice(&out).map_err(|e| {
        format!(
            "ceph {}: unexpected output: {e}",
            cmd["prefix"].as_str().unwrap_or("?")
        )
    })
}

/// Writes conf and keyrings for `m` (this node a monitor or not).
fn write_client_files(cx: &Ctx, m: &Material, l: &Lan) -> Result<()> {
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
        write_atomic(&p, conf.as_bytes())?;
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

fn gen_key(cx: &Ctx) -> Result<String> {
    Ok(cx
        .runner
        .run(&["ceph-authtool", "--gen-print-key"])?
        .trim()
        .to_string())
}

fn uuid() -> Result<String> {
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

fn mon_dir(name: &str) -> String {
    format!("/var/lib/ceph/mon/ceph-{name}")
}

/// This node's monitor exists (made to the end: `done` is written last).
pub fn has_mon(root: &Path, name: &str) -> bool {
    root.join(mon_dir(name).trim_start_matches('/'))
        .join("done")
        .is_file()
}

fn chown_ceph(cx: &Ctx, p: &str) -> Result<()> {
    let full = cx.path(p).display().to_string();
    cx.runner
        .run(&["chown", "-R", "ceph:ceph", &full])
        .map(|_| ())
}

fn enable_now(cx: &Ctx, unit: &str) -> Result<()> {
    cx.runner.run(&["systemctl", "reset-failed", unit]).ok();
    cx.runner.run(&["systemctl", "enable", unit])?;
    cx.runner.run(&["systemctl", "start", unit]).map(|_| ())
}

/// Makes this node's monitor: from a new monmap on the founder, from the
/// cluster's current map on a node joining a running cluster.
fn make_mon(cx: &Ctx, m: &Material, name: &str, addr: Ipv4Addr, first: bool) -> Result<()> {
    if has_mon(&cx.root, name) {
        return enable_now(cx, &format!("ceph-mon@{name}"));
    }
    let dir = mon_dir(name);
    // A half-made store (power cut during mkfs) is made again.
    let _ = std::fs::remove_dir_all(cx.path(&dir));
    let tmp = "/var/lib/ceph/tmp";
    std::fs::create_dir_all(cx.path(tmp)).map_err(|e| format!("creating {tmp}: {e}"))?;
    let kr = format!("{tmp}/hc-mon.keyring");
    let map = format!("{tmp}/hc-monmap");
    write_secret(&cx.path(&kr), mon_keyring(m).as_bytes())?;
    if first {
        cx.runner.run(&[
            "monmaptool",
            "--create",
            "--clobber",
            "--fsid",
            &m.fsid,
            "--addv",
            name,
            &format!("[v2:{addr}:3300,v1:{addr}:6789]"),
            &cx.path(&map).display().to_string(),
        ])?;
    } else {
        let bytes = mon(cx, json!({"prefix": "mon getmap"}))?;
        std::fs::write(cx.path(&map), bytes).map_err(|e| format!("writing {map}: {e}"))?;
    }
    std::fs::create_dir_all(cx.path(&dir)).map_err(|e| format!("creating {dir}: {e}"))?;
    chown_ceph(cx, tmp)?;
    chown_ceph(cx, &dir)?;
    cx.runner.run(&[
        "ceph-mon",
        "--mkfs",
        "-i",
        name,
        "--monmap",
        &cx.path(&map).display().to_string(),
        "--keyring",
        &cx.path(&kr).display().to_string(),
        "--public-addr",
        &addr.to_string(),
        "--setuser",
        "ceph",
        "--setgroup",
        "ceph",
    ])?;
    let _ = std::fs::remove_file(cx.path(&kr));
    failpoint("ceph:after-mon-mkfs");
    let done = cx.path(&format!("{dir}/done"));
    std::fs::write(&done, b"").map_err(|e| format!("writing {}: {e}", done.display()))?;
    chown_ceph(cx, &dir)?;
    enable_now(cx, &format!("ceph-mon@{name}"))
}

/// Waits until the monitors answer with a quorum.
fn wait_quorum(cx: &Ctx, limit: Duration) -> Result<serde_json::Value> {
    let t = Instant::now();
    loop {
        match mon_json(cx, json!({"prefix": "quorum_status"})) {
            Ok(v) if v["quorum_names"].as_array().is_some_and(|q| !q.is_empty()) => return Ok(v),
            Ok(_) => {}
            Err(e) if t.elapsed() > limit => {
                return Err(format!("the monitors formed no quorum in {limit:?}: {e}"))
            }
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

fn make_keyed_daemon(cx: &Ctx, kind: &str, name: &str, caps: &[&str]) -> Result<()> {
    let dir = format!("/var/lib/ceph/{kind}/ceph-{name}");
    let kr = format!("{dir}/keyring");
    if !cx.path(&kr).is_file() {
        let keyring = mon(
            cx,
            json!({"prefix": "auth get-or-create", "entity": format!("{kind}.{name}"), "caps": caps}),
        )?;
        write_secret(&cx.path(&kr), &keyring)?;
        chown_ceph(cx, &dir)?;
    }
    enable_now(cx, &format!("ceph-{kind}@{name}"))
}

/// The manager's module directory: links to Debian's modules, the
/// always-on ones and iostat only (the manager loads every module it finds,
/// each in its own Python sub-interpreter: about 20 s apiece on an emulated
/// or small board, and memory), plus the bcrypt stand-in.
const MGR_MODULES: &str = "/var/lib/ceph/hc-mgr-modules";
const MGR_SOURCE: &str = "/usr/share/ceph/mgr";
const MGR_KEEP: &[&str] = &[
    "balancer",
    "crash",
    "devicehealth",
    "iostat",
    "orchestrator",
    "pg_autoscaler",
    "progress",
    "rbd_support",
    "status",
    "telemetry",
    "volumes",
    "mgr_module.py",
    "mgr_util.py",
    "object_format.py",
];
const BCRYPT_STANDIN: &str = "/usr/lib/hc-image/ceph-mgr/bcrypt.py";

fn mgr_modules(cx: &Ctx) -> Result<()> {
    let dir = cx.path(MGR_MODULES);
    let tmp = cx.path(&format!("{MGR_MODULES}.hc-tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let link = |target: String, name: &str| {
        std::os::unix::fs::symlink(&target, tmp.join(name))
            .map_err(|e| format!("linking {target} into {MGR_MODULES}: {e}"))
    };
    for m in MGR_KEEP {
        link(format!("{MGR_SOURCE}/{m}"), m)?;
    }
    link(BCRYPT_STANDIN.to_string(), "bcrypt.py")?;
    // The base's compiled caches for mgr_module.py and its siblings.
    link(format!("{MGR_SOURCE}/__pycache__"), "__pycache__")?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| format!("renaming to {}: {e}", dir.display()))
}

fn make_mgr(cx: &Ctx, name: &str) -> Result<()> {
    mgr_modules(cx)?;
    make_keyed_daemon(
        cx,
        "mgr",
        name,
        &[
            "mon",
            "allow profile mgr",
            "osd",
            "allow *",
            "mds",
            "allow *",
        ],
    )
}

fn make_mds(cx: &Ctx, name: &str) -> Result<()> {
    make_keyed_daemon(
        cx,
        "mds",
        name,
        &[
            "mon",
            "profile mds",
            "mgr",
            "profile mds",
            "mds",
            "allow *",
            "osd",
            "allow *",
        ],
    )
}

fn mds_count(cx: &Ctx) -> usize {
    mon_json(cx, json!({"prefix": "fs dump"})).map_or(0, |v| {
        let standbys = v["standbys"].as_array().map_or(0, Vec::len);
        let active: usize = v["filesystems"].as_array().map_or(0, |fs| {
            fs.iter()
                .map(|f| f["mdsmap"]["info"].as_object().map_or(0, |o| o.len()))
                .sum()
        });
        standbys + active
    })
}

/// Monitor, manager and (up to two) MDS on a swarm manager.
pub fn ensure_mon_node(cx: &Ctx, m: &Material, l: &Lan) -> Result<()> {
    let name = current_hostname(cx);
    let fresh = !has_mon(&cx.root, &name);
    if fresh {
        let mut mm = m.clone();
        if !mm.mons.iter().any(|(n, _)| *n == name) {
            mm.mons.push((name.clone(), l.addr));
        }
        make_mon(cx, &mm, &name, l.addr, false)?;
        write_client_files(cx, &mm, l)?;
        mm.save(&cx.root)?;
        journal(
            ids::CEPH_MON,
            5,
            &format!("ceph: monitor {name} added at {}", l.addr),
            &[],
        );
    } else {
        enable_now(cx, &format!("ceph-mon@{name}"))?;
    }
    make_mgr(cx, &name)?;
    // Every monitor node runs an MDS (one active, the others standby): a
    // count-based choice raced when two nodes were promoted at once.
    make_mds(cx, &name)?;
    if mds_count(cx) >= MDS_FOR_STANDBY {
        let _ = fs_set(cx, "standby_count_wanted", "1");
    }
    Ok(())
}

/// The founder's part: fsid, keys, first monitor, manager, MDS, pools, fs.
fn create_cluster(cx: &Ctx, l: &Lan) -> Result<Material> {
    let name = current_hostname(cx);
    let mut m = match Material::load(&cx.root) {
        Some(m) => m,
        None => {
            let m = Material {
                fsid: uuid()?,
                mon_key: gen_key(cx)?,
                admin_key: gen_key(cx)?,
                bootstrap_osd_key: gen_key(cx)?,
                mons: vec![(name.clone(), l.addr)],
                ready: false,
                time_source: Some(l.addr),
            };
            m.save(&cx.root)?;
            journal(
                ids::CEPH_CREATED,
                5,
                &format!("ceph: creating cluster {}", m.fsid),
                &[("HC_CEPH_FSID", &m.fsid)],
            );
            m
        }
    };
    failpoint("ceph:after-material");
    write_client_files(cx, &m, l)?;
    make_mon(cx, &m, &name, l.addr, true)?;
    wait_quorum(cx, Duration::from_secs(900))?;
    if !m.ready {
        m.ready = true;
        m.save(&cx.root)?;
    }
    make_mgr(cx, &name)?;
    ensure_fs(cx)?;
    make_mds(cx, &name)?;
    Ok(m)
}

fn fs_set(cx: &Ctx, var: &str, val: &str) -> Result<()> {
    mon(
        cx,
        json!({"prefix": "fs set", "fs_name": FS, "var": var, "val": val}),
    )
    .map(|_| ())
}

fn pools(cx: &Ctx) -> Result<Vec<(String, u64, u64)>> {
    let v = mon_json(cx, json!({"prefix": "osd pool ls", "detail": "detail"}))?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["pool_name"].as_str().unwrap_or_default().to_string(),
                        p["size"].as_u64().unwrap_or(0),
                        p["min_size"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

fn ensure_fs(cx: &Ctx) -> Result<()> {
    let have: Vec<String> = pools(cx)?.into_iter().map(|p| p.0).collect();
    for (pool, pgs) in [(META_POOL, 16), (DATA_POOL, 32)] {
        if !have.iter().any(|p| p == pool) {
            mon(
                cx,
                json!({"prefix": "osd pool create", "pool": pool, "pg_num": pgs, "pgp_num": pgs}),
            )?;
        }
    }
    let fs = mon_json(cx, json!({"prefix": "fs ls"}))?;
    let exists = fs
        .as_array()
        .is_some_and(|a| a.iter().any(|f| f["name"] == FS));
    if !exists {
        mon(
            cx,
            json!({"prefix": "fs new", "fs_name": FS, "metadata": META_POOL, "data": DATA_POOL}),
        )?;
        fs_set(cx, "standby_count_wanted", "0")?;
    }
    Ok(())
}

/// Pool size and min_size for a cluster with `osds` OSDs (one per node).
pub fn replication(osds: usize) -> (u64, u64) {
    match osds {
        0 | 1 => (1, 1),
        2 => (2, 1),
        _ => (3, 2),
    }
}

/// Raises every pool to the size the OSD count allows; never lowers it (a
/// node that is down still counts: its data comes back with it).
fn adjust_pools(cx: &Ctx, osds: usize) -> Result<(u64, u64)> {
    let (size, min) = replication(osds);
    for (pool, have, have_min) in pools(cx)? {
        if have < size {
            mon(
                cx,
                json!({"prefix": "osd pool set", "pool": pool, "var": "size", "val": size.to_string(), "yes_i_really_mean_it": true}),
            )?;
        }
        if have_min != min && have <= size {
            mon(
                cx,
                json!({"prefix": "osd pool set", "pool": pool, "var": "min_size", "val": min.to_string()}),
            )?;
        }
    }
    for (key, v) in [
        ("osd_pool_default_size", size),
        ("osd_pool_default_min_size", min),
    ] {
        mon(
            cx,
            json!({"prefix": "config set", "who": "global", "name": key, "value": v.to_string()}),
        )?;
    }
    Ok((size, min))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsdEntry {
    pub id: u64,
    pub uuid: String,
    pub up: bool,
}

pub fn parse_osd_dump(v: &serde_json::Value) -> Vec<OsdEntry> {
    v["osds"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| OsdEntry {
                    id: o["osd"].as_u64().unwrap_or(u64::MAX),
                    uuid: o["uuid"].as_str().unwrap_or_default().to_string(),
                    up: o["up"].as_u64() == Some(1),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What this node's data disk holds, as `wipefs` sees it: empty if nothing.
pub fn signatures(wipefs: &str) -> Vec<String> {
    let mut v: Vec<String> = wipefs
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    v.dedup();
    v
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Osd {
    Up(u64),
    /// Not made, and why (shown by `hc status`).
    None(String),
}

fn storage_node(cx: &Ctx) -> bool {
    let name = current_hostname(cx);
    cx.config
        .nodes
        .iter()
        .find(|n| n.name == name)
        .is_none_or(|n| n.roles.is_empty() || n.roles.contains(&Role::Storage))
}

/// Mount points on `dev` and its partitions, from `lsblk -n -o MOUNTPOINT`.
pub fn mountpoints(lsblk: &str) -> Vec<String> {
    lsblk
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Signatures on `dev` (`wipefs --no-act`): nothing is written.
fn disk_signatures(cx: &Ctx, dev: &str) -> Result<Vec<String>> {
    Ok(signatures(&cx.runner.run(&[
        "wipefs",
        "--no-act",
        "--noheadings",
        "--output",
        "TYPE",
        dev,
    ])?))
}

/// The bluestore label on `dev` (`ceph-bluestore-tool show-label`):
/// (osd uuid, cluster fsid), if it has one.
pub fn bluestore_label(show_label: &str) -> Option<(String, String)> {
    let v: Value = serde_json::from_str(show_label).ok()?;
    let l = v.as_object()?.values().next()?;
    Some((
        l["osd_uuid"].as_str()?.to_string(),
        l["ceph_fsid"].as_str()?.to_string(),
    ))
}

/// Refusals are decided before anything is written to the disk; `sigs`
/// is what the disk holds.
fn refusal(
    cx: &Ctx,
    dev: &str,
    sigs: &[String],
    m: &Material,
    uuid: &str,
) -> Result<Option<String>> {
    // The system disk (or any disk in use) never, whatever `wipe` says:
    // on a PC, /dev/sda is usually the boot disk.
    let mounts = mountpoints(&cx.runner.run(&["lsblk", "-n", "-o", "MOUNTPOINT", dev])?);
    if !mounts.is_empty() {
        return Ok(Some(format!(
            "refused: {dev} (storage.osd_device in homecloud.toml) holds mounted filesystems ({}); it is never used for an OSD, even with storage.wipe = true. Name the data disk",
            mounts.join(", ")
        )));
    }
    if sigs.is_empty() {
        return Ok(None);
    }
    // Our own OSD, left half-made by a cut: ours to redo.
    let ours = cx
        .runner
        .run(&["ceph-bluestore-tool", "show-label", "--dev", dev])
        .ok()
        .and_then(|o| bluestore_label(&o))
        .is_some_and(|(osd, fsid)| osd == uuid && fsid == m.fsid);
    if ours || cx.config.storage.wipe {
        return Ok(None);
    }
    Ok(Some(format!(
        "refused: {dev} holds {} (storage.osd_device in homecloud.toml); nothing was written to it. Set storage.wipe = true to let hc-firstboot erase it, or name an empty disk",
        sigs.join(", ")
    )))
}

fn osd_entries(cx: &Ctx) -> Result<Vec<OsdEntry>> {
    Ok(parse_osd_dump(&mon_json(
        cx,
        json!({"prefix": "osd dump"}),
    )?))
}

fn wait_osd_up(cx: &Ctx, uuid: &str, limit: Duration) -> Result<u64> {
    let t = Instant::now();
    loop {
        if let Ok(list) = osd_entries(cx) {
            if let Some(o) = list.iter().find(|o| o.uuid == uuid && o.up) {
                return Ok(o.id);
            }
        }
        if t.elapsed() > limit {
            return Err(format!(
                "the OSD (uuid {uuid}) did not come up in {limit:?}"
            ));
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OsdIdentity {
    uuid: String,
    key: String,
}

fn osd_identity(cx: &Ctx) -> Result<OsdIdentity> {
    let p = cx.path(OSD_IDENTITY);
    let have: OsdIdentity = read_json(&p);
    if have.uuid.len() == 36 && !have.key.is_empty() {
        return Ok(have);
    }
    let me = OsdIdentity {
        uuid: uuid()?,
        key: gen_key(cx)?,
    };
    let text = serde_json::to_vec(&me).map_err(|e| format!("encoding {OSD_IDENTITY}: {e}"))?;
    write_secret(&p, &text)?;
    Ok(me)
}

fn osd_dir(id: u64) -> String {
    format!("/var/lib/ceph/osd/ceph-{id}")
}

/// Written into the OSD directory once `ceph-osd --mkfs` has finished.
const OSD_MADE: &str = "hc-made";

/// The OSD unit: the data disk is handed to `ceph` at every start (device
/// nodes are made afresh at boot, owned by root).
fn osd_unit(cx: &Ctx, id: u64, dev: &str) -> Result<()> {
    let unit = format!("ceph-osd@{id}");
    let dropin = cx.path(&format!(
        "/etc/systemd/system/{unit}.service.d/hc-device.conf"
    ));
    let text = format!(
        "# Written by hc-firstboot: the OSD's data disk ({dev}) belongs to ceph.\n[Service]\nExecStartPre=/bin/chown ceph:ceph {dev}\n"
    );
    if std::fs::read_to_string(&dropin).ok().as_deref() != Some(text.as_str()) {
        if let Some(d) = dropin.parent() {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        write_atomic(&dropin, text.as_bytes())?;
        cx.runner.run(&["systemctl", "daemon-reload"])?;
    }
    enable_now(cx, &unit)
}

/// Makes the OSD `id` on `dev` (bluestore on the whole disk, no LVM):
/// keyring, `block` link, `ceph-osd --mkfs`, then the marker.
fn mkfs_osd(cx: &Ctx, id: u64, me: &OsdIdentity, dev: &str) -> Result<()> {
    let dir = osd_dir(id);
    let full = cx.path(&dir);
    // A half-made directory (cut during mkfs) is made again.
    let _ = std::fs::remove_dir_all(&full);
    std::fs::create_dir_all(&full).map_err(|e| format!("creating {dir}: {e}"))?;
    write_secret(
        &full.join("keyring"),
        keyring(&format!("osd.{id}"), &me.key, &[]).as_bytes(),
    )?;
    std::os::unix::fs::symlink(dev, full.join("block"))
        .map_err(|e| format!("linking {dir}/block to {dev}: {e}"))?;
    chown_ceph(cx, &dir)?;
    cx.runner.run(&["chown", "ceph:ceph", dev])?;
    let id_s = id.to_string();
    cx.runner.run(&[
        "ceph-osd",
        "--cluster",
        "ceph",
        "-i",
        &id_s,
        "--mkfs",
        "--osd-objectstore",
        "bluestore",
        "--osd-uuid",
        &me.uuid,
        "--osd-data",
        &full.display().to_string(),
        "--setuser",
        "ceph",
        "--setgroup",
        "ceph",
    ])?;
    let made = full.join(OSD_MADE);
    std::fs::write(&made, b"").map_err(|e| format!("writing {}: {e}", made.display()))
}

/// This node's OSD on `storage.osd_device`: made once, found again after
/// a power cut (same uuid and key, so the same id), never on a disk that
/// holds data unless `storage.wipe` says so.
pub fn ensure_osd(cx: &Ctx, m: &Material) -> Result<Osd> {
    let Some(dev) = cx.config.storage.osd_device.clone() else {
        return Ok(Osd::None("none: storage.osd_device is not set".into()));
    };
    if !storage_node(cx) {
        return Ok(Osd::None(
            "none: this node's roles leave out storage".into(),
        ));
    }
    if !cx.path(&dev).exists() {
        return Ok(Osd::None(format!(
            "none: {dev} (storage.osd_device) does not exist on this node; plug the disk in, then run `hc-firstboot run`"
        )));
    }
    let me = osd_identity(cx)?;
    let list = osd_entries(cx)?;
    if let Some(o) = list.iter().find(|o| o.uuid == me.uuid) {
        if o.up {
            return Ok(Osd::Up(o.id));
        }
        if cx.path(&osd_dir(o.id)).join(OSD_MADE).is_file() {
            // Made to the end before: only ever started again.
            osd_unit(cx, o.id, &dev)?;
            return wait_osd_up(cx, &me.uuid, Duration::from_secs(900)).map(Osd::Up);
        }
    }
    let sigs = disk_signatures(cx, &dev)?;
    if let Some(why) = refusal(cx, &dev, &sigs, m, &me.uuid)? {
        return Ok(Osd::None(why));
    }
    if !sigs.is_empty() {
        // wipe = true, or our own half-made OSD.
        cx.runner.run(&["wipefs", "--all", "--force", &dev])?;
        cx.runner.run(&[
            "dd",
            "if=/dev/zero",
            &format!("of={dev}"),
            "bs=1M",
            "count=10",
            "conv=fsync",
        ])?;
    }
    failpoint("ceph:before-osd");
    let secret = json!({"cephx_secret": me.key}).to_string();
    let out = mon_in(
        cx,
        &json!({"prefix": "osd new", "uuid": me.uuid, "format": "json"}),
        secret.as_bytes(),
    )?;
    let id = serde_json::from_slice::<Value>(&out)
        .ok()
        .and_then(|v| v["osdid"].as_u64())
        .ok_or_else(|| {
            format!(
                "ceph osd new: unexpected output {}",
                String::from_utf8_lossy(&out)
            )
        })?;
    mkfs_osd(cx, id, &me, &dev)?;
    failpoint("ceph:after-osd");
    osd_unit(cx, id, &dev)?;
    let id = wait_osd_up(cx, &me.uuid, Duration::from_secs(900))?;
    journal(
        ids::CEPH_OSD,
        5,
        &format!("ceph: osd.{id} up on {dev}"),
        &[],
    );
    Ok(Osd::Up(id))
}

pub fn mount_unit() -> String {
    format!(
        "# Written by hc-firstboot: CephFS for the services' data.
[Unit]
Description=CephFS {FS} at {MOUNT_POINT}
Wants=network-online.target
After=network-online.target ceph.target

[Mount]
What={CLIENT}@.{FS}=/
Where={MOUNT_POINT}
Type=ceph
Options=secretfile={SECRET_FILE},noatime,_netdev
TimeoutSec=300
"
    )
}

pub fn mounted(root: &Path) -> bool {
    std::fs::read_to_string(root.join("proc/self/mountinfo")).is_ok_and(|t| {
        t.lines()
            .any(|l| l.split(' ').nth(4) == Some(MOUNT_POINT) && l.contains(" - ceph "))
    })
}

/// An MDS serves the filesystem (a mon command: no manager module needed).
fn fs_active(cx: &Ctx) -> bool {
    mon_json(cx, json!({"prefix": "fs dump"})).is_ok_and(|v| active_mds(&v))
}

pub fn active_mds(fs_dump: &serde_json::Value) -> bool {
    fs_dump["filesystems"].as_array().is_some_and(|a| {
        a.iter().any(|f| {
            f["mdsmap"]["fs_name"] == FS
                && f["mdsmap"]["info"]
                    .as_object()
                    .is_some_and(|o| o.values().any(|d| d["state"] == "up:active"))
        })
    })
}

/// Client key, secret file, mount unit; mounts when the fs can serve.
pub fn ensure_mount(cx: &Ctx, wait: Duration) -> Result<bool> {
    if !cx.path(SECRET_FILE).is_file() {
        let entity = format!("client.{CLIENT}");
        let _ = mon(
            cx,
            json!({"prefix": "fs authorize", "filesystem": FS, "entity": entity, "caps": ["/", "rw"]}),
        );
        let key = mon(cx, json!({"prefix": "auth get-key", "entity": entity}))?;
        write_secret(
            &cx.path(SECRET_FILE),
            format!("{}\n", String::from_utf8_lossy(&key).trim()).as_bytes(),
        )?;
    }
    let unit = mount_unit();
    let p = cx.path(MOUNT_UNIT);
    if std::fs::read_to_string(&p).ok().as_deref() != Some(unit.as_str()) {
        write_atomic(&p, unit.as_bytes())?;
        cx.runner.run(&["systemctl", "daemon-reload"])?;
    }
    std::fs::create_dir_all(cx.path(MOUNT_POINT))
        .map_err(|e| format!("creating {MOUNT_POINT}: {e}"))?;
    let t = Instant::now();
    loop {
        if mounted(&cx.root) {
            return Ok(true);
        }
        if fs_active(cx) {
            let _ = cx
                .runner
                .run(&["systemctl", "reset-failed", "mnt-cephfs.mount"]);
            match cx.runner.run(&["systemctl", "start", "mnt-cephfs.mount"]) {
                Ok(_) if mounted(&cx.root) => return Ok(true),
                Ok(_) => {}
                Err(e) if t.elapsed() > wait => return Err(format!("mounting CephFS: {e}")),
                Err(_) => {}
            }
        }
        if t.elapsed() > wait {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

pub struct Ceph;

fn enabled(cx: &Ctx) -> bool {
    cx.config.storage.osd_device.is_some()
}

fn founder(cx: &Ctx) -> bool {
    cx.path(FOUNDER).is_file()
}

fn swarm_manager() -> bool {
    crate::swarm::api_info(&crate::swarm::socket_path(), Duration::from_secs(60))
        .is_ok_and(|i| i.state == "active" && i.manager)
}

/// Asks members over the join channel until one hands out the cluster.
fn fetch_material(cx: &Ctx, l: &Lan, limit: Duration) -> Result<Material> {
    let t = Instant::now();
    let mut last = String::from("no member answered yet");
    loop {
        for addr in crate::cluster::member_addrs(cx, l) {
            match crate::cluster::request_ceph(cx, addr, l) {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => last = format!("{addr}: no Ceph cluster there yet"),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        if t.elapsed() > limit {
            return Err(format!(
                "no member handed out the Ceph cluster in {limit:?} ({last})"
            ));
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

impl Step for Ceph {
    fn name(&self) -> &'static str {
        "ceph"
    }

    fn observe(&self, cx: &Ctx) -> Result<Observed> {
        if !enabled(cx) {
            return Ok(Observed::Done(BTreeMap::from([(
                "ceph".into(),
                "off (storage.osd_device is not set)".into(),
            )])));
        }
        let Some(m) = Material::load(&cx.root) else {
            return Ok(Observed::Pending);
        };
        if !cx.path(CONF).is_file() || !cx.path(MOUNT_UNIT).is_file() {
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
        let name = current_hostname(cx);
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
        let l = lan(cx)?.ok_or("no LAN address")?;
        let m = if founder(cx) {
            create_cluster(cx, &l)?
        } else {
            match Material::load(&cx.root) {
                Some(m) if m.ready => m,
                _ => {
                    let m = fetch_material(cx, &l, Duration::from_secs(1800))?;
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
        if !founder(cx) && swarm_manager() {
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
        write_json(&cx.path(OSD_OUTCOME), &outcome)
    }
}

const OSD_OUTCOME: &str = "/var/lib/hc-firstboot/ceph-node.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct OsdOutcome {
    fsid: String,
    osd: String,
    mount: String,
    pools: String,
    clock: String,
}

/// The daemon's duty every little while: a swarm manager without a
/// monitor gets one (the leader promotes two workers at once), and a
/// CephFS that is not mounted (after a reboot) is mounted again.
pub fn reconcile(cx: &Ctx, manager: bool) {
    if !enabled(cx) || !cx.path(MOUNT_UNIT).is_file() {
        return; // the ceph step has not run yet
    }
    let Some(m) = Material::load(&cx.root) else {
        return;
    };
    let Ok(Some(l)) = lan(cx) else {
        return;
    };
    let name = current_hostname(cx);
    if manager && !has_mon(&cx.root, &name) {
        if let Err(e) = ensure_mon_node(cx, &m, &l) {
            eprintln!("ceph: adding a monitor on {name}: {e}");
        }
    }
    if !mounted(&cx.root) {
        if let Err(e) = ensure_mount(cx, Duration::ZERO) {
            eprintln!("ceph: mounting {MOUNT_POINT}: {e}");
        }
    }
}

/// The material a member hands to a joiner, with the monitors as the
/// cluster knows them now.
pub fn material_for_joiner(cx: &Ctx) -> Option<Material> {
    let mut m = Material::load(&cx.root)?;
    if !m.ready {
        return None;
    }
    if let Ok(v) = mon_json(cx, json!({"prefix": "mon dump"})) {
        let mons: Vec<(String, Ipv4Addr)> = v["mons"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| {
                        let name = x["name"].as_str()?.to_string();
                        let addr = x["addr"].as_str()?.split(':').next()?.parse().ok()?;
                        Some((name, addr))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !mons.is_empty() {
            m.mons = mons;
        }
    }
    Some(m)
}

/// `hc ceph WORDS... [KEY=VALUE...]`: the monitor command `WORDS` with
/// those arguments, as JSON (numbers and true/false typed), JSON output.
/// Native and quick where the Python `ceph` CLI takes seconds.
pub fn command_line(args: &[String]) -> Result<Value> {
    let mut prefix = Vec::new();
    let mut cmd = json!({"format": "json"});
    for a in args {
        match a.split_once('=') {
            Some((k, v)) => {
                cmd[k] = if let Ok(n) = v.parse::<i64>() {
                    n.into()
                } else if let Ok(b) = v.parse::<bool>() {
                    b.into()
                } else {
                    v.into()
                }
            }
            None if cmd.as_object().is_some_and(|o| o.len() > 1) => {
                return Err(format!(
                    "`{a}`: command words go before KEY=VALUE arguments"
                ))
            }
            None => prefix.push(a.as_str()),
        }
    }
    if prefix.is_empty() {
        return Err("no command: e.g. `hc ceph status` or `hc ceph osd dump`".into());
    }
    cmd["prefix"] = prefix.join(" ").into();
    Ok(cmd)
}

/// `hc status` lines (needs a readable homecloud.toml).
pub fn status(root: &Path, runner: &dyn crate::agent::Runner) -> String {
    match crate::agent::load_config(root) {
        Ok(config) => status_lines(&Ctx {
            root: root.to_path_buf(),
            runner,
            config,
        }),
        Err(_) => String::new(),
    }
}

/// `hc status` lines: health, quorum, OSDs, mount.
pub fn status_lines(cx: &Ctx) -> String {
    if !enabled(cx) {
        return "ceph: off (storage.osd_device is not set)\n".into();
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
    fn pool_size_follows_node_count() {
        assert_eq!(replication(0), (1, 1));
        assert_eq!(replication(1), (1, 1));
        assert_eq!(replication(2), (2, 1));
        assert_eq!(replication(3), (3, 2));
        assert_eq!(replication(7), (3, 2));
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
        assert!(c.contains("public_network = 10.0.0.0/24\n"));
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
    fn osd_dump_and_wipefs_output_parse() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"osds":[{"osd":0,"uuid":"u0","up":1,"in":1,"up_from":7},{"osd":1,"uuid":"u1","up":0,"in":1,"up_from":0}]}"#,
        )
        .expect("json");
        let o = parse_osd_dump(&v);
        assert_eq!(
            o,
            vec![
                OsdEntry {
                    id: 0,
                    uuid: "u0".into(),
                    up: true,
                },
                OsdEntry {
                    id: 1,
                    uuid: "u1".into(),
                    up: false,
                },
            ]
        );
        assert_eq!(mountpoints("\n/boot/efi\n/\n"), ["/boot/efi", "/"]);
        assert!(mountpoints("\n\n").is_empty());
        assert!(signatures("\n").is_empty());
        assert_eq!(signatures("ext4\n"), ["ext4"]);
        assert_eq!(signatures("dos\ndos\n"), ["dos"]);
    }

    #[test]
    fn command_lines_become_monitor_commands() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_line(&a(&[
                "osd",
                "pool",
                "get",
                "pool=homecloud_data",
                "var=size"
            ])),
            Ok(
                json!({"prefix": "osd pool get", "pool": "homecloud_data", "var": "size", "format": "json"})
            )
        );
        assert_eq!(
            command_line(&a(&["osd", "purge", "id=3", "yes_i_really_mean_it=true"])),
            Ok(
                json!({"prefix": "osd purge", "id": 3, "yes_i_really_mean_it": true, "format": "json"})
            )
        );
        assert!(command_line(&[]).is_err());
        assert!(command_line(&a(&["osd", "id=1", "dump"])).is_err());
    }

    #[test]
    fn a_bluestore_label_names_its_osd_and_cluster() {
        let label = r#"{
    "/dev/vdb": {
        "osd_uuid": "0f1e2d3c-4b5a-4978-8a9b-0c1d2e3f4a5b",
        "size": 8589934592,
        "ceph_fsid": "11111111-2222-4333-8444-555555555555",
        "kv_backend": "rocksdb",
        "magic": "ceph osd volume v026",
        "whoami": "2"
    }
}"#;
        assert_eq!(
            bluestore_label(label),
            Some((
                "0f1e2d3c-4b5a-4978-8a9b-0c1d2e3f4a5b".into(),
                "11111111-2222-4333-8444-555555555555".into()
            ))
        );
        assert_eq!(bluestore_label(""), None);
        assert_eq!(bluestore_label("{}"), None);
    }

    #[test]
    fn an_active_mds_is_found_in_fs_dump() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"filesystems":[{"mdsmap":{"fs_name":"homecloud","info":{"gid_4242":{"name":"node1","state":"up:active"}}}}],"standbys":[{"name":"node2"}]}"#,
        )
        .expect("json");
        assert!(active_mds(&v));
        let v: serde_json::Value = serde_json::from_str(
            r#"{"filesystems":[{"mdsmap":{"fs_name":"homecloud","info":{"gid_1":{"state":"up:creating"}}}}]}"#,
        )
        .expect("json");
        assert!(!active_mds(&v));
    }

    #[test]
    fn uuids_are_version_4() {
        let u = uuid().expect("uuid");
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid().expect("uuid"));
    }

    #[test]
    fn mount_unit_uses_the_secret_file() {
        let u = mount_unit();
        assert!(u.contains("What=homecloud@.homecloud=/\n"));
        assert!(u.contains("Where=/mnt/cephfs\n"));
        assert!(u.contains("secretfile=/etc/ceph/homecloud.secret"));
    }
}
