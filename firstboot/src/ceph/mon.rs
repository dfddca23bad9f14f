// SPDX-License-Identifier: Apache-2.0
//! Monitor commands (through librados), and the daemons of a monitor node:
//! monitor, manager, MDS; the founder's creation of the cluster.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::cmd::{chown_ceph, enable_now, mon, mon_json};
use super::fs::{ensure_fs, fs_set};
use super::material::{
    gen_key, mon_keyring, uuid, write_client_files, write_secret, Material, MDS_FOR_STANDBY,
    MGR_MODULES,
};
use crate::engine::{failpoint, ids, journal, Ctx, Result};
use crate::host::files::{write_atomic, PUBLIC};
use crate::host::net::Lan;
use crate::host::node::current_hostname;

pub(super) fn mon_dir(name: &str) -> String {
    format!("/var/lib/ceph/mon/ceph-{name}")
}

/// This node's monitor exists (made to the end: `done` is written last).
pub fn has_mon(root: &Path, name: &str) -> bool {
    root.join(mon_dir(name).trim_start_matches('/'))
        .join("done")
        .is_file()
}

/// A keyed daemon's directory (manager, MDS).
fn daemon_dir(kind: &str, name: &str) -> String {
    format!("/var/lib/ceph/{kind}/ceph-{name}")
}

pub fn has_mgr(root: &Path, name: &str) -> bool {
    root.join(daemon_dir("mgr", name).trim_start_matches('/'))
        .join("keyring")
        .is_file()
}

/// An active manager is in the map (it has loaded its modules).
pub(super) fn mgr_available(cx: &Ctx) -> bool {
    mon_json(cx, json!({"prefix": "mgr stat"})).is_ok_and(|v| v["available"] == true)
}

/// Makes this node's monitor: from a new monmap on the founder, from the
/// cluster's current map on a node joining a running cluster.
pub(super) fn make_mon(
    cx: &Ctx,
    m: &Material,
    name: &str,
    addr: Ipv4Addr,
    first: bool,
) -> Result<()> {
    if has_mon(&cx.root, name) {
        return enable_now(cx, "mon", name);
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
    write_atomic(&done, b"", PUBLIC)?;
    chown_ceph(cx, &dir)?;
    enable_now(cx, "mon", name)
}

/// Waits until the monitors answer with a quorum.
pub(super) fn wait_quorum(cx: &Ctx, limit: Duration) -> Result<serde_json::Value> {
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

pub(super) fn make_keyed_daemon(cx: &Ctx, kind: &str, name: &str, caps: &[&str]) -> Result<()> {
    let dir = daemon_dir(kind, name);
    let kr = format!("{dir}/keyring");
    if !cx.path(&kr).is_file() {
        let keyring = mon(
            cx,
            json!({"prefix": "auth get-or-create", "entity": format!("{kind}.{name}"), "caps": caps}),
        )?;
        write_secret(&cx.path(&kr), &keyring)?;
        chown_ceph(cx, &dir)?;
    }
    enable_now(cx, kind, name)
}

/// The manager's module directory (MGR_MODULES): links to Debian's modules,
/// the always-on ones and iostat only (the manager loads every module it
/// finds, each in its own Python sub-interpreter: about 20 s apiece on an
/// emulated or small board, and memory), plus the bcrypt stand-in.
pub(super) const MGR_SOURCE: &str = "/usr/share/ceph/mgr";
pub(super) const MGR_KEEP: &[&str] = &[
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
pub(super) const BCRYPT_STANDIN: &str = "/usr/lib/hc-image/ceph-mgr/bcrypt.py";

pub(super) fn mgr_modules(cx: &Ctx) -> Result<()> {
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

pub(super) fn make_mgr(cx: &Ctx, name: &str) -> Result<()> {
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

pub(super) fn make_mds(cx: &Ctx, name: &str) -> Result<()> {
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

pub(super) fn mds_count(cx: &Ctx) -> usize {
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
    let name = current_hostname(&cx.root);
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
        enable_now(cx, "mon", &name)?;
    }
    // A standby manager loads the same Python modules as the active one;
    // three loading at once starved the founder's for 20 minutes under
    // emulation (issue 18). A joiner's waits for an active one (the
    // daemon's duty makes it later).
    if has_mgr(&cx.root, &name) || mgr_available(cx) {
        make_mgr(cx, &name)?;
    }
    // Every monitor node runs an MDS (one active, the others standby): a
    // count-based choice raced when two nodes were promoted at once.
    make_mds(cx, &name)?;
    if mds_count(cx) >= MDS_FOR_STANDBY {
        let _ = fs_set(cx, "standby_count_wanted", "1");
    }
    Ok(())
}

/// The founder's part: fsid, keys, first monitor, manager, MDS, pools, fs.
pub(super) fn create_cluster(cx: &Ctx, l: &Lan) -> Result<Material> {
    let name = current_hostname(&cx.root);
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
